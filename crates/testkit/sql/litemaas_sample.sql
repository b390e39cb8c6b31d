-- A LiteMaaS-like database with every kind of object a dump must carry faithfully.

CREATE TABLE users (
    id          bigserial PRIMARY KEY,
    email       text NOT NULL UNIQUE,
    display     text,
    roles       text[] NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT '2025-01-01 00:00:00+00',
    updated_at  timestamptz
);

CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    key_hash    bytea NOT NULL,
    budget      numeric(20, 6) NOT NULL DEFAULT 0,
    models      jsonb NOT NULL DEFAULT '[]',
    expires_at  timestamptz
);

CREATE TABLE spend_logs (
    request_id  text NOT NULL,
    created_at  timestamptz NOT NULL,
    model       text NOT NULL,
    tokens      integer[] NOT NULL,
    spend       numeric NOT NULL,
    metadata    jsonb,
    PRIMARY KEY (request_id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE spend_logs_2025 PARTITION OF spend_logs FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE spend_logs_2026 PARTITION OF spend_logs FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');

CREATE SEQUENCE invoice_seq START 1000 INCREMENT 7;

CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := '2025-06-01 12:00:00+00';
    RETURN NEW;
END $$;
CREATE TRIGGER users_touch BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE VIEW user_spend AS
    SELECT u.email, sum(s.spend) AS total
    FROM users u JOIN api_keys k ON k.user_id = u.id
    JOIN spend_logs s ON s.metadata->>'key' = k.id::text
    GROUP BY u.email;

INSERT INTO users (email, display, roles) VALUES
    ('admin@example.com', 'Admin ✓', '{admin,user}'),
    ('ünïcødé@example.com', E'tab\there, quote '' and "double", newline\nend', '{user}'),
    ('emoji@example.com', '🚀 Ракета 火箭 ロケット', '{}');
UPDATE users SET display = display || '!' WHERE email = 'admin@example.com';

INSERT INTO api_keys (id, user_id, key_hash, budget, models, expires_at) VALUES
    ('00000000-0000-0000-0000-000000000001', 1, '\x00ff10deadbeef'::bytea, 12345.678901,
     '["granite-3-8b", {"name": "llama-scout-17b", "ctx": 400000}]', '2026-12-31 23:59:59.999999+00'),
    ('00000000-0000-0000-0000-000000000002', 2, decode(repeat('ab', 1000), 'hex'), 0.000001, '[]', NULL);

INSERT INTO spend_logs
SELECT 'req-' || g, timestamptz '2025-11-30 00:00:00+00' + g * interval '1 hour', 'granite-3-8b',
       ARRAY[g, g * 2, g * 3], g * 0.0001,
       jsonb_build_object('key', '00000000-0000-0000-0000-000000000001', 'n', g, 'nested', jsonb_build_object('a', ARRAY[1,2]))
FROM generate_series(1, 500) AS g;

SELECT nextval('invoice_seq'), nextval('invoice_seq');
