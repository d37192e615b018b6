-- The auditors' event log filters by actor and time (BRIN: cheap to keep up); position orders the pages.
CREATE INDEX IF NOT EXISTS events_actor ON events ((metadata->>'actor'), position);
CREATE INDEX IF NOT EXISTS events_recorded_at ON events USING brin (recorded_at);
