-- modgate 0005: API consumers (API-only mode, EM-33 task 1): the seed's module_api_consumers,
-- the request log's consumer_id, and the seed's module_api_requests as a view over that log.
--
-- What differs from the seed's table, and why:
--   * No `api_key` column. The seed keeps the consumer key there in plain text; modgate stores
--     only its SHA-256 hex digest (`key_hash`, UNIQUE) and its first 12 characters
--     (`key_prefix`), as for module API keys. A column named api_key holding a hash would only
--     mislead the platform's code that reads it as the key.
--   * `module_id` (modgate_modules, like module_entities) and `site_id` beside the seed's
--     `site_module_id`: a consumer belongs to one module and one site, and the gateway knows
--     modules and sites, not the platform's site_modules rows. site_modules and
--     module_oauth_clients are not modgate's tables, so `site_module_id` (nullable here) and
--     `oauth_client_id` have no foreign key.
--   * `allowed_ips` is the seed's INET[] (an inet holds an address or a network).
-- api_secret_hash is kept as the seed has it and unused: signed requests need the secret
-- itself (a later migration).
--
-- Invalidation (gateways LISTEN on modgate_invalidate, as for keys in 0001):
--   'consumer:<key_hash>'  a row of module_api_consumers changed
--   'all'                  module_api_consumers was truncated
-- An UPDATE that touches only the usage columns (total_requests, last_request_at) does not
-- notify: usage is written in batches and never changes an authentication decision.
--
-- On the platform's database, where the seed's plaintext table may already exist, this stops
-- with a message instead of mixing the two shapes: convert that table first
-- (docs/authentication.md, "API consumers").

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = 'module_api_consumers'
               AND column_name = 'api_key')
     AND NOT EXISTS (SELECT 1 FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = 'module_api_consumers'
               AND column_name = 'key_hash') THEN
    RAISE EXCEPTION 'module_api_consumers holds plaintext api_key values (the seed''s table): '
      'convert it to key_hash/key_prefix first, see docs/authentication.md';
  END IF;
END;
$$;

CREATE TABLE IF NOT EXISTS module_api_consumers (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  site_module_id UUID,

  module_id UUID NOT NULL REFERENCES modgate_modules(id) ON DELETE CASCADE ON UPDATE CASCADE,
  site_id UUID NOT NULL,

  name TEXT NOT NULL,
  description TEXT,

  key_prefix TEXT NOT NULL,
  key_hash TEXT NOT NULL UNIQUE,
  api_secret_hash TEXT,

  oauth_client_id UUID,

  scopes TEXT[] DEFAULT ARRAY['read'],
  allowed_endpoints TEXT[] DEFAULT ARRAY['*'],

  rate_limit_per_minute INTEGER DEFAULT 60,
  rate_limit_per_day INTEGER DEFAULT 10000,

  allowed_ips INET[],

  is_active BOOLEAN DEFAULT true,

  total_requests BIGINT DEFAULT 0,
  last_request_at TIMESTAMPTZ,

  created_at TIMESTAMPTZ DEFAULT NOW(),
  updated_at TIMESTAMPTZ DEFAULT NOW()
);

CREATE INDEX IF NOT EXISTS idx_api_consumers_site_module ON module_api_consumers(site_module_id);
CREATE INDEX IF NOT EXISTS idx_api_consumers_module_site ON module_api_consumers(module_id, site_id);

CREATE OR REPLACE FUNCTION modgate_notify_consumer() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    PERFORM pg_notify('modgate_invalidate', 'consumer:' || OLD.key_hash);
  END IF;
  IF TG_OP <> 'DELETE' THEN
    PERFORM pg_notify('modgate_invalidate', 'consumer:' || NEW.key_hash);
  END IF;
  RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS modgate_consumers_notify ON module_api_consumers;
CREATE TRIGGER modgate_consumers_notify
  AFTER INSERT OR DELETE ON module_api_consumers
  FOR EACH ROW EXECUTE FUNCTION modgate_notify_consumer();

DROP TRIGGER IF EXISTS modgate_consumers_update_notify ON module_api_consumers;
CREATE TRIGGER modgate_consumers_update_notify
  AFTER UPDATE ON module_api_consumers
  FOR EACH ROW
  WHEN ((to_jsonb(OLD) - '{total_requests,last_request_at}'::text[])
        IS DISTINCT FROM (to_jsonb(NEW) - '{total_requests,last_request_at}'::text[]))
  EXECUTE FUNCTION modgate_notify_consumer();

DROP TRIGGER IF EXISTS modgate_consumers_truncate_notify ON module_api_consumers;
CREATE TRIGGER modgate_consumers_truncate_notify
  AFTER TRUNCATE ON module_api_consumers
  FOR EACH STATEMENT EXECUTE FUNCTION modgate_notify_all();

-- ============================================================================
-- THE REQUEST LOG: which consumer called
-- ============================================================================
-- ON DELETE SET NULL, as the log's other references (0001): deleting a consumer never fails
-- because it has logs.
ALTER TABLE module_api_logs
  ADD COLUMN IF NOT EXISTS consumer_id UUID REFERENCES module_api_consumers(id) ON DELETE SET NULL;

CREATE INDEX IF NOT EXISTS idx_api_logs_consumer
  ON module_api_logs(consumer_id, created_at DESC) WHERE consumer_id IS NOT NULL;

-- The log keeps the client address as text (the seed's module_api_logs); the seed's
-- module_api_requests has INET. NULL for a value that is not an address, so one odd row can
-- never make the view fail.
CREATE OR REPLACE FUNCTION modgate_try_inet(value TEXT) RETURNS INET
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  RETURN value::inet;
EXCEPTION WHEN others THEN
  RETURN NULL;
END;
$$;

-- The seed's module_api_requests, with its columns and types: the consumers' rows of the one
-- request log. Bodies are not logged (request_body is NULL), nor are response sizes. A platform
-- database that already has a module_api_requests table keeps it.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relname = 'module_api_requests' AND n.nspname = current_schema()
                   AND c.relkind <> 'v') THEN
    CREATE OR REPLACE VIEW module_api_requests AS
    SELECT l.id,
           l.consumer_id,
           c.site_module_id,
           l.method,
           l.path,
           l.query_params,
           NULL::jsonb AS request_body,
           l.status_code,
           l.response_time_ms,
           NULL::integer AS response_size_bytes,
           modgate_try_inet(l.ip_address) AS ip_address,
           l.user_agent,
           l.error_message,
           l.created_at
    FROM module_api_logs l
    LEFT JOIN module_api_consumers c ON c.id = l.consumer_id
    WHERE l.consumer_id IS NOT NULL;
  END IF;
END;
$$;
