"""The `charter` command: serve, migrate, projections, relay, users, tasks, audit, report, bench.

Imports nothing that needs a server at the top: `charter audit check` runs where there is none."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from domain.errors import DomainError
from infrastructure.settings import Settings
from interfaces.cli_audit import add_audit
from interfaces.cli_bench import add_bench
from interfaces.cli_reports import add_report_command

EMBEDDED_DATABASE = "charter"
PREFERRED_PG_PORT = 54329  # the embedded servers' ports when none is pinned or remembered (and they are free)
PREFERRED_NATS_PORT = 4229


def _embedded_postgres(settings: Settings, **options: Any) -> Any:
    from infrastructure.embedded.postgres import EmbeddedPostgres

    return EmbeddedPostgres(
        settings.data_dir.absolute() / "postgres",
        port=settings.embedded_pg_port,
        preferred_port=PREFERRED_PG_PORT,
        **options,
    )


def _start_postgres(server: Any) -> str:
    print(f"starting embedded PostgreSQL under {server.pgdata} ...", file=sys.stderr)
    admin = server.start()
    asyncio.run(_ensure_database(admin, EMBEDDED_DATABASE))
    return urlunsplit(urlsplit(admin)._replace(path="/" + EMBEDDED_DATABASE))


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The configured database URL, or an embedded PostgreSQL under `<data_dir>/postgres` for the duration
    (a running `charter serve`'s, when there is one)."""
    if settings.database_url:
        yield settings.database_url
        return
    server = _embedded_postgres(settings)
    try:
        yield _start_postgres(server)
    finally:
        server.stop()
        print("embedded PostgreSQL stopped", file=sys.stderr)


@contextlib.contextmanager
def embedded_servers(settings: Settings) -> Iterator[Any]:
    """For `serve`: the embedded PostgreSQL / nats-server that unset CHARTER_DATABASE_URL / CHARTER_NATS_URL
    call for, under the data directory's lock (a second serve on it is refused), watched (restarted if one
    dies) and stopped at the end; fills in `settings.database_url` / `settings.nats_url`. Yields the
    `Watchdog`, or None when nothing is embedded."""
    if settings.database_url and settings.nats_url:
        yield None
        return
    from infrastructure.embedded.nats import EmbeddedNats, nats_max_payload
    from infrastructure.embedded.supervision import Watchdog, data_dir_lock

    data_dir = settings.data_dir.absolute()
    with data_dir_lock(data_dir):
        servers: list[Any] = []
        try:
            if not settings.database_url:
                servers.append(_embedded_postgres(settings, adopt=False))
                settings.database_url = _start_postgres(servers[-1])
            if not settings.nats_url:
                nats = EmbeddedNats(
                    data_dir / "nats",
                    port=settings.embedded_nats_port,
                    preferred_port=PREFERRED_NATS_PORT,
                    max_payload=nats_max_payload(settings.event_max_bytes),
                )
                servers.append(nats)
                print(f"starting embedded NATS (JetStream) under {nats.store_dir} ...", file=sys.stderr)
                settings.nats_url = nats.start()
                print(
                    f"embedded NATS at {settings.nats_url} (JetStream stream {settings.nats_stream}; "
                    "set CHARTER_NATS_URL to use your own)",
                    file=sys.stderr,
                )
        except BaseException:
            for server in reversed(servers):
                with contextlib.suppress(Exception):
                    server.stop()
            raise
        try:
            with Watchdog(servers) as watchdog:
                yield watchdog
        finally:
            print("embedded servers stopped", file=sys.stderr)


async def _ensure_database(admin_dsn: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


EMBEDDED_ADMIN = "admin@charter.local"


def embedded_admin(settings: Settings) -> str:
    """On the embedded default, a first administrator whose password is kept in `<data_dir>/admin-credentials`."""
    import secrets

    path = settings.data_dir / "admin-credentials"
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{EMBEDDED_ADMIN}\n{secrets.token_urlsafe(18)}\n")
    email, password = path.read_text().split("\n")[:2]
    settings.bootstrap_admin_email, settings.bootstrap_admin_password = email, password
    return str(path)


class _Terminated(Exception):
    """SIGTERM arrived: unwind, stopping what serve started."""


def _on_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not interrupt the stopping
    raise _Terminated


def cmd_serve(args: argparse.Namespace) -> int:
    from infrastructure.embedded.supervision import DataDirBusy

    # uvicorn handles SIGTERM while it runs, then raises it again: with the default handler the process
    # would die there, before the embedded servers are stopped.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _serve(args)
    except DataDirBusy as error:
        print(f"charter serve: {error}", file=sys.stderr)
        return 1
    except _Terminated:
        return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from interfaces.app import create_app
    from interfaces.serving import default_workers, server_config, serve_workers

    settings = Settings.from_env(host=getattr(args, "host", None), port=getattr(args, "port", None))
    if args.no_projectors:
        settings.run_projectors = False
    credentials = None
    if not settings.database_url and not settings.bootstrap_admin_email:
        credentials = embedded_admin(settings)
    workers = args.workers or default_workers()
    with embedded_servers(settings) as watchdog:
        app = None if workers > 1 else create_app(settings)
        base = f"http://{settings.host}:{settings.port}"
        print(f"Charter listening on {base}  (OpenAPI: {base}/schema)", file=sys.stderr)
        if credentials:
            print(
                f"sign in as {settings.bootstrap_admin_email} (password in {credentials}):\n"
                f"  curl -X POST {base}/api/v1/auth/login -H 'Content-Type: application/json' "
                f"-d '{{\"username\": \"{settings.bootstrap_admin_email}\", \"password\": \"'$(sed -n 2p {credentials})'\"}}'",
                file=sys.stderr,
            )
        if workers > 1:
            print(f"{workers} worker processes; projectors and the relay led by one at a time", file=sys.stderr)
            if watchdog is not None:  # the supervisor stops its workers on SIGTERM
                watchdog.on_failure = lambda: os.kill(os.getpid(), signal.SIGTERM)
            serve_workers(settings, workers)
        else:
            server = uvicorn.Server(server_config(app, settings.host, settings.port))
            if watchdog is not None:
                watchdog.on_failure = lambda: setattr(server, "should_exit", True)
            server.run()
    if watchdog is not None and watchdog.failure:
        print(f"charter serve: {watchdog.failure}; stopped", file=sys.stderr)
        return 1
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    import asyncpg

    from infrastructure.eventlog.migrate import migrate

    async def run(url: str) -> None:
        conn = await asyncpg.connect(url)
        try:
            applied = await migrate(conn)
        finally:
            await conn.close()
        print("\n".join(f"applied {m.version:04d}_{m.name}" for m in applied) or "database is up to date")

    with database(Settings.from_env()) as url:
        asyncio.run(run(url))
    return 0


def cmd_projections(args: argparse.Namespace) -> int:
    import asyncpg

    from infrastructure.eventlog.projector import checkpoint, lag
    from infrastructure.eventlog.rebuild import BUILD, RebuildBusy, rebuild
    from projections import PROJECTIONS

    by_name = {p.name: p for p in PROJECTIONS}
    unknown = [name for name in args.names if name not in by_name]
    if unknown:
        print(f"unknown projection {unknown[0]!r}; known: {', '.join(by_name)}", file=sys.stderr)
        return 2
    chosen = [by_name[name] for name in dict.fromkeys(args.names)] if args.names and not args.all else list(by_name.values())
    settings = Settings.from_env()

    async def run(url: str) -> int:
        from infrastructure.eventlog.eventstore import create_pool
        from infrastructure.eventlog.migrate import migrate

        conn = await asyncpg.connect(url)
        await migrate(conn)
        await conn.close()
        if args.action == "status":
            pool = await create_pool(url, min_size=1, max_size=2)
            for name in by_name:
                tx, pos, version = await checkpoint(pool, name)
                print(f"{name}: version {version}, cursor ({tx}, {pos}), lag {await lag(pool, name)}")
                if await pool.fetchval("SELECT 1 FROM checkpoints WHERE name = $1", name + BUILD):
                    tx, pos, version = await checkpoint(pool, name + BUILD)
                    print(f"  rebuild under way or interrupted (resumes with `charter projections rebuild {name}`):"
                          f" version {version}, cursor ({tx}, {pos}), {await lag(pool, name + BUILD)} events to go")
            await pool.close()
            return 0
        names = ", ".join(p.name for p in chosen)
        with rebuild_progress(f"rebuilding {names}") as progress:
            try:
                count = await rebuild(url, chosen, progress, chunk=max(1, settings.rebuild_chunk), fresh=args.fresh)
            except RebuildBusy as busy:
                print(f"charter projections rebuild: {busy}", file=sys.stderr)
                return 1
        print(f"{names}: {count} events replayed, swapped in")
        return 0

    with database(settings) as url:
        return asyncio.run(run(url))


@contextlib.contextmanager
def rebuild_progress(label: str) -> Iterator[Any]:
    """A progress bar on stderr (events, events/s, time left); yields the `(done, total)` callback."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(f"{task.speed or 0:,.0f} events/s")

    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), Rate(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def cmd_relay(args: argparse.Namespace) -> int:
    """`charter relay status`: where the relay is and what it could not publish; `charter relay skip ID`:
    let a relay held at an event it cannot publish go on without it (the event stays in the log)."""
    import getpass
    import uuid

    import asyncpg

    if args.action == "skip":
        try:
            event_id = str(uuid.UUID(args.event_id or ""))
        except ValueError:
            print("charter relay skip needs the id of the event the relay holds at (see `charter relay status`)", file=sys.stderr)
            return 2

    async def run(url: str) -> int:
        from infrastructure.stream import unpublishable
        from infrastructure.eventlog.migrate import migrate
        from infrastructure.eventlog.projector import checkpoint, lag
        from infrastructure.stream.relay import RELAY

        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
            if args.action == "skip":
                by = args.by or f"{getpass.getuser()} (charter relay skip)"
                if not await unpublishable.decide(conn, event_id, unpublishable.SKIPPED, by):
                    print(f"the relay is not holding at event {event_id}; see `charter relay status`", file=sys.stderr)
                    return 1
                await conn.execute("SELECT pg_notify('charter_events', '')")  # wake the relay now
                print(f"event {event_id} skipped: the relay goes on without it (it stays in the log)")
                return 0
            exists = await conn.fetchval("SELECT 1 FROM checkpoints WHERE name = $1", RELAY)
            tx, pos, _ = await checkpoint(conn, RELAY) if exists else (0, 0, 0)
            print(f"relay: cursor ({tx}, {pos}), lag {await lag(conn, RELAY) if exists else 'unknown'}")
            events = await unpublishable.listed(conn)
            for e in events:
                decided = f" by {e['decided_by']} at {e['decided_at']:%Y-%m-%d %H:%M:%S%z}" if e["decided_at"] else ""
                print(
                    f"{e['outcome'].upper():9} {e['event_id']} position {e['position']} {e['event_type']} "
                    f"({e['size']} bytes, {e['attempts']} attempts since {e['detected_at']:%Y-%m-%d %H:%M:%S%z}){decided}: {e['reason']}"
                )
            held = [e for e in events if e["outcome"] == unpublishable.HELD]
            if held:
                print(f"the relay is HELD at event {held[0]['event_id']}: fix NATS or run `charter relay skip {held[0]['event_id']}`")
                return 1
            return 0
        finally:
            await conn.close()

    with database(Settings.from_env()) as url:
        return asyncio.run(run(url))


def cmd_users(args: argparse.Namespace) -> int:
    import getpass

    from interfaces.runtime import bootstrap, ensure_admin, start_runtime, stop_runtime

    password = args.password or os.environ.get("CHARTER_ADMIN_PASSWORD")
    if password is None and sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.email} (empty: keep the current one of an existing account): ")
    password = password or None

    async def run(url: str) -> str:
        settings = Settings.from_env(database_url=url)
        settings.nats_url = None
        runtime = await start_runtime(settings)
        try:
            from interfaces.app import route_permissions  # the catalog needs the app's routes
            from interfaces.app import create_app

            await bootstrap(runtime, route_permissions(create_app(settings)))
            return await ensure_admin(runtime, args.email, password, repair=True)
        finally:
            await stop_runtime(runtime)

    with database(Settings.from_env()) as url:
        try:
            user_id = asyncio.run(run(url))
        except DomainError as exc:
            print(f"charter users create-admin: {exc.message}", file=sys.stderr)
            return 2
    print(f"administrator {args.email} ready (user id {user_id}): active, admin everywhere; sign in at POST /api/v1/auth/login")
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    from infrastructure.settings_doc import settings_help, settings_markdown

    print(settings_markdown() if args.markdown else settings_help(), end="" if args.markdown else "\n")
    return 0


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Epilogs keep their layout; every option shows its default."""


def parser() -> argparse.ArgumentParser:
    from infrastructure.settings_doc import settings_help

    root = argparse.ArgumentParser(
        prog="charter", description="Charter: control plane for plugins and extensions", formatter_class=_HelpFormatter
    )
    sub = root.add_subparsers(dest="command", required=True)

    def command(name: str, help: str, **kwargs: object) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, formatter_class=_HelpFormatter, **kwargs)

    serve = command(
        "serve",
        "run the API (embedded PostgreSQL / NATS when CHARTER_DATABASE_URL / CHARTER_NATS_URL are unset)",
        epilog=settings_help(),
    )
    serve.add_argument(
        "--host", default=argparse.SUPPRESS, help=f"listen address (default: CHARTER_HOST, else {Settings().host})"
    )
    serve.add_argument(
        "--port", type=int, default=argparse.SUPPRESS, help=f"listen port (default: CHARTER_PORT, else {Settings().port})"
    )
    serve.add_argument("--no-projectors", action="store_true", help="run no projectors in this process")
    serve.add_argument(
        "--workers", type=int, default=0, metavar="N",
        help="worker processes on the one port (default 0: one per core); projectors and the relay run in one at a time",
    )
    serve.set_defaults(func=cmd_serve)

    settings = command("settings", "list every setting, its environment variable, default and meaning")
    settings.add_argument("--markdown", action="store_true", help="as the README's table")
    settings.set_defaults(func=cmd_settings)

    mig = command("migrate", "apply database migrations")
    mig.set_defaults(func=cmd_migrate)

    proj = command("projections", "inspect or rebuild read models")
    proj.add_argument("action", choices=["rebuild", "status"])
    proj.add_argument("names", nargs="*", help="projections to rebuild, in one pass over the log (default: all)")
    proj.add_argument("--all", action="store_true", help="rebuild every projection (as when no name is given)")
    proj.add_argument(
        "--fresh", action="store_true", help="start over instead of resuming an interrupted rebuild from its last chunk"
    )
    proj.set_defaults(func=cmd_projections)

    relay = command("relay", "the relay to JetStream: status, and events it could not publish")
    relay.add_argument("action", choices=["status", "skip"])
    relay.add_argument("event_id", nargs="?", help="skip: the event the relay holds at")
    relay.add_argument("--by", help="skip: who decided (recorded; default: the OS user)")
    relay.set_defaults(func=cmd_relay)

    users = command("users", "manage users from the command line")
    users.add_argument("action", choices=["create-admin"])
    users.add_argument("--email", required=True)
    users.add_argument(
        "--password",
        help="default: CHARTER_ADMIN_PASSWORD, else asked for; an existing account (reactivated and granted admin)"
        " keeps its password when none is given",
    )
    users.set_defaults(func=cmd_users)

    from interfaces.cli_tasks import add_parser as add_tasks

    add_tasks(command)
    add_audit(command)
    add_report_command(command)

    add_bench(command)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
