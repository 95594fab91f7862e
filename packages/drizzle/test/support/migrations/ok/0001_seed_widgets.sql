INSERT INTO "widgets" ("name") VALUES ('a'), ('b');
--> statement-breakpoint
SELECT pg_sleep(0.2);
--> statement-breakpoint
ALTER TABLE "widgets" ADD COLUMN "colour" text;
--> statement-breakpoint
INSERT INTO "migration_steps" VALUES ('seed', pg_backend_pid(), txid_current());
