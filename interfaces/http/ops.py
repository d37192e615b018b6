"""Operations endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from prometheus_client import CONTENT_TYPE_LATEST

from interfaces.http import dependencies as services
from infrastructure.telemetry import metrics as telemetry
from interfaces.http.security import OPERATIONS
from interfaces.readiness import Readiness

# litestar appends the charset itself to text/* types; prometheus_client's constant already has one.
METRICS_MEDIA_TYPE = CONTENT_TYPE_LATEST.split(";")[0] + "; version=" + CONTENT_TYPE_LATEST.split("version=")[1].split(";")[0]


class OpsController(Controller):
    path = "/"
    tags = ["operations"]
    dependencies = services.OPERATIONS

    @get("/health", operation_id="health", opt=OPERATIONS, summary="Liveness: version, uptime, each component's last state")
    async def health(self, readiness: NamedDependency[Readiness]) -> dict[str, Any]:
        return readiness.health()

    @get(
        "/ready",
        operation_id="ready",
        opt=OPERATIONS,
        summary="Readiness: database, NATS, relay and projections, each with its reason and age",
    )
    async def ready(self, readiness: NamedDependency[Readiness]) -> Response[dict[str, Any]]:
        ok = await readiness.probe()
        return Response(readiness.ready(), status_code=200 if ok else 503)

    @get("/metrics", operation_id="metrics", opt=OPERATIONS, summary="Prometheus metrics", media_type=METRICS_MEDIA_TYPE)
    async def metrics(self, readiness: NamedDependency[Readiness]) -> Response[bytes]:
        await readiness.update_gauges()
        return Response(telemetry.exposition(), media_type=METRICS_MEDIA_TYPE)
