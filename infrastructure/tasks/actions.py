"""The action registry: what a task can target. Built in: rebuild a projection, call an allow-listed
URL, publish a message to a NATS subject, verify the audit log, archive a site's compliance report.
Open to more (`register`): the plugin runtime will add the tools of enabled plugins; tests add their own."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from jsonschema import Draft202012Validator

from application.tasks.ports import RunContext
from domain.tasks.errors import TaskInvalid

Run = Callable[[dict[str, Any], RunContext], Awaitable[str]]
Check = Callable[[dict[str, Any]], None]


@dataclass
class BuiltAction:
    name: str
    schema: dict[str, Any]
    run: Run
    check: Check | None = None  # beyond the schema (an URL's host against the allow-list)
    for_sites: bool = False  # runs for the task's site: only a task with a site may target it
    validator: Any = field(init=False)

    def __post_init__(self) -> None:
        Draft202012Validator.check_schema(self.schema)
        self.validator = Draft202012Validator(self.schema)


class Registry:
    def __init__(self) -> None:
        self.actions: dict[str, BuiltAction] = {}

    def register(self, name: str, schema: dict[str, Any], run: Run, check: Check | None = None, *, for_sites: bool = False) -> None:
        self.actions[name] = BuiltAction(name, schema, run, check, for_sites)

    def names(self) -> list[str]:
        return sorted(self.actions)

    def _get(self, name: str) -> BuiltAction:
        action = self.actions.get(name)
        if action is None:
            raise TaskInvalid(f"action {name[:128]!r} is not registered (known: {', '.join(self.names())})", field="action")
        return action

    def check(self, action: str, payload: dict[str, Any], site_id: str | None = None) -> None:
        found = self._get(action)
        if found.for_sites and site_id is None:
            raise TaskInvalid(f"action {action} runs for a site: the task needs a site_id", field="site_id")
        error = next(iter(sorted(found.validator.iter_errors(payload), key=lambda e: list(e.path))), None)
        if error is not None:
            where = ".".join(["payload", *(str(p) for p in error.absolute_path)])
            raise TaskInvalid(f"{where}: {error.message[:300]}", field=where)
        if found.check is not None:
            found.check(payload)

    async def run(self, action: str, payload: dict[str, Any], run: RunContext) -> str:
        found = self._get(action)
        found.check(payload) if found.check is not None else None
        return await found.run(payload, run)


# -- call a URL ------------------------------------------------------------------------------------

HTTP_SCHEMA = {
    "type": "object",
    "required": ["url"],
    "additionalProperties": False,
    "properties": {
        "url": {"type": "string", "maxLength": 2048},
        "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]},
        "headers": {"type": "object", "maxProperties": 32,
                    "additionalProperties": {"type": "string", "maxLength": 1024}},
        "body": {"type": "string", "maxLength": 65536},
        "timeout": {"type": "number", "minimum": 0.1, "maximum": 300},
    },
}


@dataclass(frozen=True)
class AllowList:
    """Hosts (`host` or `host:port`, lower case) an `http.request` task may call; empty: none."""

    entries: frozenset[str]

    @classmethod
    def parse(cls, raw: str) -> AllowList:
        return cls(frozenset(e.strip().lower() for e in raw.split(",") if e.strip()))

    def check(self, payload: dict[str, Any]) -> None:
        parts = urlsplit(payload.get("url", ""))
        host = (parts.hostname or "").lower()
        if parts.scheme not in ("http", "https") or not host or parts.username or parts.password:
            raise TaskInvalid("payload.url must be an http(s) URL without credentials", field="payload.url")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise TaskInvalid("payload.url has an invalid port", field="payload.url") from None
        if host not in self.entries and f"{host}:{port}" not in self.entries:
            raise TaskInvalid(f"payload.url: host {host}:{port} is not in CHARTER_TASK_URL_ALLOWLIST",
                              field="payload.url")


def http_request(allow: AllowList) -> Run:
    async def run(payload: dict[str, Any], ctx: RunContext) -> str:
        allow.check(payload)  # again at run time: the allow-list may have shrunk since the task was made
        timeout = min(float(payload.get("timeout", 10.0)), ctx.timeout)
        # Redirects are not followed: a redirect could lead outside the allow-list.
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as client:
            response = await client.request(payload.get("method", "GET"), payload["url"],
                                            headers=payload.get("headers") or {},
                                            content=(payload.get("body") or "").encode() or None)
        if response.status_code >= 400:
            raise RuntimeError(f"HTTP {response.status_code}")
        return f"HTTP {response.status_code}, {len(response.content)} bytes"

    return run


# -- publish to NATS -------------------------------------------------------------------------------

PUBLISH_SCHEMA = {
    "type": "object",
    "required": ["subject"],
    "additionalProperties": False,
    "properties": {
        "subject": {"type": "string", "maxLength": 255, "pattern": "^[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*$"},
        "data": {"type": "string", "maxLength": 65536},
    },
}


def publish_check(reserved: str) -> Check:
    def check(payload: dict[str, Any]) -> None:
        subject = payload.get("subject", "")
        if subject == reserved or subject.startswith(reserved + "."):
            raise TaskInvalid(f"payload.subject: {reserved}.> carries the event log; a task may not publish there",
                              field="payload.subject")

    return check


def nats_publish(connect: Callable[[], Awaitable[Any]]) -> Run:
    async def run(payload: dict[str, Any], ctx: RunContext) -> str:
        nc = await connect()
        data = (payload.get("data") or "").encode()
        await nc.publish(payload["subject"], data, headers={"Charter-Task-Run": ctx.run_id})
        await nc.flush()
        return f"published {len(data)} bytes to {payload['subject']}"

    return run


# -- rebuild a projection --------------------------------------------------------------------------

REBUILD_SCHEMA = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {"name": {"type": "string", "maxLength": 64}},
}


def rebuild_projection(names: list[str], rebuild: Callable[[str], Awaitable[int]]) -> tuple[Run, Check]:
    def check(payload: dict[str, Any]) -> None:
        if payload.get("name") not in names:
            raise TaskInvalid(f"payload.name must be one of {', '.join(sorted(names))}", field="payload.name")

    async def run(payload: dict[str, Any], ctx: RunContext) -> str:
        replayed = await rebuild(payload["name"])
        return f"rebuilt {payload['name']} from {replayed} events"

    return run, check


# -- verify the audit log --------------------------------------------------------------------------

AUDIT_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "from_checkpoint": {"type": "integer", "minimum": 0, "maximum": 2_147_483_647},
        "max_events": {"type": "integer", "minimum": 1, "maximum": 1_000_000_000},
    },
}
Verify = Callable[[int, "int | None"], Awaitable[tuple[Any, Any]]]


def audit_verify(verify: Verify) -> Run:
    """Hash chains, checkpoints and signatures from just after `from_checkpoint` (default: the start),
    over the whole log or at least `max_events` events; findings fail the run (naming the first)."""

    async def run(payload: dict[str, Any], ctx: RunContext) -> str:
        report, progress = await verify(payload.get("from_checkpoint", 0), payload.get("max_events"))
        checked = (f"{report.events} events in {report.streams} streams, {report.checkpoints} checkpoints"
                   f" (sealed to position {report.sealed_to_position}, {report.unsealed} after it)")
        if not report.ok:
            first = report.findings[0].line() if report.findings else "see charter audit verify"
            raise RuntimeError(f"{report.findings_total} findings in {checked}; first: {first}")
        more = "" if progress.complete else f"; the log goes on after checkpoint {progress.last_checkpoint}"
        return f"verified {checked}{more}"

    return run


# -- archive a compliance report -------------------------------------------------------------------

REPORT_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"format": {"enum": ["json", "csv", "html"]}},
}
ArchiveReport = Callable[[str, str, RunContext], Awaitable[Any]]


def compliance_report(archive: ArchiveReport) -> Run:
    """The task's site's compliance report as of the run, rendered and kept in the report archive
    (`GET /api/v1/site/{site_id}/reports/archive`); the summary names the archived report."""

    async def run(payload: dict[str, Any], ctx: RunContext) -> str:
        if ctx.site_id is None:  # refused when the task was made; a task from before may still have none
            raise RuntimeError("reports.compliance runs for a site: the task has no site_id")
        kept = await archive(ctx.site_id, payload.get("format", "json"), ctx)
        return (f"archived report {kept.id} of site {ctx.site_id} as of {kept.as_of} (position {kept.position}),"
                f" {kept.format}, {kept.size} bytes, sha256 {kept.sha256}")

    return run


def builtin_registry(
    allow: AllowList, *, projections: list[str] | None = None, rebuild: Callable[[str], Awaitable[int]] | None = None,
    nats: Callable[[], Awaitable[Any]] | None = None, reserved_subject: str = "charter.events",
    verify: Verify | None = None, archive_report: ArchiveReport | None = None,
) -> Registry:
    registry = Registry()
    registry.register("http.request", HTTP_SCHEMA, http_request(allow), allow.check)
    if nats is not None:
        registry.register("nats.publish", PUBLISH_SCHEMA, nats_publish(nats), publish_check(reserved_subject))
    if rebuild is not None and projections:
        run, check = rebuild_projection(projections, rebuild)
        registry.register("projections.rebuild", REBUILD_SCHEMA, run, check)
    if verify is not None:
        registry.register("audit.verify", AUDIT_SCHEMA, audit_verify(verify))
    if archive_report is not None:
        registry.register("reports.compliance", REPORT_SCHEMA, compliance_report(archive_report), for_sites=True)
    return registry
