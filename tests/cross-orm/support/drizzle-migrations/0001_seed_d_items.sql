INSERT INTO "d_items" ("label") VALUES ('seeded');
