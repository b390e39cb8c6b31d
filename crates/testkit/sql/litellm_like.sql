-- A LiteLLM-like database (the proxy's Prisma schema, abridged): quoted mixed-case names, text
-- arrays, jsonb, Prisma's migrations table, unique and plain indexes, foreign keys, and a
-- spend-log table big enough to be loaded in several pieces.
CREATE TABLE "_prisma_migrations" (
    "id" varchar(36) PRIMARY KEY,
    "checksum" varchar(64) NOT NULL,
    "finished_at" timestamptz,
    "migration_name" varchar(255) NOT NULL,
    "logs" text,
    "rolled_back_at" timestamptz,
    "started_at" timestamptz NOT NULL DEFAULT now(),
    "applied_steps_count" integer NOT NULL DEFAULT 0
);
CREATE TABLE "LiteLLM_BudgetTable" (
    "budget_id" text PRIMARY KEY,
    "max_budget" double precision,
    "soft_budget" double precision,
    "max_parallel_requests" integer,
    "tpm_limit" bigint,
    "rpm_limit" bigint,
    "model_max_budget" jsonb,
    "budget_duration" text,
    "budget_reset_at" timestamp(3),
    "created_at" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "created_by" text NOT NULL,
    "updated_at" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_by" text NOT NULL
);
CREATE TABLE "LiteLLM_TeamTable" (
    "team_id" text PRIMARY KEY,
    "team_alias" text,
    "organization_id" text,
    "admins" text[],
    "members" text[],
    "members_with_roles" jsonb NOT NULL DEFAULT '{}',
    "metadata" jsonb NOT NULL DEFAULT '{}',
    "max_budget" double precision,
    "spend" double precision NOT NULL DEFAULT 0.0,
    "models" text[],
    "budget_id" text REFERENCES "LiteLLM_BudgetTable" ("budget_id") ON UPDATE CASCADE ON DELETE SET NULL,
    "blocked" boolean NOT NULL DEFAULT false,
    "created_at" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE "LiteLLM_UserTable" (
    "user_id" text PRIMARY KEY,
    "user_alias" text,
    "team_id" text,
    "user_email" text,
    "user_role" text,
    "teams" text[] DEFAULT ARRAY[]::text[],
    "max_budget" double precision,
    "spend" double precision NOT NULL DEFAULT 0.0,
    "models" text[],
    "metadata" jsonb DEFAULT '{}'
);
CREATE TABLE "LiteLLM_VerificationToken" (
    "token" text PRIMARY KEY,
    "key_name" text,
    "key_alias" text,
    "spend" double precision NOT NULL DEFAULT 0.0,
    "expires" timestamp(3),
    "models" text[],
    "aliases" jsonb NOT NULL DEFAULT '{}',
    "config" jsonb NOT NULL DEFAULT '{}',
    "user_id" text,
    "team_id" text,
    "permissions" jsonb NOT NULL DEFAULT '{}',
    "metadata" jsonb NOT NULL DEFAULT '{}',
    "budget_id" text REFERENCES "LiteLLM_BudgetTable" ("budget_id") ON UPDATE CASCADE ON DELETE SET NULL,
    "created_at" timestamp(3) DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE "LiteLLM_SpendLogs" (
    "request_id" text PRIMARY KEY,
    "call_type" text NOT NULL,
    "api_key" text NOT NULL DEFAULT '',
    "spend" double precision NOT NULL DEFAULT 0.0,
    "total_tokens" integer NOT NULL DEFAULT 0,
    "prompt_tokens" integer NOT NULL DEFAULT 0,
    "completion_tokens" integer NOT NULL DEFAULT 0,
    "startTime" timestamp(3) NOT NULL,
    "endTime" timestamp(3) NOT NULL,
    "model" text NOT NULL DEFAULT '',
    "user" text DEFAULT '',
    "metadata" jsonb DEFAULT '{}',
    "cache_hit" text DEFAULT '',
    "request_tags" jsonb DEFAULT '[]',
    "team_id" text,
    "messages" jsonb DEFAULT '{}',
    "response" jsonb DEFAULT '{}'
);
CREATE INDEX "LiteLLM_SpendLogs_startTime_idx" ON "LiteLLM_SpendLogs" ("startTime");
CREATE INDEX "LiteLLM_SpendLogs_end_user_idx" ON "LiteLLM_SpendLogs" ("user");
CREATE UNIQUE INDEX "LiteLLM_TeamTable_team_alias_key" ON "LiteLLM_TeamTable" ("team_alias");
CREATE TABLE "LiteLLM_DailyUserSpend" (
    "id" text PRIMARY KEY,
    "user_id" text NOT NULL,
    "date" text NOT NULL,
    "api_key" text NOT NULL,
    "model" text NOT NULL,
    "spend" double precision NOT NULL DEFAULT 0.0,
    "api_requests" bigint NOT NULL DEFAULT 0,
    UNIQUE ("user_id", "date", "api_key", "model")
);

INSERT INTO "_prisma_migrations" ("id", "checksum", "finished_at", "migration_name", "applied_steps_count")
SELECT 'm-' || g, md5(g::text), now(), '2025' || lpad(g::text, 4, '0') || '_migration', 1 FROM generate_series(1, 40) g;
INSERT INTO "LiteLLM_BudgetTable" ("budget_id", "max_budget", "created_by", "updated_by", "model_max_budget")
VALUES ('b-team', 1000, 'admin', 'admin', '{"granite-3-8b": {"max_budget": 10}}'), ('b-key', 5.5, 'admin', 'admin', NULL);
INSERT INTO "LiteLLM_TeamTable" ("team_id", "team_alias", "admins", "members", "models", "budget_id", "metadata")
VALUES ('t1', 'platform', '{alice}', '{alice,bob}', '{granite-3-8b,"llama scout"}', 'b-team', '{"cost_center": "42"}'),
       ('t2', NULL, '{}', '{}', NULL, NULL, '{}');
INSERT INTO "LiteLLM_UserTable" ("user_id", "user_email", "user_role", "teams", "spend")
SELECT 'user-' || g, 'user' || g || '@example.com', 'internal_user', ARRAY['t1'], g * 0.01 FROM generate_series(1, 300) g;
INSERT INTO "LiteLLM_VerificationToken" ("token", "key_alias", "user_id", "team_id", "models", "budget_id", "metadata")
SELECT md5('key' || g), 'key-' || g, 'user-' || (1 + g % 300), 't1', ARRAY['granite-3-8b'], CASE WHEN g % 2 = 0 THEN 'b-key' END,
       jsonb_build_object('tags', jsonb_build_array('a', g)) FROM generate_series(1, 500) g;
INSERT INTO "LiteLLM_SpendLogs" ("request_id", "call_type", "api_key", "spend", "total_tokens", "prompt_tokens",
       "completion_tokens", "startTime", "endTime", "model", "user", "metadata", "team_id", "messages")
SELECT 'chatcmpl-' || md5(g::text), 'acompletion', md5('key' || (g % 500)), g * 0.0000025, g % 5000, g % 4000, g % 1000,
       timestamp '2025-12-01' + g * interval '1 second', timestamp '2025-12-01' + g * interval '1 second' + interval '850 ms',
       (ARRAY['granite-3-8b', 'llama-scout-17b', 'mistral-small-24b'])[1 + g % 3], 'user-' || (g % 300),
       jsonb_build_object('user_api_key_user_id', 'user-' || (g % 300), 'requester_ip_address', '10.128.0.' || (g % 250),
                          'usage_object', jsonb_build_object('prompt_tokens', g % 4000)),
       't1', jsonb_build_array(jsonb_build_object('role', 'user', 'content', E'Hello\n\t"quoted" \\ ünïcødé ' || g))
FROM generate_series(1, 12000) g;
INSERT INTO "LiteLLM_DailyUserSpend" ("id", "user_id", "date", "api_key", "model", "spend", "api_requests")
SELECT 'd-' || g, 'user-' || (g % 300), '2025-12-' || lpad((1 + g % 28)::text, 2, '0'), md5('key' || (g % 500)), 'granite-3-8b', g * 0.1, g
FROM generate_series(1, 2000) g;
