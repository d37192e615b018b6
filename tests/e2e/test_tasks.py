"""Tasks through HTTP: create, read, run now (the run recorded and executed), pause, resume, history,
and site scoping (a site's administrator sees only its tasks)."""

from __future__ import annotations

import asyncio
import uuid

from tests.e2e.access_kit import account_with
from tests.e2e.plugin_kit import assert_error

EVERY_HOUR = {"kind": "interval", "every": 3600}


def new_id(prefix: str = "task") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_task_lifecycle_and_a_manual_run(client) -> None:
    task_id = new_id()
    created = await client.post("/api/v1/tasks", json={
        "id": task_id, "name": "Rebuild plugins", "schedule": {"kind": "cron", "cron": "30 3 * * *",
                                                                "timezone": "Europe/Bucharest"},
        "action": "projections.rebuild", "payload": {"name": "plugins"}})
    assert created.status_code == 201, created.text
    assert created.headers["ETag"] == '"1"'

    task = (await client.get(f"/api/v1/tasks/{task_id}?consistent=true")).json()
    assert task["status"] == "active" and task["next_run"] is not None and task["success_count"] == 0

    run = await client.post(f"/api/v1/tasks/{task_id}/run")
    assert run.status_code == 202, run.text
    for _ in range(100):
        runs = (await client.get(f"/api/v1/tasks/{task_id}/runs?consistent=true")).json()
        if runs["items"] and runs["items"][0]["status"] == "succeeded":
            break
        await asyncio.sleep(0.1)
    item = runs["items"][0]
    assert item["status"] == "succeeded" and item["trigger"] == "manual" and item["output"].startswith("rebuilt plugins")

    assert (await client.post(f"/api/v1/tasks/{task_id}/pause", json={"reason": "maintenance"})).status_code == 200
    assert (await client.get(f"/api/v1/tasks/{task_id}?consistent=true")).json()["status"] == "paused"
    assert (await client.post(f"/api/v1/tasks/{task_id}/resume")).status_code == 200
    task = (await client.get(f"/api/v1/tasks/{task_id}?consistent=true")).json()
    assert task["status"] == "active" and task["success_count"] == 1

    updated = await client.put(f"/api/v1/tasks/{task_id}", json={"name": "Hourly", "schedule": EVERY_HOUR,
                                                                  "action": "projections.rebuild",
                                                                  "payload": {"name": "plugins"}})
    assert updated.status_code == 200, updated.text
    assert (await client.delete(f"/api/v1/tasks/{task_id}")).status_code == 200
    listed = (await client.get("/api/v1/tasks?consistent=true&limit=100")).json()
    assert task_id not in [t["id"] for t in listed["items"]]


async def test_a_site_administrator_sees_only_the_tasks_of_its_site(client) -> None:
    mine, other = new_id("mine"), new_id("other")
    for task_id, site in ((mine, "site-a"), (other, "site-b")):
        response = await client.post("/api/v1/tasks", json={
            "id": task_id, "name": task_id, "schedule": EVERY_HOUR, "site_id": site,
            "action": "projections.rebuild", "payload": {"name": "plugins"}, "enabled": False})
        assert response.status_code == 201, response.text
    admin = await account_with(client, ("site-admin", "site-a"))

    listed = (await client.get("/api/v1/tasks?consistent=true&limit=100", headers=admin.headers)).json()
    ids = {t["id"] for t in listed["items"]}
    assert mine in ids and other not in ids
    assert (await client.get(f"/api/v1/tasks/{other}", headers=admin.headers)).status_code == 404
    assert (await client.post(f"/api/v1/tasks/{other}/run", headers=admin.headers)).status_code == 404
    assert (await client.post(f"/api/v1/tasks/{mine}/pause", headers=admin.headers)).status_code == 200


async def events_of(client, stream: str) -> list[dict]:
    response = await client.get("/api/v1/events", params={"stream": stream, "limit": 100})
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def test_the_reasons_given_are_recorded_in_the_events(client) -> None:
    task_id = new_id("why")
    created = await client.post("/api/v1/tasks", json={
        "id": task_id, "name": "Why", "schedule": EVERY_HOUR, "action": "projections.rebuild",
        "payload": {"name": "plugins"}, "enabled": False})
    assert created.status_code == 201, created.text

    run = await client.post(f"/api/v1/tasks/{task_id}/run", json={"reason": "after the outage"})
    assert run.status_code == 202, run.text
    resumed = await client.post(f"/api/v1/tasks/{task_id}/resume", json={"reason": "maintenance over"})
    assert resumed.status_code == 200, resumed.text
    deleted = await client.request("DELETE", f"/api/v1/tasks/{task_id}", json={"reason": "replaced"})
    assert deleted.status_code == 200, deleted.text

    task_events = {e["event_type"]: e["payload"] for e in await events_of(client, f"task:{task_id}")}
    assert task_events["Task.Resumed"]["reason"] == "maintenance over"
    assert task_events["Task.Deleted"]["reason"] == "replaced"
    [requested] = [e for e in await events_of(client, run.json()["stream_id"]) if e["event_type"] == "TaskRun.Requested"]
    assert requested["payload"]["reason"] == "after the outage"


async def test_a_run_is_cancelled_with_a_reason_only_under_its_own_task(client) -> None:
    ids = [new_id("cx"), new_id("cy")]
    for task_id in ids:
        response = await client.post("/api/v1/tasks", json={
            "id": task_id, "name": task_id, "schedule": EVERY_HOUR, "action": "projections.rebuild",
            "payload": {"name": "plugins"}, "enabled": False})
        assert response.status_code == 201, response.text
    run_id = (await client.post(f"/api/v1/tasks/{ids[0]}/run")).json()["id"]

    elsewhere = await client.post(f"/api/v1/tasks/{ids[1]}/runs/{run_id}/cancel", json={"reason": "wrong task"})
    assert elsewhere.status_code == 404 and elsewhere.json()["error"]["code"] == "TASK_RUN_NOT_FOUND", elsewhere.text

    cancelled = await client.post(f"/api/v1/tasks/{ids[0]}/runs/{run_id}/cancel", json={"reason": "not needed"})
    if cancelled.status_code == 200:  # (the run may have finished first: then 409 TASK_RUN_FINISHED)
        events = await events_of(client, f"task-run:{run_id}")
        assert [e["payload"]["reason"] for e in events if e["event_type"] == "TaskRun.Cancelled"] == ["not needed"]
    else:
        assert cancelled.json()["error"]["code"] == "TASK_RUN_FINISHED", cancelled.text


async def finished_run(client, task_id: str) -> dict:
    """Run the task now and wait for the run to end; its history item."""
    run = await client.post(f"/api/v1/tasks/{task_id}/run")
    assert run.status_code == 202, run.text
    for _ in range(200):
        runs = (await client.get(f"/api/v1/tasks/{task_id}/runs?consistent=true")).json()
        if runs["items"] and runs["items"][0]["status"] in ("succeeded", "failed", "timed_out"):
            return runs["items"][0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"the run of {task_id} did not end: {runs}")


async def test_a_task_verifies_the_audit_log(client) -> None:
    task_id = new_id("verify")
    created = await client.post("/api/v1/tasks", json={
        "id": task_id, "name": "Verify the log", "schedule": EVERY_HOUR, "action": "audit.verify", "payload": {},
        "enabled": False})
    assert created.status_code == 201, created.text

    run = await finished_run(client, task_id)

    assert run["status"] == "succeeded", run
    assert run["output"].startswith("verified ") and " events in " in run["output"]


async def test_a_site_task_archives_the_sites_compliance_report(client) -> None:
    from tests.e2e.site_kit import created_site

    site_id = await created_site(client)
    task_id = new_id("report")
    created = await client.post("/api/v1/tasks", json={
        "id": task_id, "name": "Nightly report", "schedule": EVERY_HOUR, "site_id": site_id,
        "action": "reports.compliance", "payload": {"format": "json"}, "enabled": False})
    assert created.status_code == 201, created.text

    run = await finished_run(client, task_id)

    assert run["status"] == "succeeded", run
    listed = await client.get(f"/api/v1/site/{site_id}/reports/archive")
    assert listed.status_code == 200, listed.text
    listed = listed.json()
    assert listed["total"] == 1 and not listed["has_more"]
    [kept] = listed["items"]
    assert kept["site_id"] == site_id and kept["format"] == "json" and kept["task_id"] == task_id
    assert kept["run_id"] == run["id"] and f"archived report {kept['id']}" in run["output"]
    document = await client.get(f"/api/v1/site/{site_id}/reports/archive/{kept['id']}")
    assert document.status_code == 200 and document.headers["content-type"].startswith("application/json")
    assert document.headers["Charter-Report-SHA256"] == kept["sha256"] and len(document.content) == kept["size"]
    # The kept report is the one the log gives again as of the same position, byte for byte.
    again = await client.get(f"/api/v1/site/{site_id}/reports/compliance", params={"as_of": f"position:{kept['position']}"})
    assert again.status_code == 200 and again.content == document.content


async def test_a_report_task_needs_a_site(client) -> None:
    response = await client.post("/api/v1/tasks", json={
        "id": new_id("nosite"), "name": "Report of no site", "schedule": EVERY_HOUR,
        "action": "reports.compliance", "payload": {}})
    assert_error(response, 400, "VALIDATION_FAILED", field="site_id")
