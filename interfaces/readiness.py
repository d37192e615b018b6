"""What `/ready` and `/health` report: each component's check, its reason, and how long it has been so.

`/ready` probes (database round trip, lags) with a time limit and answers 503 when any check fails:
the database is unreachable, NATS is disconnected (relay or SSE hub), the relay is stuck (events
waiting and nothing acknowledged for `ready_relay_stall_seconds`) or lags beyond `ready_max_relay_lag`,
or a projection lags beyond `ready_max_projection_lag`. `/health` (liveness) probes nothing: it shows
the version, the uptime and each component's last known state, so it answers even when all is down.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from infrastructure.stream import unpublishable
from infrastructure.eventlog.availability import DATABASE
from infrastructure.eventlog.projector import checkpoint
from infrastructure.stream.relay import RELAY

if TYPE_CHECKING:
    from interfaces.runtime import Runtime


def charter_version() -> str:
    try:
        return version("charter")
    except PackageNotFoundError:
        return "unknown"


@dataclass
class Check:
    """One component's last observed state."""

    ok: bool = True
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    since: float = field(default_factory=time.time)  # when it last changed between ok and failing
    checked_at: float = 0.0

    def observe(self, ok: bool, reason: str | None = None, **detail: Any) -> None:
        now = time.time()
        if ok != self.ok:
            self.since = now
        self.ok, self.reason, self.detail, self.checked_at = ok, None if ok else reason, detail, now

    def as_dict(self, now: float) -> dict[str, Any]:
        body: dict[str, Any] = {"status": "ok" if self.ok else "failing", **self.detail}
        if self.reason:
            body["reason"] = self.reason
        body["for_seconds"] = round(now - self.since, 1)
        body["checked_seconds_ago"] = round(now - self.checked_at, 1) if self.checked_at else None
        return body


@dataclass
class RelayProgress:
    """When the relay's cursor (shared by every replica) last moved, to tell a stuck relay from a busy one."""

    published: int = -1
    moved_at: float = field(default_factory=time.monotonic)

    def stalled_for(self, published: int) -> float:
        now = time.monotonic()
        if published != self.published:
            self.published, self.moved_at = published, now
        return now - self.moved_at


class Readiness:
    def __init__(self, runtime: "Runtime") -> None:
        self.runtime = runtime
        self.checks: dict[str, Check] = {}
        self.relay_progress = RelayProgress()

    def _check(self, name: str) -> Check:
        return self.checks.setdefault(name, Check())

    async def probe(self) -> bool:
        """Run every check (each bounded by `ready_check_timeout`); True when all pass."""
        settings = self.runtime.settings
        try:
            async with asyncio.timeout(settings.ready_check_timeout):
                await self._probe_database()
        except TimeoutError:
            self._check("database").observe(False, f"no answer within {settings.ready_check_timeout}s")
        except Exception as exc:  # readiness must answer, whatever is broken
            self._check("database").observe(False, f"{type(exc).__name__}: {exc}"[:300])
        self._probe_nats()
        return all(check.ok for check in self.checks.values())

    async def _probe_database(self) -> None:
        runtime, settings = self.runtime, self.runtime.settings
        began, started = time.monotonic(), time.perf_counter()
        await runtime.pool.fetchval("SELECT 1")
        self._check("database").observe(True, latency_ms=round((time.perf_counter() - started) * 1000, 2))
        DATABASE.succeeded(began)
        lags = await runtime.projection_lag()
        for name, value in lags.items():
            leading = any(r.leading for r in runtime.runners if r.projection.name == name)
            limit = settings.ready_max_projection_lag
            self._check(f"projection:{name}").observe(
                value <= limit, f"{value} events behind (limit {limit})", lag=value, leading_here=leading
            )
        if settings.nats_url:
            await self._probe_relay()

    async def _probe_relay(self) -> None:
        runtime, settings = self.runtime, self.runtime.settings
        relay = runtime.relay  # None where this process takes no part in relaying; the checks are global
        value = await runtime.relay_lag()
        _, cursor, _ = await checkpoint(runtime.pool, RELAY)
        stalled = self.relay_progress.stalled_for(cursor) if value > 0 else 0.0
        held = await unpublishable.listed(runtime.pool, held_only=True)
        holding = None
        reason = None
        if held:  # the relay waits at an event JetStream will not take: fan-out has stopped
            event = held[0]
            holding = {
                "event_id": str(event["event_id"]),
                "position": event["position"],
                "event_type": event["event_type"],
                "reason": event["reason"],
                "since": event["detected_at"].isoformat(),
                "skip_with": f"charter relay skip {event['event_id']}",
            }
            reason = f"held at event {event['event_id']} (position {event['position']}): {event['reason']}"
        elif value > settings.ready_max_relay_lag:
            reason = f"{value} events not yet acknowledged by JetStream (limit {settings.ready_max_relay_lag})"
        elif value > 0 and stalled > settings.ready_relay_stall_seconds:
            reason = f"stuck: {value} events waiting, nothing acknowledged for {stalled:.0f}s"
            if relay is not None and relay.state.last_error:
                reason += f" (last error: {relay.state.last_error})"
        self._check("relay").observe(
            reason is None,
            reason,
            lag=value,
            leading_here=bool(relay and relay.state.leading),
            last_error=relay.state.last_error if relay else None,
            **({"holding": holding} if holding else {}),
        )

    def _probe_nats(self) -> None:
        runtime = self.runtime
        if not runtime.settings.nats_url:
            return
        relay, hub = runtime.relay, runtime.hub
        down = []
        if relay is not None and relay.state.leading and not relay.state.connected:
            down.append("relay")
        if hub is not None and not hub.connected:
            down.append("event stream")
        self._check("nats").observe(
            not down,
            f"NATS connection down ({', '.join(down)})",
            relay_connected=bool(relay and relay.state.connected),
            event_stream_connected=bool(hub and hub.connected),
            sse_clients=len(hub.subscribers) if hub else 0,
        )

    async def update_gauges(self) -> None:
        """Bring the lag gauges up to date (before a Prometheus scrape); the SSE hub keeps its client
        gauge itself, as clients come and go."""
        runtime = self.runtime
        await runtime.projection_lag()
        if runtime.settings.nats_url:
            await runtime.relay_lag()

    def health(self) -> dict[str, Any]:
        now = time.time()
        return {
            "status": "ok",
            "version": charter_version(),
            "uptime_seconds": round(now - self.runtime.started_at, 1),
            "components": {name: check.as_dict(now) for name, check in sorted(self.checks.items())},
        }

    def ready(self) -> dict[str, Any]:
        now = time.time()
        ok = all(check.ok for check in self.checks.values())
        return {
            "status": "ready" if ok else "not_ready",
            "checks": {name: check.as_dict(now) for name, check in sorted(self.checks.items())},
        }
