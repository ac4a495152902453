-- modgate 0003: what a route does with encoded slashes (%2F, %5C) in a request path.
--
-- 'reject' (the default): 400, since upstreams disagree on whether %2F separates segments, so
-- the path the gateway authorised could name another resource upstream. 'keep': matched as part
-- of one segment and forwarded still encoded, never decoded into a separator.
ALTER TABLE module_api_routes
  ADD COLUMN IF NOT EXISTS encoded_slashes TEXT NOT NULL DEFAULT 'reject'
  CHECK (encoded_slashes IN ('reject', 'keep'));
