"""`charter audit`: verify the log online (`verify`, `--export FILE`), check an export offline (`check`),
seal a checkpoint now (`seal`).

`charter audit check FILE --public-key KEY` needs no database and no Charter server: it imports only the
pure verifier (infrastructure/audit/verify.py, chain.py, signing.py). Every command exits 1 when it finds
anything (each finding printed on stdout, one line each), 2 on a usage error, 0 on a clean log.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

MAX_PRINTED = 1_000  # findings printed; the total is always said


def add_audit(command: Callable[..., argparse.ArgumentParser]) -> None:
    audit = command("audit", "tamper evidence: verify the log, export it for an auditor, check an export offline")
    audit.add_argument("action", choices=["verify", "check", "seal"],
                       help="verify: online, against the database; check FILE: offline, an export; seal: one checkpoint now")  # fmt: skip
    audit.add_argument("file", nargs="?", help="check: the export to check")
    audit.add_argument("--export", metavar="FILE", help="verify: also write the export (JSON Lines) to FILE")
    audit.add_argument(
        "--public-key", metavar="KEY",
        help="the sealer's public key (PEM, as GET /api/v1/audit/public-key gives it); verify: default the key file of CHARTER_AUDIT_KEY_PATH",
    )  # fmt: skip
    audit.set_defaults(func=cmd_audit)


def _public_key(path: str | None, fallback: Path | None = None) -> Any:
    from infrastructure.audit.signing import load_public_key

    chosen = Path(path) if path else fallback
    if chosen is None or not chosen.exists():
        return None
    return load_public_key(chosen.read_bytes())


def _print_report(report: Any, out: Any = sys.stdout) -> int:
    for finding in report.findings[:MAX_PRINTED]:
        print(finding.line(), file=out)
    sealed = f"sealed to position {report.sealed_to_position}" if report.sealed_to_position is not None else "nothing sealed"
    unverifiable = f", {report.unverifiable} not verifiable from an export (chain version 1, withheld fields)" if report.unverifiable else ""
    print(
        f"{report.events} events in {report.streams} streams, {report.checkpoints} checkpoints ({sealed}; "
        f"{report.unsealed} events after the last checkpoint){unverifiable}: "
        + ("no findings" if report.ok else f"{report.findings_total} findings"),
        file=out,
    )
    return 0 if report.ok else 1


def cmd_audit(args: argparse.Namespace) -> int:
    if args.action == "check":
        return _check(args)
    if args.file:
        print(f"charter audit {args.action} takes no file (did you mean --export?)", file=sys.stderr)
        return 2
    return _seal(args) if args.action == "seal" else _verify(args)


def _check(args: argparse.Namespace) -> int:
    from infrastructure.audit.verify import check_export

    if not args.file or not args.public_key:
        print("charter audit check FILE --public-key KEY: both are needed", file=sys.stderr)
        return 2
    try:
        public = _public_key(args.public_key)
        if public is None:
            raise ValueError(f"no file {args.public_key}")
        report = check_export(Path(args.file), public)
    except (OSError, ValueError) as exc:
        print(f"charter audit check: {exc}", file=sys.stderr)
        return 2
    return _print_report(report)


def _verify(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib

    import asyncpg

    from infrastructure.audit.online import verify_log
    from infrastructure.eventlog.eventstore import init_connection
    from infrastructure.settings import Settings
    from interfaces.cli import database, rebuild_progress

    settings = Settings.from_env()
    try:
        public = _public_key(args.public_key, settings.audit_key_file())
    except ValueError as exc:
        print(f"charter audit verify: {exc}", file=sys.stderr)
        return 2

    async def run(url: str) -> Any:
        conn = await asyncpg.connect(url)
        await init_connection(conn)
        try:
            with contextlib.ExitStack() as stack:
                export = stack.enter_context(open(args.export, "wb")) if args.export else None
                progress = stack.enter_context(rebuild_progress("verifying"))
                report, _ = await verify_log(
                    conn, public, progress=progress, export=export,
                    exported_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                )  # fmt: skip
                return report
        finally:
            await conn.close()

    with database(settings) as url:
        report = asyncio.run(run(url))
    if args.export:
        print(f"export written to {args.export}: check it with `charter audit check {args.export} --public-key KEY`", file=sys.stderr)
    return _print_report(report)


def _seal(args: argparse.Namespace) -> int:
    import asyncio

    from infrastructure.audit.sealer import Sealer
    from infrastructure.audit.signing import Signer
    from infrastructure.eventlog.eventstore import EventStore, create_pool
    from infrastructure.settings import Settings
    from interfaces.cli import database

    settings = Settings.from_env()

    async def run(url: str) -> list[int]:
        pool = await create_pool(url, min_size=1, max_size=2)
        store = EventStore(pool, writers=1)
        sealer = Sealer(pool, store, Signer.load_or_create(settings.audit_key_file()), interval=0,
                        max_events=settings.audit_checkpoint_events)  # fmt: skip
        try:
            sealed = []
            while (sequence := await sealer.seal_once()) is not None:
                sealed.append(sequence)
            return sealed
        finally:
            await store.stop()
            await pool.close()

    with database(settings) as url:
        sealed = asyncio.run(run(url))
    print(f"sealed checkpoints {sealed[0]}..{sealed[-1]}" if sealed else "nothing to seal")
    return 0
