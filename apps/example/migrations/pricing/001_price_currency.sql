-- Prices get their currency (ISO 4217). The rows a store was onboarded with are in euros.
-- Runs in the store's schema: the registry set the connection's search_path to it.
ALTER TABLE prices
  ADD COLUMN currency char(3) NOT NULL DEFAULT 'EUR' CONSTRAINT prices_currency_iso4217 CHECK (currency ~ '^[A-Z]{3}$');
