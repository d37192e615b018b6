"""`charter report`: reports rebuilt from the event log as of a point, written to a file (progress on stderr)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any

from domain.errors import DomainError
from infrastructure.settings import Settings


def cmd_report(args: argparse.Namespace) -> int:
    """`charter report compliance`: the site's compliance report as of a point, rebuilt from the log, to a file."""
    from datetime import datetime, timezone

    from infrastructure.eventlog.as_of import StoreHistory
    from infrastructure.eventlog.eventstore import create_pool
    from interfaces.reporting import compliance

    settings = Settings.from_env()

    async def run(url: str) -> Any:
        pool = await create_pool(url, min_size=1, max_size=2)
        try:
            print(f"replaying site {args.site} as of {args.as_of or 'now'} ...", file=sys.stderr)
            history = StoreHistory(pool, settings.report_snapshot_every)
            generated = await compliance(history, args.site, args.as_of, args.since, args.format, datetime.now(timezone.utc))
            report = generated.report
            print(f"as of {report['as_of']}: {len(report['extensions'])} extensions active, {len(report['changes'])}"
                  f" changes in the window, last position {report['position']}", file=sys.stderr)
            return generated.rendered
        finally:
            await pool.close()

    from interfaces.cli import database

    with database(settings) as url:
        try:
            rendered = asyncio.run(run(url))
        except DomainError as exc:
            print(f"charter report compliance: {exc.message}", file=sys.stderr)
            return 2
    if args.out == "-":
        sys.stdout.buffer.write(rendered.document)
        sys.stdout.flush()
    else:
        with open(args.out, "wb") as out:
            out.write(rendered.document)
    print(f"wrote {args.out} ({len(rendered.document):,} bytes, {args.format}), sha256 {rendered.sha256}", file=sys.stderr)
    return 0


def add_report_command(command: Callable[..., argparse.ArgumentParser]) -> None:
    report = command("report", "reports rebuilt from the event log as of a point")
    report.add_argument("kind", choices=["compliance"])
    report.add_argument("--site", required=True, help="the site's id")
    report.add_argument("--as-of", default=None, help="an ISO 8601 instant with its offset, or position:N (none: now,"
                        " resolved to the last settled position and printed)")
    report.add_argument("--since", default=None, help="list the changes after this instant or position (none: all of them)")
    report.add_argument("--format", choices=["json", "csv", "html"], default="json")
    report.add_argument("--out", required=True, help="the file to write ('-': standard output)")
    report.set_defaults(func=cmd_report)
