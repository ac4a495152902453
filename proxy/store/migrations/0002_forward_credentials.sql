-- modgate 0002: a route may ask for the caller's credentials to be forwarded.
--
-- By default the gateway strips the X-API-Key or Bearer token it authenticated the request
-- with, so a module service never sees a credential that works on other modules. A route whose
-- upstream must see it (e.g. it re-validates the token itself) sets forward_credentials.
-- A column added to the seed's table: the seed's columns are untouched, and the platform's
-- code that does not know this column keeps working (it has a default).
ALTER TABLE module_api_routes
  ADD COLUMN IF NOT EXISTS forward_credentials BOOLEAN NOT NULL DEFAULT false;
