# Sourced by the benchmark comparisons (after scripts/lib/throwaway-pg.sh and throwaway_pg_start).
# Defines:
#   bench_db_create SIZE_MB   creates database `litemaas` of about SIZE_MB of plain dump: pgbench
#                             tables plus a JSONB-heavy table like LiteLLM's spend logs (no
#                             partitioned tables, so a plain `psql -f` restore works over it)

bench_db_create() {
  local half=$(($1 / 2))
  throwaway_pg_psql -d postgres -c "CREATE DATABASE litemaas"
  PGPASSWORD="$PG_PASSWORD" "$PG_BIN/pgbench" -i -q -s $((half / 10 > 0 ? half / 10 : 1)) \
    -h 127.0.0.1 -p "$PG_PORT" -U postgres litemaas >/dev/null 2>&1
  throwaway_pg_psql -d litemaas <<SQL
CREATE TABLE "LiteLLM_SpendLogs" (
  request_id text PRIMARY KEY, call_type text, api_key text, spend double precision,
  total_tokens int, prompt_tokens int, completion_tokens int,
  "startTime" timestamptz, "endTime" timestamptz, model text, metadata jsonb
);
INSERT INTO "LiteLLM_SpendLogs"
SELECT 'chatcmpl-' || md5(g::text), 'acompletion', md5((g % 900)::text) || md5((g % 901)::text),
       (g % 5500) * 0.0000025, g % 5500, g % 4000, g % 1500,
       timestamptz '2025-12-01' + g * interval '731 ms', timestamptz '2025-12-01' + g * interval '733 ms',
       (ARRAY['granite-3-8b-instruct', 'llama-scout-17b', 'mistral-small-24b', 'qwen2.5-coder-32b'])[1 + g % 4],
       jsonb_build_object('user_api_key_user_id', 'user-' || (g % 500), 'user_api_key_team_id', null,
         'requester_ip_address', '10.128.' || (g % 256) || '.' || (g * 7 % 256),
         'model_group', (ARRAY['granite', 'llama', 'mistral', 'qwen'])[1 + g % 4], 'cache_hit', g % 7 = 0,
         'usage_object', jsonb_build_object('prompt_tokens', g % 4000, 'completion_tokens', g % 1500),
         'headers', jsonb_build_object('x-request-id', md5((g * 3)::text), 'user-agent', 'litellm/1.' || (g % 80)))
FROM generate_series(1, ($half * 1024 * 1024 / 560)::int) AS g;
SQL
}
