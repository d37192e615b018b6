"""Hostile input on the tasks routes: every bad field answers 4xx naming it, never a 500; the URL action
never reaches a host outside the allow-list; a task cannot publish into the event log's subjects."""

from __future__ import annotations

import pytest


GOOD = {"name": "x", "schedule": {"kind": "interval", "every": 60}, "action": "projections.rebuild",
        "payload": {"name": "plugins"}}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**GOOD, "schedule": {"kind": "cron", "cron": "not a cron"}}, "schedule.cron"),
        ({**GOOD, "schedule": {"kind": "cron", "cron": "0 3 * * *", "timezone": "Nowhere/City"}}, "schedule.timezone"),
        ({**GOOD, "schedule": {"kind": "interval", "every": 0.001}}, "schedule.every"),
        ({**GOOD, "schedule": {"kind": "weekly"}}, "schedule.kind"),
        ({**GOOD, "schedule": {"kind": "cron", "cron": "0 3 * * *", "align": True}}, "schedule.align"),
        ({**GOOD, "schedule": {"kind": "interval", "every": 60, "align": "yes"}}, "schedule.align"),
        ({**GOOD, "name": "n" * 201}, "name"),
        ({**GOOD, "action": "no.such.action"}, "action"),
        ({**GOOD, "action": "http.request", "payload": {"url": "http://169.254.169.254/latest"}}, "payload.url"),
        ({**GOOD, "action": "http.request", "payload": {"url": "http://user:pw@localhost/"}}, "payload.url"),
        ({**GOOD, "action": "http.request", "payload": {"url": "file:///etc/passwd"}}, "payload.url"),
        ({**GOOD, "payload": {"name": "no-such-projection"}}, "payload.name"),
        ({**GOOD, "id": "bad id/.."}, "id"),
        ({**GOOD, "site_id": "bad site!"}, "site_id"),
        ({**GOOD, "timeout": 0}, "timeout"),
        ({**GOOD, "retry": {"max_attempts": 1000}}, "retry.max_attempts"),
        ({**GOOD, "catch_up": "sometimes"}, "catch_up"),
        ({**GOOD, "extra": 1}, "extra"),
        ({**GOOD, "action": "audit.verify", "payload": {"max_events": 0}}, "payload.max_events"),
        ({**GOOD, "action": "audit.verify", "payload": {"from_checkpoint": -1}}, "payload.from_checkpoint"),
        ({**GOOD, "action": "audit.verify", "payload": {"export": "/etc/passwd"}}, "payload"),
        ({**GOOD, "action": "reports.compliance", "site_id": "plant-1", "payload": {"format": "pdf"}}, "payload.format"),
        ({**GOOD, "action": "reports.compliance", "site_id": "plant-1", "payload": {"site_id": "another"}}, "payload"),
        ({**GOOD, "action": "reports.compliance", "payload": {"format": "json"}}, "site_id"),
    ],
)
async def test_a_bad_field_is_refused_by_name(client, body, field) -> None:
    response = await client.post("/api/v1/tasks", json=body)

    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["details"].get("field") == field, response.text


@pytest.mark.parametrize("path", ["/api/v1/tasks/" + "x" * 5000, "/api/v1/tasks/%00/run", "/api/v1/tasks/../../etc"])
async def test_odd_task_ids_answer_4xx(client, path) -> None:
    for method in ("GET", "POST"):
        response = await client.request(method, path)
        assert 400 <= response.status_code < 500, (method, path, response.status_code)


@pytest.mark.parametrize(
    "query", ["limit=1000", "skip=-1", "sort_by=password", "status=exploded", "sort_order=sideways",
              "site_id=" + "s" * 500],
)
async def test_bad_list_queries_answer_400(client, query) -> None:
    response = await client.get(f"/api/v1/tasks?{query}")

    assert response.status_code == 400, response.text


async def test_runs_history_refuses_bad_filters(client) -> None:
    created = await client.post("/api/v1/tasks", json={**GOOD, "enabled": False})
    task_id = created.json()["id"]
    for query in ("status=nope", "since=yesterday", "limit=0"):
        response = await client.get(f"/api/v1/tasks/{task_id}/runs?{query}")
        assert response.status_code == 400, (query, response.text)


async def test_a_caller_without_a_token_cannot_list_or_create(client) -> None:
    bare = {"Authorization": ""}
    assert (await client.get("/api/v1/tasks", headers=bare)).status_code == 401
    assert (await client.post("/api/v1/tasks", json=GOOD, headers=bare)).status_code == 401


@pytest.mark.parametrize(
    ("path", "field"),
    [("/api/v1/tasks/" + "x" * 65, "task_id"), ("/api/v1/tasks/bad%20id", "task_id"),
     ("/api/v1/tasks/.hidden", "task_id"), ("/api/v1/tasks/" + "x" * 129, "task_id")],
)
async def test_a_malformed_or_over_long_task_id_is_a_400_naming_it(client, path, field) -> None:
    for method, suffix in (("GET", ""), ("GET", "/runs"), ("POST", "/run"), ("POST", "/pause"), ("POST", "/resume"),
                           ("DELETE", ""), ("PUT", "")):
        body = {} if method != "PUT" else GOOD
        response = await client.request(method, path + suffix, json=body if method != "GET" else None)
        assert response.status_code == 400, (method, path + suffix, response.text)
        assert response.json()["error"]["details"]["field"] == field, response.text


async def test_a_task_id_is_never_cut_short_to_another_task(client) -> None:
    """A 65-character id must not reach the task named by its first 64 characters."""
    task_id = "t" * 64
    await client.post("/api/v1/tasks", json={**GOOD, "id": task_id, "enabled": False})

    response = await client.post(f"/api/v1/tasks/{task_id}x/pause")

    assert response.status_code == 400, response.text
    events = await client.get("/api/v1/events", params={"stream": f"task:{task_id}", "limit": 10})
    assert [e["event_type"] for e in events.json()["items"]] == ["Task.Created"]


@pytest.mark.parametrize("run_id", ["not-a-uuid", "0" * 37, "%7B00000000-0000-0000-0000-000000000000%7D"])
async def test_a_malformed_run_id_is_a_400_naming_it(client, run_id) -> None:
    response = await client.post(f"/api/v1/tasks/some-task/runs/{run_id}/cancel")

    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"]["field"] == "run_id", response.text


@pytest.mark.parametrize("operation", ["run", "pause", "resume"])
@pytest.mark.parametrize(
    ("body", "field"),
    [({"reason": "r" * 4001}, "reason"), ({"reason": 5}, "reason"), ({"reason": "x", "payload": {}}, "payload"),
     ([], "body")],
)
async def test_a_bad_reason_body_is_refused_and_nothing_is_written(client, operation, body, field) -> None:
    created = await client.post("/api/v1/tasks", json={**GOOD, "enabled": False})
    task_id = created.json()["id"]

    response = await client.post(f"/api/v1/tasks/{task_id}/{operation}", json=body)

    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"]["field"] == field, response.text
    events = await client.get("/api/v1/events", params={"stream": f"task:{task_id}", "limit": 10})
    assert [e["event_type"] for e in events.json()["items"]] == ["Task.Created"]


async def test_a_delete_with_a_bad_body_deletes_nothing(client) -> None:
    created = await client.post("/api/v1/tasks", json={**GOOD, "enabled": False})
    task_id = created.json()["id"]

    for body in ({"reason": "r" * 4001}, {"why": "x"}):
        response = await client.request("DELETE", f"/api/v1/tasks/{task_id}", json=body)
        assert response.status_code == 400, response.text
    response = await client.request("DELETE", f"/api/v1/tasks/{task_id}", content=b"not json",
                                    headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["details"]["field"] == "body", response.text
    assert (await client.get(f"/api/v1/tasks/{task_id}?consistent=true")).json()["status"] == "paused"


async def test_an_interval_schedule_runs_at_its_phase_unless_aligned(client) -> None:
    from datetime import datetime

    from domain.tasks.schedule import Schedule, phase_ms

    for task_id, align in (("phased-hourly", False), ("aligned-hourly", True)):
        schedule = {"kind": "interval", "every": 3600, **({"align": True} if align else {})}
        created = await client.post("/api/v1/tasks", json={**GOOD, "id": task_id, "schedule": schedule})
        assert created.status_code == 201, created.text
        task = (await client.get(f"/api/v1/tasks/{task_id}?consistent=true")).json()
        assert task["schedule"].get("align", False) is align
        next_run = datetime.fromisoformat(task["next_run"])
        offset = round(next_run.timestamp() * 1000) % 3_600_000
        assert offset == phase_ms(Schedule(kind="interval", every=3600, align=align), task_id)
        assert (offset == 0) is align or task_id == "phased-hourly" and offset != 0
