/**
 * Domain errors of the shop. They carry a stable `code` so the HTTP layer maps them by type, never by
 * message text, and they are thrown inside the order transaction so that throwing one rolls it back.
 */
export class ShopError extends Error {
  readonly code: 'INSUFFICIENT_STOCK' | 'UNKNOWN_PRODUCT'

  constructor(code: ShopError['code'], message: string) {
    super(message)
    this.code = code
  }

  override get name(): string {
    return this.constructor.name
  }
}

/** The conditional stock update matched no row: fewer items on hand than requested. */
export class InsufficientStockError extends ShopError {
  readonly sku: string
  readonly requested: number
  readonly available: number

  constructor(sku: string, requested: number, available: number) {
    super('INSUFFICIENT_STOCK', `Insufficient stock for "${sku}": requested ${requested}, available ${available}.`)
    this.sku = sku
    this.requested = requested
    this.available = available
  }
}

/** The tenant's catalogue has no such SKU. */
export class UnknownProductError extends ShopError {
  readonly sku: string

  constructor(sku: string) {
    super('UNKNOWN_PRODUCT', `Unknown product "${sku}" in this tenant's catalogue.`)
    this.sku = sku
  }
}

export function isShopError(error: unknown): error is ShopError {
  return error instanceof ShopError
}
