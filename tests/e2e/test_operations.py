"""Operations endpoints and the API description: /health, /ready, /metrics, /schema."""

from __future__ import annotations

from tests.e2e.plugin_kit import PLUGINS, installed, manifest, unique_id

LIFECYCLE_ROUTES = {
    ("get", "/api/v1/plugins"): "listPlugins",
    ("post", "/api/v1/plugins/install"): "installPlugin",
    ("get", "/api/v1/plugins/{plugin_id}"): "getPlugin",
    ("put", "/api/v1/plugins/{plugin_id}"): "updatePlugin",
    ("delete", "/api/v1/plugins/{plugin_id}"): "uninstallPlugin",
    ("post", "/api/v1/plugins/{plugin_id}/rollback"): "rollBackPlugin",
    ("post", "/api/v1/plugins/{plugin_id}/enable"): "enablePlugin",
    ("post", "/api/v1/plugins/{plugin_id}/disable"): "disablePlugin",
    ("post", "/api/v1/plugins/{plugin_id}/restart"): "restartPlugin",
    ("post", "/api/v1/plugins/{plugin_id}/reload"): "reloadPlugin",
    ("get", "/api/v1/plugins/{plugin_id}/config"): "getPluginConfig",
    ("put", "/api/v1/plugins/{plugin_id}/config"): "setPluginConfig",
    ("get", "/api/v1/archives/{sha256}"): "getPluginArchive",
    ("get", "/health"): "health",
    ("get", "/ready"): "ready",
    ("get", "/metrics"): "metrics",
}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


class TestHealth:
    async def test_answers_ok_while_the_process_is_up(self, client) -> None:
        response = await client.get("/health")

        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "ok"
        assert body["uptime_seconds"] >= 0
        assert body["version"]
        assert response.headers["x-request-id"]

    async def test_shows_each_components_last_state(self, client) -> None:
        await client.get("/ready")

        components = (await client.get("/health")).json()["components"]

        assert components["database"]["status"] == "ok"
        assert components["projection:plugins"]["for_seconds"] >= 0


class TestReady:
    async def test_answers_ready_with_database_and_projection_checks(self, client) -> None:
        await client.get(PLUGINS, params={"consistent": "true"})

        response = await client.get("/ready")

        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "ready"
        assert body["checks"]["database"]["status"] == "ok"
        assert body["checks"]["projection:plugins"]["status"] == "ok"
        assert body["checks"]["projection:plugins"]["lag"] >= 0


class TestMetrics:
    async def test_exposes_prometheus_text_with_http_request_counts(self, client) -> None:
        await installed(client, manifest(unique_id()))

        response = await client.get("/metrics")

        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        text = response.text
        assert "# TYPE charter_http_requests_total counter" in text
        assert 'charter_http_requests_total{method="POST",route="/api/v1/plugins/install",status="201"}' in text
        assert "charter_events_appended_total" in text
        assert 'charter_projection_lag_events{projection="plugins"}' in text

    async def test_content_type_is_a_well_formed_media_type(self, client) -> None:
        """Prometheus (3.x) rejects a Content-Type with a repeated parameter, such as two charsets."""
        content_type = (await client.get("/metrics")).headers["content-type"]

        names = [part.split("=", 1)[0].strip().lower() for part in content_type.split(";")[1:]]
        assert len(names) == len(set(names)), content_type


class TestOpenApi:
    async def test_lists_every_route_with_an_operation_id(self, client) -> None:
        response = await client.get("/schema/openapi.json")

        assert response.status_code == 200
        paths = response.json()["paths"]
        found = {
            (method, path): operation.get("operationId")
            for path, operations in paths.items()
            for method, operation in operations.items()
            if method in HTTP_METHODS
        }
        for route, operation_id in LIFECYCLE_ROUTES.items():
            assert found.get(route) == operation_id, route
        missing = sorted(route for route, operation_id in found.items() if not operation_id)
        assert missing == []
        operation_ids = list(found.values())
        assert len(operation_ids) == len(set(operation_ids))

    async def test_serves_interactive_docs(self, client) -> None:
        response = await client.get("/schema/swagger")

        assert response.status_code == 200
        assert "text/html" in response.headers["content-type"]
