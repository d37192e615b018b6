"""`charter bench`: benchmarks that measure their own baseline in the same run, on the same server."""

from __future__ import annotations

import argparse
import sys

DEFAULT_SECONDS = {"append": 10.0, "fanout": 20.0, "rebuild": 10.0}


def run_bench(args: argparse.Namespace) -> int:
    """Run the suite named by `args.suite`; 0 when it ran (targets met or not), 2 for an unknown suite."""
    if getattr(args, "seconds", None) is None:  # each suite has its own default duration
        args.seconds = DEFAULT_SECONDS.get(args.suite, 10.0)
    if args.suite == "append":
        from ops.bench.append.run import run_append

        return run_append(args)
    if args.suite == "fanout":
        from ops.bench.fanout.run import run_fanout

        return run_fanout(args)
    if args.suite == "auth":
        from ops.bench.auth.run import run_auth

        return run_auth(args)
    if args.suite == "rebuild":
        from ops.bench.rebuild.run import run_rebuild

        return run_rebuild(args)
    print(f"unknown benchmark suite {args.suite!r}; known: append, fanout, auth, rebuild", file=sys.stderr)
    return 2


__all__ = ["run_bench"]
