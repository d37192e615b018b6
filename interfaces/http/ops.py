"""Operations endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import time
from typing import Any

from litestar import Controller, Response, get
from litestar.di import NamedDependency, Provide
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from infrastructure import metrics
from interfaces.http.common import provide_runtime
from interfaces.http.security import OPERATIONS
from interfaces.runtime import Runtime

MAX_READY_LAG = 10_000
# litestar appends the charset itself to text/* types; prometheus_client's constant already has one.
METRICS_MEDIA_TYPE = CONTENT_TYPE_LATEST.split(";")[0] + "; version=" + CONTENT_TYPE_LATEST.split("version=")[1].split(";")[0]


class OpsController(Controller):
    path = "/"
    tags = ["operations"]
    dependencies = {"runtime": Provide(provide_runtime, sync_to_thread=False)}

    @get("/health", operation_id="health", opt=OPERATIONS, summary="Liveness: the process is up")
    async def health(self, runtime: NamedDependency[Runtime]) -> dict[str, Any]:
        return {"status": "ok", "uptime_seconds": round(time.time() - runtime.started_at, 1)}

    @get("/ready", operation_id="ready", opt=OPERATIONS, summary="Readiness: database reachable, projections not far behind")
    async def ready(self, runtime: NamedDependency[Runtime]) -> Response[dict[str, Any]]:
        checks: dict[str, Any] = {}
        ok = True
        try:
            started = time.perf_counter()
            await runtime.pool.fetchval("SELECT 1")
            checks["database"] = {"status": "ok", "latency_ms": round((time.perf_counter() - started) * 1000, 2)}
            lags = await runtime.projection_lag()
            checks["projections"] = {
                name: {"lag": value, "leading_here": any(r.leading for r in runtime.runners if r.projection.name == name)}
                for name, value in lags.items()
            }
            if any(value > MAX_READY_LAG for value in lags.values()):
                ok = False
            if runtime.settings.nats_url:
                relay = runtime.relay
                checks["relay"] = {
                    "lag": await runtime.relay_lag(),
                    "leading_here": bool(relay and relay.state.leading),
                    "nats_connected": bool(relay and relay.state.connected),
                    "last_error": relay.state.last_error if relay else None,
                }
                checks["event_stream"] = {
                    "subscribed": bool(runtime.hub and runtime.hub.ready.is_set()),
                    "clients": len(runtime.hub.subscribers) if runtime.hub else 0,
                }
        except Exception as exc:  # readiness must answer, whatever is broken
            checks["database"] = {"status": "unreachable", "error": str(exc)}
            ok = False
        return Response({"status": "ready" if ok else "not_ready", "checks": checks}, status_code=200 if ok else 503)

    @get("/metrics", operation_id="metrics", opt=OPERATIONS, summary="Prometheus metrics", media_type=METRICS_MEDIA_TYPE)
    async def metrics(self, runtime: NamedDependency[Runtime]) -> Response[bytes]:
        await runtime.projection_lag()
        if runtime.settings.nats_url:
            await runtime.relay_lag()
            metrics.SSE_CLIENTS.set(len(runtime.hub.subscribers) if runtime.hub else 0)
        return Response(generate_latest(), media_type=METRICS_MEDIA_TYPE)
