"""`charter bench`: benchmarks that measure their own baseline in the same run, on the same server."""

from __future__ import annotations

import argparse
import importlib
import sys

# suite -> the module whose `run(args)` runs it (imported only when asked for)
SUITES = {
    "append": "ops.bench.append.run:run_append",
    "fanout": "ops.bench.fanout.run:run_fanout",
    "auth": "ops.bench.auth.run:run_auth",
    "rebuild": "ops.bench.rebuild.run:run_rebuild",
    "audit": "ops.bench.audit.run:run_audit",
    "sites": "ops.bench.sites.run:run_sites",
    "tasks": "ops.bench.tasks.run:run_tasks",
    "report": "ops.bench.report.run:run_report",
    "read": "ops.bench.read.run:run_read",
    "access-cache": "ops.bench.access.run:run_access_cache",
}
DEFAULT_SECONDS = {"append": 10.0, "fanout": 20.0, "rebuild": 10.0, "sites": 10.0, "tasks": 20.0}
DEFAULT_CLIENTS = {"sites": 8}  # sites: one site per client, each set up with every extension
DEFAULT_EVENTS = {"report": 10_000}  # the others: 200,000
DEFAULT_ROUNDS = {"report": 5}  # the others: 2


def run_bench(args: argparse.Namespace) -> int:
    """Run the suite named by `args.suite`; 0 when it ran (targets met or not), 2 for an unknown suite."""
    if getattr(args, "seconds", None) is None:  # each suite has its own default duration
        args.seconds = DEFAULT_SECONDS.get(args.suite, 10.0)
    if getattr(args, "clients", None) is None:
        args.clients = DEFAULT_CLIENTS.get(args.suite, 64)
    if getattr(args, "events", None) is None:
        args.events = DEFAULT_EVENTS.get(args.suite, 200_000)
    if getattr(args, "rounds", None) is None:
        args.rounds = DEFAULT_ROUNDS.get(args.suite, 2)
    target = SUITES.get(args.suite)
    if target is None:
        print(f"unknown benchmark suite {args.suite!r}; known: {', '.join(SUITES)}", file=sys.stderr)
        return 2
    module, function = target.split(":")
    return int(getattr(importlib.import_module(module), function)(args))


__all__ = ["SUITES", "run_bench"]
