"""`charter bench fanout`: commit-to-client latency over SSE, memory per idle client, relay vs raw publish.

One run, on ONE PostgreSQL server and ONE NATS server (CHARTER_DATABASE_URL's / CHARTER_NATS_URL's, or
embedded ones started for the run), in a fresh database `charter_bench_<hex>` and JetStream streams of the
run's own (all removed at the end):

(1) server      ONE Charter server process: uvicorn on `interfaces.app:create_app(settings)` (a subprocess,
                `python -m ops.bench.fanout.server serve`), with its relay and SSE hub, on a free port. Its
                memory is measured on its own (/proc/<pid>/status VmRSS).
(2) idle        `--sse-clients` SSE clients (raw asyncio protocols speaking a minimal HTTP/1.1, spread
                over `--client-processes` processes) connect to GET /api/v1/events/stream. Server RSS
                before they connect and after they have been connected and idle for a few seconds gives
                the memory per idle client.
(3) load        a separate writer process executes `RestartPlugin` commands on pre-installed plugins
                through the application layer (`runtime.execute`, the real write path) at a steady
                `--rate` for a warm-up and then `--seconds`. Each delivery is timed as client receive
                time - the event's `recorded_at` (same machine clock). A probe process with one more
                SSE client and a core-NATS subscription on the stream splits that latency into stages.
(5) floor       a bare uvloop server (no HTTP, no ASGI, no Charter) writes a chunk of the size the clients
                received in (3) to as many sockets, read by another process, with nothing else running: the
                time one hub flush cannot go below on this machine, beside what the hub's flushes took in
                the window (from the server's /metrics). Run after (3), reported before (4).
(4) relay       K (`--relay-events`) events are appended to the log in big batches; a Relay
                (infrastructure/stream/relay.py) publishes them to a fresh stream with acks; a raw nats-py
                publish_async loop publishes the same subjects, payloads and headers to another fresh
                stream of the same server. Events/s of both and the ratio relay/raw.

Targets: p99 commit-to-client <= 50 ms at 500 events/s with 1,000 clients; <= 30 KiB per idle client;
relay >= 0.8x the raw publish loop. The report is printed and written to `<report>/fanout-<timestamp>.json`
and `.md`.

Set CHARTER_BENCH_PROFILE_SERVER=<file.prof> (or `--profile-server`) to run the server under cProfile
during the measured window of (3) (profiling slows the server down: use it to see where time goes, not
for the numbers).
"""
