"""`charter bench append`: how fast commands become durable events, next to two baselines from the same run.

Three phases run one after the other on ONE PostgreSQL server (CHARTER_DATABASE_URL's, or an embedded one
started for the run), in a fresh database `charter_bench_<random>` that is dropped at the end. Each phase
runs `--clients` concurrent clients for a short warm-up, then is measured for `--seconds`:

(a) ceiling        one-row INSERT transactions into a plain table: pgbench with a custom script, or an
                   asyncpg loop when no pgbench binary is found. Rows/s = transactions/s.
(b) eventsourcing  eventsourcing 9.5's stock PostgreSQL application recorder (psycopg 3 pool, schema
                   `es_stock`): threads each saving a new one-event aggregate. Events/s.
(c) charter        the full application: asyncio tasks each executing `InstallPlugin` of a new plugin
                   (load stream, check dependencies, append through the group-committing event store).
                   Events/s = commands/s (one event each), plus commands per commit transaction.

Targets: Charter >= 1.0x the ceiling and >= 10x the stock recorder. The report is printed and written to
`<report>/append-<timestamp>.json` and `.md`.

Charter's Settings for the run can be varied through the usual CHARTER_WRITERS, CHARTER_MAX_BATCH and
CHARTER_POOL_SIZE environment variables; the values used are part of the report.
"""
