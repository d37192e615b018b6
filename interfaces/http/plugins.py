"""Plugin catalog and lifecycle: `/api/v1/plugins`."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, PathParameter

from application import commands as c
from domain.plugins.configuration import MASK, map_sealed, path_of, sealed_locations, secret_paths
from domain.plugins.errors import PluginNotFound
from domain.limits import MAX_NAME
from infrastructure.plugins.archives import ArchiveLimits
from infrastructure.plugins.sources import manifest_from_archive, manifest_from_entry_point, sha256_of
from interfaces.http.common import body, command_context, decode, page_params, provide_runtime, read_consistency, written
from interfaces.http.errors import ApiError
from interfaces.http.schemas import (
    Page,
    Plugin,
    PluginConfig,
    PluginConfigUpdate,
    PluginDeclassify,
    PluginInstall,
    PluginSummary,
    PluginUpdate,
    Reason,
    Rollback,
    Written,
)
from interfaces.http.security import access_of, rule
from interfaces.runtime import Runtime
from projections.plugins import queries as catalog

PROJECTION = "plugins"
BOOLEANS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def summary(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["plugin_id"],
        "name": row["name"],
        "version": row["version"],
        "description": row["description"],
        "author": row["author"],
        "category": row["category"],
        "tags": row["tags"],
        "capabilities": row["capabilities"],
        "status": row["status"],
        "enabled": row["enabled"],
        "disabled_reason": row["disabled_reason"],
        "dependents": row["dependents"],
        "installed_at": row["installed_at"],
        "updated_at": row["updated_at"],
        "stream_version": row["stream_version"],
    }


def detail(row: dict[str, Any]) -> Plugin:
    manifest = row["manifest"]
    return msgspec.convert(
        {
            **summary(row),
            "manifest": manifest,
            "dependencies": row["dependencies"],
            "versions": row["versions"],
            "events": manifest.get("events", {}),
            "configuration": masked(row["config"]),
            "source": row["source"],
            "restarts": row["restarts"],
            "reloads": row["reloads"],
        },
        Plugin,
        from_attributes=True,
    )


def masked(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored configuration as readers see it: every sealed value masked, whatever the schema says now
    (a field once secret stays sealed until declassified)."""
    return map_sealed(stored, lambda _path, _value: MASK)


async def plugin_row(runtime: Runtime, plugin_id: str) -> dict[str, Any]:
    row = await catalog.get_plugin(runtime.pool, plugin_id)
    if row is None:
        raise PluginNotFound(f"plugin {plugin_id} is not known", plugin_id=plugin_id)
    return row


async def uploaded_archive(form: Any, limits: ArchiveLimits) -> tuple[bytes, str | None]:
    """The bytes of the `archive` form field (read no further than one byte past the cap), and its file name."""
    upload = form.get("archive")
    if upload is None or isinstance(upload, str):
        raise ApiError(400, "VALIDATION_FAILED", "multipart field 'archive' (the plugin zip) is required", field="archive")
    if upload.filename and len(upload.filename) > MAX_NAME:
        raise ApiError(
            400, "VALIDATION_FAILED", f"the archive's file name is longer than {MAX_NAME} characters", field="archive.filename"
        )
    content = await upload.read(limits.max_bytes + 1)
    if len(content) > limits.max_bytes:
        raise ApiError(
            413, "PAYLOAD_TOO_LARGE", f"the archive is larger than {limits.max_bytes} bytes", field="archive", limit=limits.max_bytes
        )
    return content, upload.filename


async def source_from_request(request: Request, runtime: Runtime, model: type) -> tuple[dict, dict, bytes | None, Any]:
    """Read where the plugin comes from: a multipart archive upload or a JSON body naming an entry point.

    Returns (manifest, source, archive bytes or None, decoded JSON body or form fields).
    """
    if request.content_type[0] == "multipart/form-data":
        form = await request.form()
        limits = ArchiveLimits.of(runtime.settings)
        content, filename = await uploaded_archive(form, limits)
        manifest = await asyncio.to_thread(manifest_from_archive, content, limits)
        source = {"kind": "file", "sha256": sha256_of(content), "size": len(content), "filename": filename}
        return manifest, source, content, form
    data = await body(request, model)
    if data.source == "file":
        raise ApiError(
            400, "VALIDATION_FAILED", "source 'file' needs the archive uploaded as multipart/form-data field 'archive'",
            field="source",
        )
    if data.source != "entrypoint":
        raise ApiError(
            400, "PLUGIN_SOURCE_INVALID", f"source {data.source!r} is not available on this server; use 'file' or 'entrypoint'",
            field="source",
        )
    if not data.entrypoint:
        raise ApiError(400, "VALIDATION_FAILED", "entrypoint is required when source is 'entrypoint'", field="entrypoint")
    manifest, source = manifest_from_entry_point(data.entrypoint)
    if data.version and manifest.get("version") != data.version:
        raise ApiError(
            400, "PLUGIN_SOURCE_INVALID",
            f"entry point {data.entrypoint!r} provides version {manifest.get('version')}, not {data.version}",
            field="version",
        )
    return manifest, source, None, data


def form_json(form: Any, name: str) -> dict[str, Any]:
    raw = form.get(name)
    if raw in (None, ""):
        return {}
    return decode(raw.encode() if isinstance(raw, str) else raw, dict[str, Any], prefix=f"{name}.")


def form_bool(form: Any, name: str) -> bool:
    raw = form.get(name)
    if raw in (None, ""):
        return False
    value = BOOLEANS.get(str(raw).strip().lower())
    if value is None:
        raise ApiError(400, "VALIDATION_FAILED", f"{name} must be true or false, not {str(raw)[:40]!r}", field=name)
    return value


class PluginController(Controller):
    path = "/api/v1/plugins"
    tags = ["plugins"]
    dependencies = {"runtime": Provide(provide_runtime, sync_to_thread=False)}

    @get("/", operation_id="listPlugins", opt=rule("plugins:read", "any-site"), summary="List plugins with filters, sorting and pagination")
    async def list_plugins(
        self,
        request: Request,
        runtime: NamedDependency[Runtime],
        status: FromQuery[str | None] = None,
        category: FromQuery[str | None] = None,
        search: FromQuery[str | None] = None,
        tag: FromQuery[str | None] = None,
        active_only: FromQuery[bool] = False,
        include_uninstalled: FromQuery[bool] = False,
        skip: FromQuery[int] = 0,
        limit: FromQuery[int] = 20,
        sort_by: FromQuery[str] = "name",
        sort_order: FromQuery[str] = "asc",
        consistent: FromQuery[bool] = False,
    ) -> Page[PluginSummary]:
        page_params(skip, limit, sort_by, sort_order, catalog.SORTABLE)
        await read_consistency(request, runtime, PROJECTION, consistent)
        total, rows = await catalog.list_plugins(
            runtime.pool,
            catalog.PluginFilter(status, category, search, tag, active_only, include_uninstalled),
            catalog.Page(skip, limit, sort_by, sort_order),
        )
        items = [msgspec.convert(summary(r), PluginSummary) for r in rows]
        return Page(total=total, skip=skip, limit=limit, items=items, has_more=skip + len(items) < total)

    @get("/{plugin_id:str}", operation_id="getPlugin", opt=rule("plugins:read", "any-site"), summary="A plugin's manifest, versions, dependencies and dependents")
    async def get_plugin(self, request: Request, runtime: NamedDependency[Runtime], plugin_id: FromPath[str], consistent: FromQuery[bool] = False) -> Response[Plugin]:
        await read_consistency(request, runtime, PROJECTION, consistent)
        row = await plugin_row(runtime, plugin_id)
        return Response(detail(row), headers={"ETag": f'"{row["stream_version"]}"'})

    @post("/install", operation_id="installPlugin", opt=rule("plugins:install"), summary="Install from an uploaded archive or an installed distribution")
    async def install(self, request: Request, runtime: NamedDependency[Runtime]) -> Response[Written]:
        manifest, source, archive, data = await source_from_request(request, runtime, PluginInstall)
        if isinstance(data, PluginInstall):
            config, auto_enable = data.config, data.auto_enable
        else:
            config, auto_enable = form_json(data, "config"), form_bool(data, "auto_enable")
        cmd = c.InstallPlugin(manifest=manifest, source=source, config=config, auto_enable=auto_enable, archive=archive)
        result = await runtime.execute(cmd, command_context(request))
        plugin_id = result.stream_id.split(":", 1)[1]
        return written(result, plugin_id, 201, location=f"/api/v1/plugins/{plugin_id}")

    @put("/{plugin_id:str}", operation_id="updatePlugin", opt=rule("plugins:update"), summary="Update to another version (the old one is kept)")
    async def update(self, request: Request, runtime: NamedDependency[Runtime], plugin_id: FromPath[str]) -> Response[Written]:
        manifest, source, archive, _ = await source_from_request(request, runtime, PluginUpdate)
        cmd = c.UpdatePlugin(plugin_id=plugin_id, manifest=manifest, source=source, archive=archive)
        return written(await runtime.execute(cmd, command_context(request)), plugin_id)

    @post("/{plugin_id:str}/rollback", operation_id="rollBackPlugin", opt=rule("plugins:update"), status_code=200)
    async def rollback(self, request: Request, runtime: NamedDependency[Runtime], plugin_id: FromPath[str]) -> Response[Written]:
        data = await body(request, Rollback, default=Rollback())
        cmd = c.RollBackPlugin(plugin_id=plugin_id, to_version=data.to_version)
        return written(await runtime.execute(cmd, command_context(request)), plugin_id)

    async def _lifecycle(self, request: Request, runtime: Runtime, command: type, plugin_id: str) -> Response[Written]:
        data = await body(request, Reason, default=Reason())
        cmd = command(plugin_id=plugin_id, reason=data.reason)
        return written(await runtime.execute(cmd, command_context(request)), plugin_id)

    @post("/{plugin_id:str}/enable", operation_id="enablePlugin", opt=rule("plugins:operate"), status_code=200)
    async def enable(self, request: Request, runtime: NamedDependency[Runtime], plugin_id: FromPath[str]) -> Response[Written]:
        return await self._lifecycle(request, runtime, c.EnablePlugin, plugin_id)

    @post("/{plugin_id:str}/disable", operation_id="disablePlugin", opt=rule("plugins:operate"), status_code=200, summary="Global kill switch")
    async def disable(self, request: Request, runtime: NamedDependency[Runtime], plugin_id: FromPath[str]) -> Response[Written]:
        return await self._lifecycle(request, runtime, c.DisablePlugin, plugin_id)

    @post("/{plugin_id:str}/restart", operation_id="restartPlugin", opt=rule("plugins:operate"), status_code=200)
    async def restart(self, request: Request, runtime: NamedDependency[Runtime], plugin_id: FromPath[str]) -> Response[Written]:
        return await self._lifecycle(request, runtime, c.RestartPlugin, plugin_id)

    @post("/{plugin_id:str}/reload", operation_id="reloadPlugin", opt=rule("plugins:operate"), status_code=200)
    async def reload(self, request: Request, runtime: NamedDependency[Runtime], plugin_id: FromPath[str]) -> Response[Written]:
        return await self._lifecycle(request, runtime, c.ReloadPlugin, plugin_id)

    @delete("/{plugin_id:str}", operation_id="uninstallPlugin", opt=rule("plugins:uninstall"), status_code=200)
    async def uninstall(
        self,
        request: Request,
        runtime: NamedDependency[Runtime],
        plugin_id: FromPath[str],
        force: FromQuery[bool] = False,
        cleanup_data: FromQuery[bool] = False,
        reason: FromQuery[str | None] = None,
    ) -> Response[Written]:
        cmd = c.UninstallPlugin(plugin_id=plugin_id, reason=reason, force=force, cleanup_data=cleanup_data)
        return written(await runtime.execute(cmd, command_context(request)), plugin_id)

    @get("/{plugin_id:str}/config", operation_id="getPluginConfig", opt=rule("plugins:read", "any-site"), summary="Configuration, secrets masked")
    async def get_config(
        self,
        request: Request,
        runtime: NamedDependency[Runtime],
        plugin_id: FromPath[str],
        include_secrets: FromQuery[bool] = False,
        consistent: FromQuery[bool] = False,
    ) -> Response[PluginConfig]:
        if include_secrets and runtime.authority.enabled and not access_of(request).allows("plugins:read_secrets"):
            raise ApiError(
                403, "FORBIDDEN", "include_secrets needs permission plugins:read_secrets", required_permission="plugins:read_secrets"
            )
        await read_consistency(request, runtime, PROJECTION, consistent)
        row = await plugin_row(runtime, plugin_id)
        stored, schema = row["config"], row["manifest"].get("config_schema", {})
        if include_secrets:
            config = map_sealed(stored, lambda _path, value: runtime.cipher.unseal(value))
        else:
            config = masked(stored)
        sealed = [path_of(loc) for loc in sealed_locations(stored)]
        payload = PluginConfig(plugin_id, config, schema, secret_paths(schema), row["stream_version"], sealed)
        return Response(payload, headers={"ETag": f'"{row["stream_version"]}"', "Cache-Control": "no-store"})

    @put("/{plugin_id:str}/config", operation_id="setPluginConfig", opt=rule("plugins:configure"), summary="Replace the configuration (validated)")
    async def put_config(self, request: Request, runtime: NamedDependency[Runtime], plugin_id: FromPath[str]) -> Response[Written]:
        data = await body(request, PluginConfigUpdate)
        cmd = c.ConfigurePlugin(plugin_id=plugin_id, config=data.config)
        return written(await runtime.execute(cmd, command_context(request)), plugin_id)

    @post(
        "/{plugin_id:str}/config/declassify",
        operation_id="declassifyPluginConfig",
        opt=rule("plugins:declassify"),
        status_code=200,
        summary="Store sealed fields in clear from now on (audited; administrators only)",
    )
    async def declassify(self, request: Request, runtime: NamedDependency[Runtime], plugin_id: FromPath[str]) -> Response[Written]:
        data = await body(request, PluginDeclassify)
        if not data.reason.strip():
            raise ApiError(400, "VALIDATION_FAILED", "reason must say why the fields are no longer secret", field="reason")
        cmd = c.DeclassifyConfig(plugin_id=plugin_id, fields=data.fields, reason=data.reason.strip())
        return written(await runtime.execute(cmd, command_context(request)), plugin_id)


class ArchiveController(Controller):
    path = "/api/v1/archives"
    tags = ["plugins"]
    dependencies = {"runtime": Provide(provide_runtime, sync_to_thread=False)}

    @get("/{sha256:str}", operation_id="getPluginArchive", opt=rule("plugins:read", "any-site"), summary="A stored plugin archive, by its sha256")
    async def get_archive(self, runtime: NamedDependency[Runtime], sha256: Annotated[str, PathParameter(pattern="^[0-9a-f]{64}$")]) -> Response[bytes]:
        content = await runtime.archives.get(sha256)
        if content is None:
            raise ApiError(404, "ARCHIVE_NOT_FOUND", f"no archive with sha256 {sha256}", sha256=sha256)
        return Response(content, media_type="application/zip", headers={"ETag": f'"{sha256}"'})
