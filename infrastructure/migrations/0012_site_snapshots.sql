-- Snapshots of a site's stream folded for compliance reports (application/sites/report_state.py,
-- infrastructure/sites/snapshots.py): the Site aggregate and the provenance of its extensions at every
-- `report_snapshot_every`-th version, so an as-of report replays only the events after the latest
-- snapshot that its point includes. Derived data: a row may be deleted at any time (it is taken again
-- by the next report that replays past it); rows of another `state_version` than the code's are ignored.
CREATE TABLE site_snapshots (
    stream_id       text        NOT NULL,
    state_version   integer     NOT NULL,   -- the shape of `state` (report_state.STATE_VERSION)
    stream_version  integer     NOT NULL,   -- the last event folded
    position        bigint      NOT NULL,   -- the highest global position folded
    recorded_at     timestamptz NOT NULL,   -- the latest recorded time folded
    hash            bytea       NOT NULL,   -- the hash of the event at stream_version (checked on use)
    state           bytea       NOT NULL,   -- msgspec JSON of the folded state
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, state_version, stream_version)
);
