"""`charter tasks list|run|pause|resume` against a serving app's database: the CLI's commands land in
the log as `cli:<user>`, a serving replica's scheduler executes a run the CLI requested."""

from __future__ import annotations

import asyncio
import getpass
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from interfaces.app import create_app
from interfaces.cli import main as charter
from tests.e2e.conftest import admin_token, make_settings

HOURLY = {"kind": "interval", "every": 3600}


@pytest.fixture(scope="module")
async def world(databases, tmp_path_factory) -> AsyncIterator[dict[str, Any]]:
    database_url = await databases.create("tasks-cli")
    settings = make_settings(database_url, tmp_path_factory.mktemp("charter-tasks-cli"), task_refresh=0.2)
    async with AsyncTestClient(app=create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {await admin_token(client)}"
        yield {"client": client, "database_url": database_url}


@pytest.fixture
def cli(world, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CHARTER_DATABASE_URL", world["database_url"])
    monkeypatch.setenv("CHARTER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CHARTER_LOG_LEVEL", "warning")

    async def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(charter, ["tasks", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


async def create(client, site: str | None, enabled: bool = True) -> str:
    task_id = f"cli-{uuid.uuid4().hex[:8]}"
    response = await client.post("/api/v1/tasks", json={
        "id": task_id, "name": task_id, "schedule": HOURLY, "site_id": site, "enabled": enabled,
        "action": "projections.rebuild", "payload": {"name": "plugins"}})
    assert response.status_code == 201, response.text
    return task_id


async def status_of(client, task_id: str) -> str:
    return (await client.get(f"/api/v1/tasks/{task_id}?consistent=true")).json()["status"]


async def test_pause_and_resume_a_sites_tasks_and_list_them(world, cli) -> None:
    client = world["client"]
    site = f"site-{uuid.uuid4().hex[:6]}"
    mine = [await create(client, site), await create(client, site)]
    other = await create(client, None)
    await client.get("/api/v1/tasks?consistent=true")

    code, out, _ = await cli("pause", "--site", site, "--reason", "maintenance window")
    assert code == 0, out
    assert sorted(line.split(":")[0] for line in out.splitlines()) == sorted(mine)
    assert [await status_of(client, t) for t in mine] == ["paused", "paused"]
    assert await status_of(client, other) == "active"
    events = (await client.get("/api/v1/events", params={"stream": f"task:{mine[0]}"})).json()["items"]
    paused = [e for e in events if e["event_type"] == "Task.Paused"]
    assert paused[0]["payload"]["reason"] == "maintenance window"
    assert paused[0]["metadata"]["actor"] == f"cli:{getpass.getuser()}"

    code, out, _ = await cli("list", "--site", site)
    assert code == 0
    header, *lines = out.splitlines()
    assert header.split()[:3] == ["ID", "SITE", "STATUS"]
    assert sorted(line.split()[0] for line in lines) == sorted(mine)
    assert all(line.split()[1:3] == [site, "paused"] and "every 3600s" in line for line in lines)

    code, out, _ = await cli("resume", mine[0])
    assert code == 0 and await status_of(client, mine[0]) == "active"

    code, out, _ = await cli("list", "--global")
    assert other in out and mine[0] not in out


async def test_run_now_is_executed_by_a_serving_replica(world, cli) -> None:
    task_id = await create(world["client"], None, enabled=False)

    code, out, err = await cli("run", task_id, "--reason", "by hand", "--wait", "30")

    assert code == 0, (out, err)
    assert out.splitlines()[-1].endswith("succeeded"), out


async def test_an_unknown_task_is_reported_and_the_exit_code_says_so(cli) -> None:
    code, _, err = await cli("pause", "no-such-task")

    assert code == 1 and "no-such-task" in err and "TASK_NOT_FOUND" in err
    code, _, err = await cli("resume")
    assert code == 2 and "--site" in err
