"""Operations endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Response, get
from litestar.di import NamedDependency, Provide
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from infrastructure.telemetry import metrics
from interfaces.http.common import provide_runtime
from interfaces.http.security import OPERATIONS
from interfaces.runtime import Runtime

# litestar appends the charset itself to text/* types; prometheus_client's constant already has one.
METRICS_MEDIA_TYPE = CONTENT_TYPE_LATEST.split(";")[0] + "; version=" + CONTENT_TYPE_LATEST.split("version=")[1].split(";")[0]


class OpsController(Controller):
    path = "/"
    tags = ["operations"]
    dependencies = {"runtime": Provide(provide_runtime, sync_to_thread=False)}

    @get("/health", operation_id="health", opt=OPERATIONS, summary="Liveness: version, uptime, each component's last state")
    async def health(self, runtime: NamedDependency[Runtime]) -> dict[str, Any]:
        return runtime.readiness.health()

    @get(
        "/ready",
        operation_id="ready",
        opt=OPERATIONS,
        summary="Readiness: database, NATS, relay and projections, each with its reason and age",
    )
    async def ready(self, runtime: NamedDependency[Runtime]) -> Response[dict[str, Any]]:
        ok = await runtime.readiness.probe()
        return Response(runtime.readiness.ready(), status_code=200 if ok else 503)

    @get("/metrics", operation_id="metrics", opt=OPERATIONS, summary="Prometheus metrics", media_type=METRICS_MEDIA_TYPE)
    async def metrics(self, runtime: NamedDependency[Runtime]) -> Response[bytes]:
        await runtime.projection_lag()
        if runtime.settings.nats_url:
            await runtime.relay_lag()
            metrics.SSE_CLIENTS.set(len(runtime.hub.subscribers) if runtime.hub else 0)
        return Response(generate_latest(), media_type=METRICS_MEDIA_TYPE)
