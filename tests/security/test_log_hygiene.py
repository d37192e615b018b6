"""Log output: a planted password and a planted secret sent to every write route never show in it, nor
do access tokens and stream tickets sent in URLs; log lines carry the trace id and span id of the span
they were written in.

The server is a real `charter serve` process logging at debug level and printing its spans too
(`OTEL_TRACES_EXPORTER=console`), so the grep covers structlog, uvicorn, stdlib logging, the sandbox
workers and every span attribute. Every write operation of the OpenAPI document must be in OPERATIONS:
a new write route fails this test until it is sent its planted values too.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.e2e.access_kit import unique_email, unique_name
from tests.e2e.plugin_kit import PLUGINS, install, manifest, unique_id
from tests.security.charter_process import ADMIN_EMAIL, ADMIN_PASSWORD, Served, charter_process
from tests.waiting import eventually

PASSWORD = f"PLANTED-PASSWORD-{uuid.uuid4().hex}"
SECRET = f"PLANTED-SECRET-{uuid.uuid4().hex}"
HOSTILE = {"password": PASSWORD, "secret": SECRET, "reason": SECRET, "token": SECRET}  # unknown fields: 400
TRACE_ID = uuid.uuid4().hex
CALLER_SPAN = uuid.uuid4().hex[:16]
CONFIG_SCHEMA = {
    "type": "object",
    "properties": {
        "token": {"type": "string", "secret": True},
        "password": {"type": "string", "format": "password"},
        "host": {"type": "string"},
    },
}

# operationId: (method, path, a plausible body carrying the planted values, or None for the hostile one only).
# Run in this order: the destructive ones last.
SITE_ID = unique_id("planted-site")
SITE_CONFIG = {"token": SECRET, "password": PASSWORD, "host": "db"}
EXTENSION = "/api/v1/site/{site_id}/extensions/{plugin_id}"
TASK_ID = unique_id("planted-task")
TASK = {"name": "Planted", "schedule": {"kind": "interval", "every": 3600}, "action": "nats.publish",
        "payload": {"subject": "planted.task", "data": "x"}, "enabled": False}
OPERATIONS: dict[str, tuple[str, str, dict[str, Any] | None]] = {
    "createSite": ("POST", "/api/v1/sites", {"site_id": SITE_ID, "name": "Planted", "metadata": {"note": "planted"}}),
    "validateExtension": ("POST", EXTENSION + "/validate", {"configuration": SITE_CONFIG}),
    "validateExtensionCombination": ("POST", "/api/v1/site/{site_id}/extensions/validate-combination", {"extensions": [{"id": "{plugin_id}"}]}),
    "activateExtension": ("POST", EXTENSION + "/activate", {"configuration": SITE_CONFIG, "reason": SECRET}),
    "reconfigureExtension": ("PUT", EXTENSION + "/configuration", {"configuration": {**SITE_CONFIG, "host": "db2"}, "reason": SECRET}),
    "recordSignoff": ("POST", EXTENSION + "/signoffs", {"aspect": "esig", "notes": SECRET, "password": PASSWORD}),
    "deactivateExtension": ("DELETE", EXTENSION, {"reason": SECRET}),
    "activateExtensionAtSites": ("POST", "/api/v1/sites/extensions/{plugin_id}/activate", {"site_ids": [SITE_ID], "configuration": SITE_CONFIG}),
    "deactivateExtensionAtSites": ("POST", "/api/v1/sites/extensions/{plugin_id}/deactivate", {"site_ids": [SITE_ID], "reason": SECRET}),
    "setPluginConfig": ("PUT", "/api/v1/plugins/{plugin_id}/config", {"config": {"token": SECRET, "password": PASSWORD, "host": "db"}}),
    "declassifyPluginConfig": ("POST", "/api/v1/plugins/{plugin_id}/config/declassify", {"fields": ["token"], "reason": SECRET}),
    "disablePlugin": ("POST", "/api/v1/plugins/{plugin_id}/disable", {"reason": SECRET}),
    "enablePlugin": ("POST", "/api/v1/plugins/{plugin_id}/enable", {"reason": SECRET}),
    "restartPlugin": ("POST", "/api/v1/plugins/{plugin_id}/restart", {"reason": SECRET}),
    "reloadPlugin": ("POST", "/api/v1/plugins/{plugin_id}/reload", {"reason": SECRET}),
    "updatePlugin": ("PUT", "/api/v1/plugins/{plugin_id}", {"source": "entrypoint", "entrypoint": f"https://user:{PASSWORD}@example.invalid/p"}),
    "rollBackPlugin": ("POST", "/api/v1/plugins/{plugin_id}/rollback", {"reason": SECRET}),
    "login": ("POST", "/api/v1/auth/login", {"username": ADMIN_EMAIL, "password": PASSWORD}),
    "register": ("POST", "/api/v1/auth/register", {"email": "{email}", "password": PASSWORD}),
    "refreshToken": ("POST", "/api/v1/auth/refresh", {"refresh_token": SECRET}),
    "createUser": ("POST", "/api/v1/admin/users", {"email": "{email}", "password": PASSWORD, "full_name": "Planted"}),
    "deactivateUser": ("POST", "/api/v1/admin/users/{user_id}/deactivate", {"reason": SECRET}),
    "activateUser": ("POST", "/api/v1/admin/users/{user_id}/activate", {"reason": SECRET}),
    "createPermission": ("POST", "/api/v1/admin/permissions", {"name": "{permission}", "description": SECRET}),
    "createRole": ("POST", "/api/v1/admin/roles", {"name": "{role}", "description": SECRET, "permissions": []}),
    "updateRole": ("PUT", "/api/v1/admin/roles/{role_id}", {"description": SECRET}),
    "grantRole": ("POST", "/api/v1/admin/users/{user_id}/roles/{role_id}", {"reason": SECRET}),
    "revokeRole": ("DELETE", "/api/v1/admin/users/{user_id}/roles/{role_id}", {"reason": SECRET}),
    "deleteRole": ("DELETE", "/api/v1/admin/roles/{role_id}", None),
    "createTask": ("POST", "/api/v1/tasks", {"id": TASK_ID, **TASK}),
    "updateTask": ("PUT", "/api/v1/tasks/" + TASK_ID, {**TASK, "name": "Planted again"}),
    "pauseTask": ("POST", "/api/v1/tasks/" + TASK_ID + "/pause", {"reason": SECRET}),
    "resumeTask": ("POST", "/api/v1/tasks/" + TASK_ID + "/resume", {"reason": SECRET}),
    "runTask": ("POST", "/api/v1/tasks/" + TASK_ID + "/run", {"reason": SECRET}),
    "cancelTaskRun": ("POST", "/api/v1/tasks/" + TASK_ID + "/runs/" + str(uuid.UUID(int=0x7A5C)) + "/cancel", {"reason": SECRET}),
    "deleteTask": ("DELETE", "/api/v1/tasks/" + TASK_ID, {"reason": SECRET}),
    "uninstallPlugin": ("DELETE", "/api/v1/plugins/{plugin_id}", {"reason": SECRET}),
    "installPlugin": ("POST", "/api/v1/plugins/install", None),  # multipart: sent by the fixture
    "createStreamTicket": ("POST", "/api/v1/events/stream-tickets", {"stream_type": "plugin"}),
    "resetPassword": ("POST", "/api/v1/admin/users/{user_id}/reset-password", {"temporary_password": PASSWORD}),
    "endUserSession": ("DELETE", "/api/v1/admin/users/{user_id}/sessions/{session_id}", {"reason": SECRET}),
    "endUserSessions": ("DELETE", "/api/v1/admin/users/{user_id}/sessions", {"reason": SECRET}),
    "updateMe": ("PUT", "/api/v1/auth/me", {"full_name": "Planted Administrator"}),
    # a wrong current password (the planted one) and a planted new one: refused, neither logged
    "changePassword": ("POST", "/api/v1/auth/change-password", {"current_password": PASSWORD, "new_password": PASSWORD + "-new"}),
    "endMySession": ("DELETE", "/api/v1/auth/sessions/{session_id}", {"reason": SECRET}),
    "endMyOtherSessions": ("DELETE", "/api/v1/auth/sessions", {"reason": SECRET}),
    "logout": ("POST", "/api/v1/auth/logout", {"refresh_token": SECRET}),
}


@pytest.fixture(scope="module")
async def served(databases, nats_url, jetstream_streams, tmp_path_factory) -> AsyncIterator[Served]:
    with pytest.MonkeyPatch.context() as env:  # the served process prints its spans into its log too
        env.setenv("OTEL_TRACES_EXPORTER", "console")
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        async with charter_process(
            await databases.create("loghygiene"), nats_url, jetstream_streams.new("loghygiene"), tmp_path_factory.mktemp("charter-logs")
        ) as server:
            yield server


@pytest.fixture(scope="module")
async def planted(served: Served) -> dict[str, Any]:
    """Every write route sent the planted password and secret; answers what was sent where."""
    answers: dict[str, list[int]] = {}
    documented = await write_operations(served)  # before `logout` ends the administrator's session
    async with httpx.AsyncClient(base_url=served.url, headers=served.headers, timeout=30) as http:
        plugin_id = unique_id("planted")
        caller = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
        response = await install(
            http, manifest(plugin_id, config_schema=CONFIG_SCHEMA), config={"token": SECRET, "password": PASSWORD}, headers={"traceparent": caller}
        )
        assert response.status_code == 201, response.text
        hostile_install = await install(http, manifest(unique_id("planted")), config=json.dumps({**HOSTILE, "x": [SECRET] * 3})[:-1])
        answers["installPlugin"] = [response.status_code, hostile_install.status_code]
        user = await http.post("/api/v1/admin/users", json={"email": unique_email("planted"), "password": PASSWORD})
        assert user.status_code == 201, user.text
        role = await http.post("/api/v1/admin/roles", json={"name": unique_name("planted"), "permissions": ["plugins:read"]})
        assert role.status_code == 201, role.text
        ids = {
            "plugin_id": plugin_id, "user_id": user.json()["id"], "role_id": role.json()["id"], "site_id": SITE_ID,
            "session_id": "planted-no-such-session",
        }  # fmt: skip
        for operation, (method, path, body) in OPERATIONS.items():
            if operation == "installPlugin":
                continue
            url = path.format(**ids)
            statuses = []
            if body is not None:
                filled = json.loads(
                    json.dumps(body).replace('"{email}"', json.dumps(unique_email("planted"))).replace('"{plugin_id}"', json.dumps(plugin_id))
                    .replace('"{role}"', json.dumps(unique_name("planted"))).replace('"{permission}"', json.dumps(f"planted:{uuid.uuid4().hex[:8]}"))
                )
                statuses.append((await http.request(method, url, json=filled)).status_code)
            statuses.append((await http.request(method, url, json=HOSTILE)).status_code)
            statuses.append((await http.request(method, url, content=json.dumps(HOSTILE)[:-3], headers={"content-type": "application/json"})).status_code)
            answers[operation] = statuses
        form = await http.post("/api/v1/auth/login", data={"username": ADMIN_EMAIL, "password": PASSWORD})
        answers["login"].append(form.status_code)
    return {"answers": answers, "plugin_id": plugin_id, "documented": documented}


async def write_operations(served: Served) -> set[str]:
    async with httpx.AsyncClient(base_url=served.url, headers=served.headers) as http:
        document = (await http.get("/schema/openapi.json")).json()
    return {
        op["operationId"]
        for item in document["paths"].values()
        for method, op in item.items()
        if method in ("post", "put", "patch", "delete")
    }


def console_spans(text: str) -> list[dict[str, Any]]:
    """The spans ConsoleSpanExporter printed (indented JSON objects between log lines)."""
    spans, block = [], None
    for line in text.splitlines():
        if line == "{":
            block = [line]
        elif block is not None:
            block.append(line)
            if line == "}":
                spans.append(json.loads("\n".join(block)))
                block = None
    return spans


def log_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for line in text.splitlines():
        if line.startswith('{"'):
            try:
                lines.append(json.loads(line))
            except ValueError:
                pass
    return lines


async def test_every_write_route_was_sent_the_planted_values(served: Served, planted: dict[str, Any]) -> None:
    assert set(OPERATIONS) == planted["documented"]
    assert set(planted["answers"]) == set(OPERATIONS)
    failed = {op: statuses for op, statuses in planted["answers"].items() if any(s >= 500 for s in statuses)}
    assert not failed, f"planted values made these fail instead of answering 4xx: {failed}"


async def test_no_log_line_or_span_holds_the_planted_password_or_secret(served: Served, planted: dict[str, Any]) -> None:
    async def spans_printed() -> bool:
        return any(s["name"] == "command InstallPlugin" for s in console_spans(served.log_text()))

    await eventually(spans_printed, 30, "the served process printed its spans")
    text = served.log_text()
    assert log_lines(text), "the server logged nothing: the grep would prove nothing"
    assert PASSWORD not in text
    assert SECRET not in text


async def test_log_lines_carry_the_trace_and_span_of_their_request(served: Served, planted: dict[str, Any]) -> None:
    async def printed() -> bool:
        return any(s["name"] == "POST /api/v1/plugins/install" for s in console_spans(served.log_text()))

    await eventually(printed, 30, "the install's server span was printed")
    text = served.log_text()
    requests = [
        line for line in log_lines(text)
        if line.get("event") == "request" and line.get("path") == "/api/v1/plugins/install" and line.get("trace_id") == TRACE_ID
    ]
    assert len(requests) == 1, "the install's request log line does not carry the caller's trace id"
    spans = {s["context"]["span_id"][2:]: s for s in console_spans(text) if s["context"]["trace_id"][2:] == TRACE_ID}
    logged = spans.get(requests[0]["span_id"])
    assert logged is not None and logged["name"] == "POST /api/v1/plugins/install"
    assert logged["parent_id"][2:] == CALLER_SPAN
    assert {"command InstallPlugin", "eventstore append"} <= {s["name"] for s in spans.values()}


async def test_no_access_token_or_stream_ticket_from_a_url_reaches_a_log_line_or_span(served: Served, planted: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        login = await http.post("/api/v1/auth/login", json={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        token = login.json()["access_token"]
        issued = await http.post("/api/v1/events/stream-tickets", json={}, headers={"Authorization": f"Bearer {token}"})
        ticket = issued.json()["ticket"]
        async with http.stream("GET", "/api/v1/events/stream", params={"ticket": ticket}) as stream:
            assert stream.status_code == 200
            await anext(stream.aiter_raw())
        used_again = await http.get("/api/v1/events/stream", params={"ticket": ticket})
        in_the_url = await http.get("/api/v1/events/stream", params={"access_token": token})
        elsewhere = await http.get("/api/v1/plugins", params={"access_token": token, "ticket": ticket, "limit": 5})
    assert (used_again.status_code, in_the_url.status_code, elsewhere.status_code) == (401, 401, 401)

    async def stream_span_printed() -> bool:
        return any(s["name"] == "GET /api/v1/events/stream" for s in console_spans(served.log_text()))

    await eventually(stream_span_printed, 30, "the stream's server span was printed")
    text = served.log_text()
    assert token not in text and ticket not in text
    assert token.split(".")[2] not in text  # not even the signature alone
    logged = [line for line in log_lines(text) if line.get("event") == "request" and "[redacted]" in line.get("query", "")]
    assert len(logged) >= 4, "the request lines of those calls name their (redacted) query"
