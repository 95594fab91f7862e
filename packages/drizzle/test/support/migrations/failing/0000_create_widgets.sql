CREATE TABLE "widgets" ("id" serial PRIMARY KEY NOT NULL, "name" text NOT NULL);
--> statement-breakpoint
CREATE TABLE "migration_steps" ("step" text PRIMARY KEY NOT NULL, "pid" integer NOT NULL, "txid" bigint NOT NULL);
--> statement-breakpoint
INSERT INTO "migration_steps" VALUES ('create', pg_backend_pid(), txid_current());
--> statement-breakpoint
SELECT pg_sleep(0.2);
