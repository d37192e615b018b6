"""The built-in actions `audit.verify` and `reports.compliance` without I/O: what a run reports, when it
fails, and which tasks may target them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from application.tasks.ports import RunContext
from domain.tasks.errors import TaskInvalid
from infrastructure.tasks.actions import AllowList, builtin_registry

RUN = RunContext(run_id="run-1", task_id="task-1", site_id="plant-1", attempt=1, timeout=60.0)


def report(ok: bool = True, findings: list | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        ok=ok, events=120, streams=7, checkpoints=2, sealed_to_position=100, unsealed=20,
        findings=findings or [], findings_total=len(findings or []),
    )  # fmt: skip


def registry(verified=None, kept=None, asked=None):  # type: ignore[no-untyped-def]
    async def verify(from_checkpoint, max_events):  # type: ignore[no-untyped-def]
        asked.append((from_checkpoint, max_events)) if asked is not None else None
        return verified, SimpleNamespace(complete=True, last_checkpoint=2)

    async def archive(site_id, fmt, run):  # type: ignore[no-untyped-def]
        return SimpleNamespace(id="r-1", as_of="2026-01-01T00:00:00Z", position=42, format=fmt, size=10, sha256="ab" * 32)

    return builtin_registry(AllowList.parse(""), verify=verify, archive_report=archive)


async def test_a_verification_without_findings_says_what_it_checked() -> None:
    asked: list = []
    output = await registry(report(), asked=asked).run("audit.verify", {"max_events": 500}, RUN)
    assert asked == [(0, 500)]
    assert output == "verified 120 events in 7 streams, 2 checkpoints (sealed to position 100, 20 after it)"


async def test_findings_fail_the_run_naming_the_first() -> None:
    finding = SimpleNamespace(line=lambda: "position 17 (plugin:x v3): edited")
    with pytest.raises(RuntimeError, match=r"1 findings in 120 events .* first: position 17 \(plugin:x v3\): edited"):
        await registry(report(ok=False, findings=[finding])).run("audit.verify", {}, RUN)


async def test_the_report_is_archived_for_the_tasks_site() -> None:
    output = await registry().run("reports.compliance", {"format": "csv"}, RUN)
    assert output.startswith("archived report r-1 of site plant-1 as of 2026-01-01T00:00:00Z (position 42), csv, 10 bytes")


def test_only_a_task_with_a_site_may_target_the_report() -> None:
    actions = registry()
    actions.check("reports.compliance", {"format": "html"}, "plant-1")
    with pytest.raises(TaskInvalid) as refused:
        actions.check("reports.compliance", {"format": "html"}, None)
    assert refused.value.details["field"] == "site_id"
    actions.check("audit.verify", {}, None)  # the log is everyone's: a global task may verify it


async def test_a_site_less_run_of_the_report_fails_clearly() -> None:
    with pytest.raises(RuntimeError, match="runs for a site"):
        await registry().run("reports.compliance", {}, RunContext("run-2", "task-2", None, 1, 60.0))
