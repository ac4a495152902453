-- modgate 0001: the seed's gateway tables, modgate's module table, invalidation triggers.
--
-- Strategy: every statement is idempotent (IF NOT EXISTS, CREATE OR REPLACE, DROP ... IF
-- EXISTS), so this also runs on the platform's database, where the seed's migration already
-- created the tables. Columns, types, defaults and CHECKs are the seed's, verbatim; what
-- differs from the seed is listed here:
--   * no foreign keys to platform tables modgate does not own (sites, agencies, auth.users);
--   * module_api_logs' foreign keys are ON DELETE SET NULL, so deleting a route or a key never
--     fails because it has logs (an existing platform table keeps its own constraints);
--   * no idx_api_logs_cleanup (see below) and no module_rate_limits (rate limits live in Redis);
--   * modgate_modules and the NOTIFY triggers are modgate's own.
-- migrate.py runs this file in one transaction.

-- ============================================================================
-- MODULE API KEYS
-- ============================================================================

CREATE TABLE IF NOT EXISTS module_api_keys (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),

  module_id UUID NOT NULL,
  site_id UUID NOT NULL,
  agency_id UUID NOT NULL,

  key_prefix TEXT NOT NULL,
  key_hash TEXT NOT NULL,
  name TEXT NOT NULL,

  scopes TEXT[] DEFAULT '{}',

  rate_limit_per_minute INTEGER DEFAULT 60,
  rate_limit_per_day INTEGER DEFAULT 10000,

  allowed_ips TEXT[] DEFAULT '{}',
  allowed_origins TEXT[] DEFAULT '{}',

  is_active BOOLEAN DEFAULT true,
  expires_at TIMESTAMPTZ,

  last_used_at TIMESTAMPTZ,
  request_count INTEGER DEFAULT 0,

  created_by UUID,
  created_at TIMESTAMPTZ DEFAULT NOW(),
  revoked_at TIMESTAMPTZ,
  revoked_by UUID
);

-- Not UNIQUE, and partial: exactly the seed's index, which the platform's database has.
CREATE INDEX IF NOT EXISTS idx_api_keys_hash ON module_api_keys(key_hash) WHERE is_active = true;
CREATE INDEX IF NOT EXISTS idx_api_keys_prefix ON module_api_keys(key_prefix);
CREATE INDEX IF NOT EXISTS idx_api_keys_module_site ON module_api_keys(module_id, site_id);

-- ============================================================================
-- MODULE API ROUTES
-- ============================================================================

CREATE TABLE IF NOT EXISTS module_api_routes (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),

  module_id UUID NOT NULL,

  path TEXT NOT NULL,
  method TEXT NOT NULL CHECK (method IN ('GET', 'POST', 'PUT', 'PATCH', 'DELETE')),

  handler_type TEXT NOT NULL DEFAULT 'function' CHECK (handler_type IN ('function', 'proxy', 'static')),
  handler_code TEXT,
  handler_url TEXT,

  requires_auth BOOLEAN DEFAULT true,
  required_scopes TEXT[] DEFAULT '{}',

  rate_limit_per_minute INTEGER,

  cache_ttl_seconds INTEGER DEFAULT 0,

  summary TEXT,
  description TEXT,
  request_schema JSONB,
  response_schema JSONB,

  is_active BOOLEAN DEFAULT true,

  created_at TIMESTAMPTZ DEFAULT NOW(),
  updated_at TIMESTAMPTZ DEFAULT NOW(),

  UNIQUE(module_id, path, method)
);

CREATE INDEX IF NOT EXISTS idx_api_routes_module ON module_api_routes(module_id) WHERE is_active = true;
CREATE INDEX IF NOT EXISTS idx_api_routes_path ON module_api_routes(module_id, path, method);

-- ============================================================================
-- API REQUEST LOGS
-- ============================================================================

CREATE TABLE IF NOT EXISTS module_api_logs (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),

  module_id UUID NOT NULL,
  site_id UUID,
  route_id UUID REFERENCES module_api_routes(id) ON DELETE SET NULL,

  method TEXT NOT NULL,
  path TEXT NOT NULL,
  query_params JSONB,

  auth_type TEXT,
  api_key_id UUID REFERENCES module_api_keys(id) ON DELETE SET NULL,
  user_id UUID,

  status_code INTEGER,
  response_time_ms INTEGER,
  error_message TEXT,

  ip_address TEXT,
  user_agent TEXT,

  created_at TIMESTAMPTZ DEFAULT NOW()
);

CREATE INDEX IF NOT EXISTS idx_api_logs_module ON module_api_logs(module_id, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_api_logs_date ON module_api_logs(created_at DESC);

-- The seed's idx_api_logs_cleanup (WHERE created_at < NOW() - INTERVAL '30 days') is left out:
-- Postgres rejects it, because functions in an index predicate must be IMMUTABLE and NOW() is
-- only STABLE. Retention is a DELETE ... WHERE created_at < NOW() - INTERVAL '30 days', which
-- idx_api_logs_date already serves.

-- ============================================================================
-- MODGATE MODULES: a module's URL alias and default upstream
-- ============================================================================

-- name is DEFERRABLE INITIALLY IMMEDIATE so uniqueness is checked at the end of each statement
-- (the SQL standard's rule) rather than row by row: one multi-row upsert can then swap two
-- modules' names. It is never an ON CONFLICT arbiter (upserts conflict on id).
CREATE TABLE IF NOT EXISTS modgate_modules (
  id UUID PRIMARY KEY,
  name TEXT UNIQUE DEFERRABLE INITIALLY IMMEDIATE,
  upstream TEXT,
  created_at TIMESTAMPTZ DEFAULT NOW(),
  updated_at TIMESTAMPTZ DEFAULT NOW()
);

-- ============================================================================
-- INVALIDATION: NOTIFY modgate_invalidate
-- ============================================================================
-- Contract (gateways LISTEN and rely on it; any writer, even plain SQL, invalidates):
--   'routes:<module_id>'  a row of module_api_routes or modgate_modules changed
--   'key:<key_hash>'      a row of module_api_keys changed
--   'all'                 one of those three tables was truncated
-- An UPDATE that moves a row to another module id or key hash notifies both the old and the new.
-- Postgres sends notifications at commit and folds identical ones within a transaction, so a
-- bulk change to one module's routes costs one 'routes:<id>'.

CREATE OR REPLACE FUNCTION modgate_notify_routes() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    PERFORM pg_notify('modgate_invalidate', 'routes:' || OLD.module_id::text);
  END IF;
  IF TG_OP <> 'DELETE' THEN
    -- Folded into the notification above when the module id did not change.
    PERFORM pg_notify('modgate_invalidate', 'routes:' || NEW.module_id::text);
  END IF;
  RETURN NULL;
END;
$$;

-- modgate_modules names its module id `id`, not `module_id`, hence a function of its own.
CREATE OR REPLACE FUNCTION modgate_notify_module() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    PERFORM pg_notify('modgate_invalidate', 'routes:' || OLD.id::text);
  END IF;
  IF TG_OP <> 'DELETE' THEN
    PERFORM pg_notify('modgate_invalidate', 'routes:' || NEW.id::text);
  END IF;
  RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION modgate_notify_key() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    PERFORM pg_notify('modgate_invalidate', 'key:' || OLD.key_hash);
  END IF;
  IF TG_OP <> 'DELETE' THEN
    PERFORM pg_notify('modgate_invalidate', 'key:' || NEW.key_hash);
  END IF;
  RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION modgate_notify_all() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('modgate_invalidate', 'all');
  RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS modgate_routes_notify ON module_api_routes;
CREATE TRIGGER modgate_routes_notify
  AFTER INSERT OR UPDATE OR DELETE ON module_api_routes
  FOR EACH ROW EXECUTE FUNCTION modgate_notify_routes();

DROP TRIGGER IF EXISTS modgate_modules_notify ON modgate_modules;
CREATE TRIGGER modgate_modules_notify
  AFTER INSERT OR UPDATE OR DELETE ON modgate_modules
  FOR EACH ROW EXECUTE FUNCTION modgate_notify_module();

DROP TRIGGER IF EXISTS modgate_keys_notify ON module_api_keys;
CREATE TRIGGER modgate_keys_notify
  AFTER INSERT OR DELETE ON module_api_keys
  FOR EACH ROW EXECUTE FUNCTION modgate_notify_key();

-- Usage bookkeeping rewrites last_used_at and request_count of every used key in batches; those
-- columns never change an authentication decision, so an UPDATE that touches only them does
-- not notify (otherwise each batch would empty every gateway's key cache).
DROP TRIGGER IF EXISTS modgate_keys_update_notify ON module_api_keys;
CREATE TRIGGER modgate_keys_update_notify
  AFTER UPDATE ON module_api_keys
  FOR EACH ROW
  WHEN ((to_jsonb(OLD) - '{last_used_at,request_count}'::text[])
        IS DISTINCT FROM (to_jsonb(NEW) - '{last_used_at,request_count}'::text[]))
  EXECUTE FUNCTION modgate_notify_key();

DROP TRIGGER IF EXISTS modgate_routes_truncate_notify ON module_api_routes;
CREATE TRIGGER modgate_routes_truncate_notify
  AFTER TRUNCATE ON module_api_routes
  FOR EACH STATEMENT EXECUTE FUNCTION modgate_notify_all();

DROP TRIGGER IF EXISTS modgate_modules_truncate_notify ON modgate_modules;
CREATE TRIGGER modgate_modules_truncate_notify
  AFTER TRUNCATE ON modgate_modules
  FOR EACH STATEMENT EXECUTE FUNCTION modgate_notify_all();

DROP TRIGGER IF EXISTS modgate_keys_truncate_notify ON module_api_keys;
CREATE TRIGGER modgate_keys_truncate_notify
  AFTER TRUNCATE ON module_api_keys
  FOR EACH STATEMENT EXECUTE FUNCTION modgate_notify_all();
