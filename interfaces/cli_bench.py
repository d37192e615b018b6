"""`charter bench SUITE`: the benchmarks (ops/bench/), each printing ratios against a baseline measured in
the same run; the options of every suite."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable


def cmd_bench(args: argparse.Namespace) -> int:
    from ops.bench import run_bench

    return run_bench(args)


def add_bench(command: Callable[..., argparse.ArgumentParser]) -> None:
    from ops.bench import SUITES

    bench = command("bench", "benchmarks that print ratios against a baseline measured in the same run")
    bench.add_argument("suite", choices=sorted(SUITES))
    bench.add_argument("--events", type=int, default=None, help="rebuild, audit: events in the log that is replayed (200,000);"
                       " report: events in the site's stream (10,000)")
    bench.add_argument("--window", type=int, default=100, help="report: changes listed before the report's point")
    bench.add_argument("--snapshot-every", type=int, default=500,
                       help="report: the site's report state is snapshotted every this many versions (0: none)")
    bench.add_argument("--rounds", type=int, default=None,
                       help="rebuild, audit, sites: rounds of each phase, the best counts (2); report: rounds of each report, the median counts (5)")
    bench.add_argument("--clients", type=int, default=None, help="concurrent clients (default: sites 8, the others 64)")
    bench.add_argument("--extensions", type=int, default=200, help="sites: extensions active at each site")
    bench.add_argument("--spares", type=int, default=150, help="sites: plugins per site the activation phase may activate")
    bench.add_argument("--sites", type=int, default=None, help="sites: sites set up (default: 4 per client)")
    bench.add_argument("--users", type=int, default=100_000, help="access-cache: users in the large run (twice as many grants)")
    bench.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2], help="read: the worker counts measured (Charter and the bare app alike)"
    )
    bench.add_argument("--tasks", type=int, default=10_000, help="tasks: interval tasks due every second (scheduler phase)")
    bench.add_argument("--full-tasks", default="250,500,1000,2000", help="tasks: sizes of the full-path phase (runs/s)")
    bench.add_argument(
        "--seconds", type=float, default=None, help="duration of each measured phase (default: append 10, fanout 20, rebuild's lag phase 10)"
    )
    bench.add_argument("--report", default="bench-reports", help="folder for the JSON/Markdown report")
    bench.add_argument(
        "--processes",
        type=int,
        default=os.cpu_count() or 1,
        help="Charter phase: spread the clients over this many replica processes (default: one per CPU)",
    )
    bench.add_argument(
        "--telemetry",
        action="store_true",
        help="append: run the Charter phase again with tracing (always-on sampler, OTLP to a local sink) and metrics on; print on/off",
    )
    bench.add_argument("--sse-clients", type=int, default=1000, help="fanout: SSE clients connected to the server")
    bench.add_argument("--rate", type=float, default=500.0, help="fanout: commands (events) per second during the load")
    bench.add_argument(
        "--client-processes", type=int, default=0, help="fanout: processes the SSE clients are spread over (0: auto)"
    )
    bench.add_argument(
        "--server-workers", type=int, default=1, help="fanout: worker processes of the Charter server (`charter serve --workers N`)"
    )
    bench.add_argument("--relay-events", type=int, default=20_000, help="fanout: events the relay phase publishes")
    bench.add_argument("--relay-rounds", type=int, default=2, help="fanout: rounds of relay and raw publishing (best counts)")
    bench.add_argument("--idle-seconds", type=float, default=None, help="fanout: idle time before server memory is read")
    bench.add_argument(
        "--server-projectors", action="store_true", help="fanout: run the projectors in the server process too"
    )
    bench.add_argument(
        "--profile-server", default=None, metavar="FILE", help="fanout: cProfile the server during the window into FILE"
    )
    bench.add_argument(
        "--relay-in",
        choices=["server", "writer"],
        default="server",
        help="fanout: run the relay in the server process (as `charter serve`) or in the writer/worker process",
    )
    bench.set_defaults(func=cmd_bench)
