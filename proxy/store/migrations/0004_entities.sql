-- modgate 0004: a module's entities (API-only mode, EM-33): what `modgate routes apply` writes
-- from a manifest's `entities:`, one row per entity, its EntityConfig as JSON
-- (proxy/routing/entities.py `as_json()`). Gateways compile the REST routes from these rows;
-- the routes themselves are never stored.
--
-- Invalidation is the routes' contract (0001): a change sends 'routes:<module_id>', a TRUNCATE
-- sends 'all', so every gateway recompiles the module's table with its new entities.

CREATE TABLE IF NOT EXISTS module_entities (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  module_id UUID NOT NULL REFERENCES modgate_modules(id) ON DELETE CASCADE ON UPDATE CASCADE,
  name TEXT NOT NULL,
  config JSONB NOT NULL,
  created_at TIMESTAMPTZ DEFAULT NOW(),
  updated_at TIMESTAMPTZ DEFAULT NOW(),
  UNIQUE (module_id, name)
);

DROP TRIGGER IF EXISTS modgate_entities_notify ON module_entities;
CREATE TRIGGER modgate_entities_notify
  AFTER INSERT OR UPDATE OR DELETE ON module_entities
  FOR EACH ROW EXECUTE FUNCTION modgate_notify_routes();

DROP TRIGGER IF EXISTS modgate_entities_truncate_notify ON module_entities;
CREATE TRIGGER modgate_entities_truncate_notify
  AFTER TRUNCATE ON module_entities
  FOR EACH STATEMENT EXECUTE FUNCTION modgate_notify_all();
