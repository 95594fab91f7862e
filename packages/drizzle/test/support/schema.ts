import { relations } from 'drizzle-orm'
import { integer, pgTable, serial, text } from 'drizzle-orm/pg-core'
import type pg from 'pg'

export const users = pgTable('users', {
  id: serial('id').primaryKey(),
  name: text('name').notNull().unique(),
})

export const posts = pgTable('posts', {
  id: serial('id').primaryKey(),
  authorId: integer('author_id')
    .notNull()
    .references(() => users.id),
  title: text('title').notNull(),
})

export const usersRelations = relations(users, ({ many }) => ({ posts: many(posts) }))
export const postsRelations = relations(posts, ({ one }) => ({
  author: one(users, { fields: [posts.authorId], references: [users.id] }),
}))

export const schema = { users, posts, usersRelations, postsRelations }

export const CREATE_TABLES = `
  CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL UNIQUE);
  CREATE TABLE posts (id serial PRIMARY KEY, author_id int NOT NULL REFERENCES users (id), title text NOT NULL);
`

export { connectClient as adminClient } from '@hyperconn/testkit'

export async function userNames(client: pg.Client): Promise<string[]> {
  const { rows } = await client.query<{ name: string }>('SELECT name FROM users ORDER BY id')
  return rows.map((r) => r.name)
}

/** Drizzle 0.45 wraps every error a query rejects with in DrizzleQueryError; the original is its cause. */
export async function rejection(promise: PromiseLike<unknown>): Promise<unknown> {
  try {
    await promise
  } catch (error) {
    return error
  }
  throw new Error('expected the promise to reject')
}
