import pg from 'pg'

/** The setting the registry sets to the org id on every checkout (`isolation: { rls }`), and the policy reads. */
export const REVIEWS_TENANT_SETTING = 'app.tenant_id'

/**
 * Reviews, row-level security: in the stores database, one `reviews` table holds every store's rows. A
 * policy lets a session see and write only the rows whose `tenant_id` equals its `app.tenant_id`, and
 * the column's default fills `tenant_id` in from that same setting, so the app never writes it.
 *
 * `current_setting(…, true)` is NULL when the setting is missing, which matches no row and fails the
 * NOT NULL; the CHECK keeps a session whose setting was reset to '' from writing a row for "nobody".
 *
 * Row-level security does not apply to superusers or roles with BYPASSRLS, nor (without FORCE) to the
 * table's owner: run this as the owner (a migration role), and let the app log in as another role.
 */
const SETUP = `
CREATE TABLE IF NOT EXISTS reviews (
  id         integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id  text NOT NULL DEFAULT current_setting('${REVIEWS_TENANT_SETTING}', true) CHECK (tenant_id <> ''),
  sku        text NOT NULL,
  stars      integer NOT NULL CHECK (stars BETWEEN 1 AND 5),
  body       text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS reviews_tenant_id ON reviews (tenant_id);
ALTER TABLE reviews ENABLE ROW LEVEL SECURITY;
ALTER TABLE reviews FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_rows ON reviews;
CREATE POLICY tenant_rows ON reviews
  USING (tenant_id = current_setting('${REVIEWS_TENANT_SETTING}', true))
  WITH CHECK (tenant_id = current_setting('${REVIEWS_TENANT_SETTING}', true));
`

/**
 * The table, its policy, and what the app's role may do: read and add reviews, nothing else (it is not
 * the owner, so it can neither alter the policy nor disable row-level security).
 */
export function reviewsSetupSql(appRole: string): string {
  return `${SETUP}GRANT SELECT, INSERT ON reviews TO ${pg.escapeIdentifier(appRole)};`
}

export interface SeedReview {
  sku: string
  stars: number
  body: string
}

export function reviewsFor(orgId: string): readonly SeedReview[] {
  return [
    { sku: 'house-blend', stars: 5, body: `Best coffee in town, says a regular of ${orgId}` },
    { sku: 'mug', stars: 4, body: `Sturdy ${orgId} mug` },
  ]
}

/**
 * The seed reviews of many stores in one statement. Only a role that bypasses row-level security (a
 * superuser here) can write rows for several tenants at once; the app's role writes only its tenant's.
 */
export async function seedReviews(
  exec: (sql: string, values: unknown[]) => Promise<unknown>,
  orgIds: readonly string[],
): Promise<void> {
  const rows = orgIds.flatMap((orgId) => reviewsFor(orgId).map((r) => ({ orgId, ...r })))
  await exec(
    `INSERT INTO reviews (tenant_id, sku, stars, body)
     SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::text[])`,
    [rows.map((r) => r.orgId), rows.map((r) => r.sku), rows.map((r) => r.stars), rows.map((r) => r.body)],
  )
}
