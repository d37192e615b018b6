"""`charter tasks list|run|pause|resume`: the tasks feature from the command line, against the database
through the same commands and queries as HTTP (the CLI acts as the system: `cli:<OS user>` in the log).

`list` reads the tasks read model, which the serving replicas' projectors keep; `run` requests a run
(a replica's scheduler starts it within `CHARTER_TASK_REFRESH` plus its recovery grace; `--wait` follows
the run's own stream to its outcome). `--site` picks a site's tasks, for `list` and for the others.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the rest is imported when a tasks command runs: `charter audit check` loads no driver
    from projections.tasks.queries import TaskQueries

PAGE = 100


def add_parser(command: Any) -> None:
    """The `tasks` sub-command, on `command(name, help)` of the `charter` parser."""
    tasks = command("tasks", "list scheduled tasks, run one now, pause or resume them")
    tasks.add_argument("action", choices=["list", "run", "pause", "resume"])
    tasks.add_argument("task_ids", nargs="*", metavar="TASK_ID", help="run/pause/resume: the tasks to act on")
    tasks.add_argument("--site", help="only the tasks of this site (run/pause/resume: every task of it)")
    tasks.add_argument("--global", dest="global_only", action="store_true", help="only the global tasks")
    tasks.add_argument("--status", choices=["active", "paused", "deleted"], help="list: only tasks in this state")
    tasks.add_argument("--reason", help="run/pause/resume: why (recorded in the event)")
    tasks.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                       help="run: wait up to this long for each run's outcome (a replica's scheduler executes it)")
    tasks.set_defaults(func=cmd_tasks)


def cmd_tasks(args: argparse.Namespace) -> int:
    from infrastructure.settings import Settings
    from interfaces.cli import database

    if args.action != "list" and not args.task_ids and not (args.site or args.global_only):
        print(f"charter tasks {args.action}: name tasks, or pick them with --site or --global", file=sys.stderr)
        return 2
    with database(Settings.from_env()) as url:
        return asyncio.run(_run(args, url))


async def _run(args: argparse.Namespace, url: str) -> int:
    from infrastructure.settings import Settings
    from interfaces.runtime import start_runtime, stop_runtime
    from projections.tasks.queries import TaskQueries

    settings = Settings.from_env(database_url=url)
    settings.nats_url = None
    settings.run_projectors = settings.run_scheduler = False  # a replica's work, not a command's
    runtime = await start_runtime(settings)
    try:
        queries = TaskQueries(runtime.pool)
        if args.action == "list":
            rows = await matching(queries, args)
            print(table(rows) if rows else "no tasks")
            behind = (await runtime.projection_lag()).get("tasks", 0)
            if behind:
                print(f"(the tasks read model is {behind} events behind the log: is a replica serving?)", file=sys.stderr)
            return 0
        return await act(runtime, queries, args)
    finally:
        await stop_runtime(runtime)


async def matching(queries: TaskQueries, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every task the filters pick, page after page (deleted ones only when asked for by --status)."""
    from projections.tasks.queries import TaskFilter

    f = TaskFilter(site_id=args.site, status=args.status, include_deleted=args.status == "deleted")
    rows: list[dict[str, Any]] = []
    while True:
        total, page = await queries.list(f, len(rows), PAGE)
        rows += page
        if not page or len(rows) >= total:
            break
    return [r for r in rows if not args.global_only or r["site_id"] is None]


async def act(runtime: Any, queries: TaskQueries, args: argparse.Namespace) -> int:
    from application.context import CommandContext
    from application.tasks import commands as t
    from domain.errors import DomainError

    ctx = CommandContext(actor=f"cli:{getpass.getuser()}")
    task_ids = list(args.task_ids)
    if args.site or args.global_only:
        task_ids += [r["task_id"] for r in await matching(queries, args) if r["task_id"] not in task_ids]
    if not task_ids:
        print("no tasks match", file=sys.stderr)
        return 2
    command = {"run": t.RunTask, "pause": t.PauseTask, "resume": t.ResumeTask}[args.action]
    failed = 0
    for task_id in task_ids:
        try:
            result = await runtime.execute(command(task_id=task_id, reason=args.reason), ctx)
        except DomainError as exc:
            print(f"{task_id}: {exc.message} ({exc.code})", file=sys.stderr)
            failed += 1
            continue
        if args.action != "run":
            print(f"{task_id}: {args.action}d (stream version {result.version})")
            continue
        run_id = result.stream_id.split(":", 1)[1]
        print(f"{task_id}: run {run_id} requested")
        if args.wait > 0:
            status = await outcome(runtime, run_id, args.wait)
            print(f"{task_id}: run {run_id} {status}")
            failed += status != "succeeded"
    return 1 if failed else 0


async def outcome(runtime: Any, run_id: str, seconds: float) -> str:
    """The run's status once it ended, or `still <status> after N s` (read from its stream, not a read model)."""
    from application.tasks.runs import load_run
    from domain.tasks.run import FINAL

    deadline = time.monotonic() + seconds
    while True:
        run = (await load_run(runtime.repository, run_id)).aggregate
        if run.status in FINAL:
            return run.status
        if time.monotonic() >= deadline:
            return f"still {run.status} after {seconds:g} s"
        await asyncio.sleep(0.2)


def schedule_text(schedule: dict[str, Any]) -> str:
    if schedule.get("kind") == "interval":
        return f"every {schedule['every']:g}s" + (" aligned" if schedule.get("align") else "")
    return f"cron {schedule.get('cron')} {schedule.get('timezone', 'UTC')}"


def when(value: datetime | str | None) -> str:
    """An instant in UTC to the second (`-` for none)."""
    if value is None:
        return "-"
    instant = datetime.fromisoformat(value) if isinstance(value, str) else value
    return instant.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def table(rows: list[dict[str, Any]]) -> str:
    """The tasks as aligned columns, one line each."""
    head = ("ID", "SITE", "STATUS", "SCHEDULE", "ACTION", "LAST RUN", "NEXT RUN", "OK", "FAILED")
    lines = [head] + [
        (r["task_id"], r["site_id"] or "(global)", r["status"], schedule_text(r["schedule"]), r["action"],
         f"{when(r['last_run_at'])} {r['last_run_status'] or ''}".strip(), when(r["next_run"]),
         str(r["success_count"]), str(r["failure_count"]))
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)
