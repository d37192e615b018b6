"""`charter bench access-cache`: what one refresh of a process's access cache costs, with a few users and
with many, in one run.

For each size (10 users and 20 grants; `--users` users, default 100,000, and twice as many grants), on ONE
PostgreSQL server (CHARTER_DATABASE_URL's, or an embedded one), in a fresh database dropped at the end:

(1) seed     the built-in roles and one real user through the application layer (events), projected into
             the identity read model, then the filler users and their grants written straight into the
             read model (as their projection would have): the refresh reads the read model once, then the
             log, so where the filler came from does not matter to what is measured.
(2) load     the first refresh of a new `Authority`: the whole read model read at its projection's cursor
             (what every refresh cost, each second, before the cache followed the log).
(3) idle     50 refreshes with nothing committed in between.
(4) change   refreshes each after one access event (a grant, then its revocation, of the real user), with
             a check that the cache holds the change.

Target: a refresh (idle, and after a change) costs the same with many users as with few (ratio ≈ 1).
The report is printed and written to `<report>/access-cache-<timestamp>.json` and `.md`.
"""

SMALL = (10, 20)  # users, grants
CHANGES = 20
IDLE_ROUNDS = 50
RATIO_TARGET = 1.5  # a refresh with many users over one with few: "the same", within the machine's noise
