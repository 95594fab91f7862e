// What tests/readme/check.ts needs to know about the READMEs' ```ts blocks: which file a block is (when
// its first line does not say), what a reader has around it (the imports they would write, the names a
// snippet assumes), and the modules a README refers to without showing them. A block is found by a
// piece of its text (`contains`); an entry that matches no block fails the check, so this file follows
// the READMEs. Blocks without an entry are checked as they are.

export interface BlockConfig {
  /** Text that identifies the block (exactly one block of the README must contain it). */
  contains: string
  /** File name to write the block to (other blocks import it as `./name.js`). */
  file?: string
  /** Lines put before the block: the imports and declarations a reader has in their module. */
  prelude?: string
  /** Not checked, and why (e.g. a signature listing that is not code). */
  skip?: string
}

export interface ReadmeConfig {
  /** Relative to the repository root. */
  path: string
  /** Files the README's code imports but does not show. */
  support?: Record<string, string>
  blocks?: BlockConfig[]
}

const drizzleSchema = `import { relations } from 'drizzle-orm'
import { integer, pgTable, serial, text } from 'drizzle-orm/pg-core'

export const users = pgTable('users', { id: serial('id').primaryKey(), name: text('name').notNull() })
export const posts = pgTable('posts', { id: serial('id').primaryKey(), userId: integer('user_id').notNull(), title: text('title').notNull() })
export const usersRelations = relations(users, ({ many }) => ({ posts: many(posts) }))
export const postsRelations = relations(posts, ({ one }) => ({ user: one(users, { fields: [posts.userId], references: [users.id] }) }))
export const accounts = pgTable('accounts', { id: serial('id').primaryKey(), balance: integer('balance').notNull() })
export const ledger = pgTable('ledger', { id: serial('id').primaryKey(), accountId: integer('account_id').notNull(), cents: integer('cents').notNull() })
export const transfers = pgTable('transfers', { id: serial('id').primaryKey(), from: integer('from').notNull(), to: integer('to').notNull(), cents: integer('cents').notNull() })
export const audit = pgTable('audit', { id: serial('id').primaryKey(), event: text('event').notNull() })
`

export const readmes: ReadmeConfig[] = [
  { path: 'README.md' },
  {
    path: 'packages/core/README.md',
    blocks: [
      { contains: 'registry.getPool(service, orgId): Promise<pg.Pool>', skip: 'a signature listing of the Registry methods, not code' },
      {
        contains: "await placeOrder('org1')",
        prelude: [
          "import type { Registry } from '@hyperconn/core'",
          'declare const registry: Registry',
          'declare function placeOrder(orgId: string): Promise<void>',
          'declare function reserveStock(orgId: string): Promise<void>',
        ].join('\n'),
      },
    ],
  },
  {
    path: 'packages/drizzle/README.md',
    support: { 'schema.ts': drizzleSchema },
    blocks: [
      { contains: "createDrizzleAdapter(registry, { service: 'core', schema })", file: 'db.ts' },
      { contains: 'export class AccountRepository', file: 'account-repository.ts' },
      {
        contains: "new AccountRepository('org1')",
        prelude: [
          "import { getDb } from './db.js'",
          "import { AccountRepository } from './account-repository.js'",
          "import { audit, transfers } from './schema.js'",
          'declare function overdrawn(tx: unknown): Promise<boolean>',
        ].join('\n'),
      },
      {
        contains: 'DrizzleQueryError',
        prelude: ["import { getDb } from './db.js'", "import { users } from './schema.js'", 'declare const orgId: string'].join('\n'),
      },
    ],
  },
  {
    path: 'packages/kysely/README.md',
    blocks: [
      { contains: 'createKyselyAdapter<Database>(registry', file: 'db.ts' },
      { contains: ".setIsolationLevel('repeatable read')", prelude: 'declare const orgId: string' },
    ],
  },
  {
    path: 'packages/knex/README.md',
    blocks: [{ contains: "{ isolationLevel: 'repeatable read' }", prelude: 'declare const orgId: string' }],
  },
]
