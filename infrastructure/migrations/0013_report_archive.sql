-- Compliance reports kept by task runs (action `reports.compliance`, infrastructure/sites/report_archive.py),
-- served per site at /api/v1/site/{site_id}/reports/archive. Each is the rendered document as it was
-- generated; `sha256` is the report's own digest (printed in it), so a kept report can be checked against
-- one generated again from the log as of the same position. A run that is retried keeps its latest.
CREATE TABLE report_archive (
    id          uuid        PRIMARY KEY,
    site_id     text        NOT NULL,
    format      text        NOT NULL,
    as_of       text        NOT NULL,   -- the point the report reflects, as the report names it
    position    bigint      NOT NULL,   -- the log position the report reflects
    sha256      text        NOT NULL,
    size        integer     NOT NULL,
    media_type  text        NOT NULL,
    content     bytea       NOT NULL,
    task_id     text,
    run_id      text        UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX report_archive_site ON report_archive (site_id, created_at DESC, id);
