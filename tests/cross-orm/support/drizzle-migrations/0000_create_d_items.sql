CREATE TABLE "d_items" ("id" serial PRIMARY KEY NOT NULL, "label" text NOT NULL);
