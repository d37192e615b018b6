"""`charter bench read`: authorized catalog reads against the framework's own ceiling, in one run.

One run, on ONE PostgreSQL server (CHARTER_DATABASE_URL's, or an embedded one started for the run), in a
fresh database `charter_bench_<hex>` dropped at the end, no NATS:

(1) seed     200 plugins installed through the application layer while the first Charter server starts
             (it bootstraps the built-in roles and an administrator and runs the projectors, as `charter
             serve` does); a user holding the built-in `viewer` role signs in.
(2) servers  for N = 1 and N = 2 worker processes (`--workers`), two servers with the same uvicorn options
             (interfaces/serving.py) and the same N:
               C  Charter (`charter serve --workers N`'s code path): the guard checks the viewer's Bearer
                  token, the rate limiter counts, the read model answers (through the read cache).
               H  a bare Litestar app answering the same two JSON documents (the list page and the
                  detail) from memory: the framework's ceiling on this machine.
(3) load     `--clients` keep-alive HTTP/1.1 connections (raw asyncio streams in the bench process, one
             request in flight each) send `GET /api/v1/plugins?limit=20` (list) or `GET
             /api/v1/plugins/<id>` (detail, 20 different plugins in turn); per path, phases alternate C, H
             (CHARTER_BENCH_READ_ROUNDS times), each a short warm-up and `--seconds` measured.

Targets (N = 1): C >= 0.5x H in requests/s, and C's p99 <= 15 ms. Scaling: C at N = 2 over C at N = 1.
The report is printed and written to `<report>/read-<timestamp>.json` and `.md`.
"""

RATIO_TARGET = 0.5  # Charter requests/s over the bare app's, one worker each
P99_TARGET_MS = 15.0
PLUGINS = 200
PREFIX = "bench-read"
LIST_PATH = "/api/v1/plugins?limit=20"
DETAILS = 20  # the detail phase reads these plugins in turn
APP_ENV = "CHARTER_BENCH_READ_APP"  # charter | hello
WORKERS_ENV = "CHARTER_BENCH_READ_WORKERS"
BODIES_ENV = "CHARTER_BENCH_READ_BODIES"  # the hello app's documents (a JSON file)
ROUNDS_ENV = "CHARTER_BENCH_READ_ROUNDS"
PROFILE_ENV = "CHARTER_BENCH_READ_PROFILE"  # a file: cProfile the Charter server (one worker) into it


def detail_path(i: int) -> str:
    return f"/api/v1/plugins/{PREFIX}-{i:03d}"
