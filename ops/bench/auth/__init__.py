"""`charter bench auth`: what authorization costs on a read, against the same app without it, in one run.

One run, on ONE PostgreSQL server (CHARTER_DATABASE_URL's, or an embedded one started for the run), in a
fresh database `charter_bench_<hex>` dropped at the end, no NATS:

(1) servers  TWO Charter server processes on the same database, each uvicorn (uvloop) on a free port
             (`python -m ops.bench.auth.server serve`):
               A  `create_app(settings, authorization=True)`: the guard checks the Bearer token (JWT
                  signature and claims, cached per token), the user's state, resolves the role grants
                  to permissions and checks the route's rule; rate limiting per user.
               B  `create_app(settings, authorization=False)`: the same app with the guard's checks off
                  (only the rate limiter still counts, per IP).
             Neither runs projectors: a third server P (authorization on, projectors on) bootstraps the
             built-in roles and an administrator and builds the read models during the setup, and is
             stopped before the load, so A and B differ in nothing but authorization. Rate limits are set
             so high that neither ever throttles.
(2) seed     50 plugins installed through the application layer (while P starts); a user holding the
             built-in `viewer` role (everywhere) is created and signs in through A (while B starts).
(3) load     `--clients` concurrent keep-alive HTTP/1.1 connections (raw asyncio streams on uvloop in
             the bench process: one request in flight per connection) send `GET /api/v1/plugins?limit=20`:
             to A with the viewer's Bearer token, to B without a token. After one unmeasured warm-up of
             each server, phases alternate A, B, A, B (CHARTER_BENCH_AUTH_ROUNDS=n: n times), each a short
             warm-up and `--seconds` measured, so drift (caches, autovacuum, other load on the machine)
             falls on both sides alike. Requests/s per side over its phases, p50/p99 latency, and the CPU
             used during the window by the bench's clients, the loaded server and PostgreSQL (/proc): the
             client side must stay well below one core for the numbers to be the server's.
(4) guard    the guard alone (`interfaces.http.security.authorize`) called in the bench process on the same
             route, with and without authorization: what authorization adds per request, free of the noise
             of the load phases, and the ratio that alone predicts against B's server CPU per request.

Target: A >= 0.9x B. The report is printed and written to `<report>/auth-<timestamp>.json` and `.md`.
"""

# What the servers, the setup, the load, the guard and the report share.
RATIO_TARGET = 0.9  # authorized requests/s over unauthorized requests/s
PLUGINS = 50  # seeded: the page of 20 is full
PATH = "/api/v1/plugins?limit=20"
AUTHORIZATION_ENV = "CHARTER_BENCH_AUTHORIZATION"
ROUNDS_ENV = "CHARTER_BENCH_AUTH_ROUNDS"
VIEWER_EMAIL = "viewer@bench.charter"
VIEWER_PASSWORD = "viewer-password-for-the-bench"
ADMIN_EMAIL = "admin@bench.charter"
ADMIN_PASSWORD = "admin-password-for-the-bench"
HOST = "127.0.0.1"
