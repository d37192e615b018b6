"""`charter bench`: benchmarks that measure their own baseline in the same run, on the same server."""

from __future__ import annotations

import argparse
import sys


def run_bench(args: argparse.Namespace) -> int:
    """Run the suite named by `args.suite`; 0 when it ran (targets met or not), 2 for an unknown suite."""
    if args.suite == "append":
        from interfaces.bench.append import run_append

        return run_append(args)
    print(f"unknown benchmark suite {args.suite!r}; known: append", file=sys.stderr)
    return 2


__all__ = ["run_bench"]
