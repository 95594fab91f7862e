// @hyperconn/core/adapter: the kit the ORM adapters are built from. Not for application code.
export { InstanceCache } from './adapter/instance-cache.js'
export { validateAdapterOptions } from './adapter/adapter-options.js'
export type { AdapterOptionRules } from './adapter/adapter-options.js'
export { adapterTransactionOptions } from './adapter/adapter-transaction-options.js'
export type { AdapterTransactionSettings } from './adapter/adapter-transaction-options.js'
export { bindActiveTransaction, bindTransaction, TransactionBinding } from './transactions/transaction-context.js'
export { isReadOnlySelectText, isWriteText } from './adapter/read-statement.js'
export { LazyConnection } from './adapter/lazy-connection.js'
