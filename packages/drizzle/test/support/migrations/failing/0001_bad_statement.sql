INSERT INTO "widgets" ("name") VALUES ('a'), ('b');
--> statement-breakpoint
INSERT INTO "widgets" ("no_such_column") VALUES ('c');
--> statement-breakpoint
ALTER TABLE "widgets" ADD COLUMN "colour" text;
