"""`charter bench rebuild`: how fast the read models replay the log, next to the raw-scan floor measured
in the same run, and how far the live projectors lag behind under append load.

One fresh database `charter_bench_<random>` on ONE PostgreSQL server (CHARTER_DATABASE_URL's, or an
embedded one), dropped at the end, filled with `--events` mixed events (ops/bench/rebuild/fill.py:
plugin installs, lifecycle events on existing plugins, role grants and revokes). Then, one after the
other on the same log:

(a) raw scan    the floor: the whole log read in global order with asyncpg, keyset pages of
                10,000 rows, jsonb decoded by msgspec, nothing built from the rows.
(b) rebuild X   `charter projections rebuild X` for each projection alone (fresh build, chunks of
                CHARTER_REBUILD_CHUNK events, swapped in at the end).
(c) rebuild all every projection in one pass over the log.
(d) live lag    `charter bench append`'s Charter phase (`--clients` tasks installing plugins for
                `--seconds`) with the projectors running beside it; lag p50/p95/p99 per projection.

Each replay phase runs `--rounds` times (default 2) and its best round counts: on a machine shared
with other work, a round slowed down by it says nothing about the code.

Targets: every rebuild >= 0.4x the raw scan's events/s; live lag p99 <= 1 s. The report is printed and
written to `<report>/rebuild-<timestamp>.json` and `.md`.
"""
