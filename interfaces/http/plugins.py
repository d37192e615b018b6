"""Plugin catalog and lifecycle: `/api/v1/plugins`."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, PathParameter

from application import commands as c
from application.as_of import parse_as_of, resolve
from application.plugins.as_of import plugin_as_of
from application.plugins.disclosure import ConfigDisclosure
from domain.plugins.errors import PluginNotFound
from domain.limits import MAX_NAME
from interfaces.http import dependencies as services
from interfaces.http.bodies import JSON_BODY, JSON_OR_UPLOAD, MULTIPART, boolean_field, file_field, json_field, uploads
from interfaces.http.common import answered, command_context, decode, page_params, read_consistency, read_scope, written
from interfaces.http.dependencies import Archives, Commands, PluginReads, ReadModels
from interfaces.http.errors import ApiError
from interfaces.http.schemas import (
    Page,
    Plugin,
    PluginConfig,
    PluginConfigUpdate,
    PluginDeclassify,
    PluginInstall,
    PluginSummary,
    PluginUninstall,
    PluginUpdate,
    Reason,
    Rollback,
    Written,
)
from interfaces.http.security import access_of, rule
from interfaces.runtime import Answer, Authority
from projections.plugins import queries as catalog
from projections.plugins.queries import PluginQueries

PROJECTION = "plugins"
BOOLEANS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
ARCHIVE = file_field("the plugin: a zip holding charter-plugin.json at its root (or in its single top folder)")
INSTALL_UPLOAD = uploads(
    "Install from an uploaded archive",
    ["archive"],
    archive=ARCHIVE,
    config=json_field("the initial configuration, a JSON object (validated against the manifest's config_schema)"),
    auto_enable=boolean_field("enable the plugin once installed (true/false)"),
)
UPDATE_UPLOAD = uploads("Update from an uploaded archive", ["archive"], archive=ARCHIVE)


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


def detail(row: dict[str, Any], disclosure: ConfigDisclosure) -> Plugin:
    manifest = row["manifest"]
    return msgspec.convert(
        {
            **summary(row),
            "manifest": manifest,
            "dependencies": row["dependencies"],
            "versions": row["versions"],
            "events": manifest.get("events", {}),
            "configuration": disclosure.masked(row["config"]),
            "source": row["source"],
            "restarts": row["restarts"],
            "reloads": row["reloads"],
        },
        Plugin,
        from_attributes=True,
    )


async def plugin_row(plugins: PluginQueries, plugin_id: str) -> dict[str, Any]:
    row = await plugins.get(plugin_id)
    if row is None:
        raise PluginNotFound(f"plugin {plugin_id} is not known", plugin_id=plugin_id)
    return row


async def uploaded_archive(form: Any, max_bytes: int) -> tuple[bytes, str | None]:
    """The bytes of the `archive` form field (read no further than one byte past the cap), and its file name."""
    upload = form.get("archive")
    if upload is None or isinstance(upload, str):
        raise ApiError(400, "VALIDATION_FAILED", "multipart field 'archive' (the plugin zip) is required", field="archive")
    if upload.filename and len(upload.filename) > MAX_NAME:
        raise ApiError(
            400, "VALIDATION_FAILED", f"the archive's file name is longer than {MAX_NAME} characters", field="archive.filename"
        )
    content = await upload.read(max_bytes + 1)
    if len(content) > max_bytes:
        raise ApiError(413, "PAYLOAD_TOO_LARGE", f"the archive is larger than {max_bytes} bytes", field="archive", limit=max_bytes)
    return content, upload.filename


def entry_point_of(data: PluginInstall | PluginUpdate | None) -> str:
    """The entry point a JSON body names (the only source a JSON body can name on this server)."""
    if data is None:
        raise ApiError(400, "VALIDATION_FAILED", "a JSON request body is required", field="body")
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
    return data.entrypoint


def is_upload(request: Request) -> bool:
    return request.content_type[0] == MULTIPART


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
    dependencies = services.PLUGINS

    @get("/", operation_id="listPlugins", opt=rule("plugins:read", "any-site"), summary="List plugins with filters, sorting and pagination")
    async def list_plugins(
        self,
        request: Request,
        reads: NamedDependency[PluginReads],
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
    ) -> Response[Page[PluginSummary]]:
        page_params(skip, limit, sort_by, sort_order, catalog.SORTABLE)
        await read_consistency(request, reads.read_models, PROJECTION, consistent)
        found = catalog.PluginFilter(status, category, search, tag, active_only, include_uninstalled)
        page = catalog.Page(skip, limit, sort_by, sort_order)

        async def build() -> Answer:
            total, rows = await reads.plugins.list(found, page)
            items = [msgspec.convert(summary(r), PluginSummary) for r in rows]
            return Answer(msgspec.json.encode(Page(total=total, skip=skip, limit=limit, items=items, has_more=skip + len(items) < total)))

        key = ("list", found, page, read_scope(request, "plugins:read"))
        return answered(request, PROJECTION, key, await reads.read_models.answer(PROJECTION, key, build))

    @get("/{plugin_id:str}", operation_id="getPlugin", opt=rule("plugins:read", "any-site"), summary="A plugin's manifest, versions, dependencies and dependents (as_of=: as it was then, rebuilt from the log)")
    async def get_plugin(
        self,
        request: Request,
        reads: NamedDependency[PluginReads],
        plugin_id: FromPath[str],
        consistent: FromQuery[bool] = False,
        as_of: FromQuery[str | None] = None,
    ) -> Response[Plugin]:
        if as_of is not None:  # rebuilt from the plugin's stream, not the read model
            point = await resolve(reads.history, parse_as_of(as_of), datetime.now(timezone.utc))
            row = await plugin_as_of(reads.history, plugin_id, point)
            headers = {"ETag": f'"{row["stream_version"]}"', "Charter-As-Of": point.text()}
            return Response(detail(row, reads.disclosure), headers=headers)
        await read_consistency(request, reads.read_models, PROJECTION, consistent)

        async def build() -> Answer:
            row = await plugin_row(reads.plugins, plugin_id)
            return Answer(msgspec.json.encode(detail(row, reads.disclosure)), {"ETag": f'"{row["stream_version"]}"'})

        key = ("detail", plugin_id, read_scope(request, "plugins:read"))
        return answered(request, PROJECTION, key, await reads.read_models.answer(PROJECTION, key, build))

    @post(
        "/install",
        operation_id="installPlugin",
        opt={**rule("plugins:install"), **INSTALL_UPLOAD},
        summary="Install from an uploaded archive (multipart) or an installed distribution (JSON)",
        **JSON_OR_UPLOAD,
    )
    async def install(
        self,
        request: Request,
        commands: NamedDependency[Commands],
        archive_max_bytes: NamedDependency[int],
        data: JSONBody[PluginInstall | None] = None,
    ) -> Response[Written]:
        if is_upload(request):
            form = await request.form()
            content, filename = await uploaded_archive(form, archive_max_bytes)
            cmd = c.InstallPlugin(
                archive=content, filename=filename, config=form_json(form, "config"), auto_enable=form_bool(form, "auto_enable")
            )
        else:
            entrypoint = entry_point_of(data)
            cmd = c.InstallPlugin(entrypoint=entrypoint, version=data.version, config=data.config, auto_enable=data.auto_enable)
        result = await commands.execute(cmd, command_context(request))
        plugin_id = result.stream_id.split(":", 1)[1]
        return written(result, plugin_id, 201, location=f"/api/v1/plugins/{plugin_id}")

    @put(
        "/{plugin_id:str}",
        operation_id="updatePlugin",
        opt={**rule("plugins:update"), **UPDATE_UPLOAD},
        summary="Update to another version (the old one is kept)",
        **JSON_OR_UPLOAD,
    )
    async def update(
        self,
        request: Request,
        commands: NamedDependency[Commands],
        archive_max_bytes: NamedDependency[int],
        plugin_id: FromPath[str],
        data: JSONBody[PluginUpdate | None] = None,
    ) -> Response[Written]:
        if is_upload(request):
            content, filename = await uploaded_archive(await request.form(), archive_max_bytes)
            cmd = c.UpdatePlugin(plugin_id=plugin_id, archive=content, filename=filename)
        else:
            cmd = c.UpdatePlugin(plugin_id=plugin_id, entrypoint=entry_point_of(data), version=data.version)
        return written(await commands.execute(cmd, command_context(request)), plugin_id)

    @post("/{plugin_id:str}/rollback", operation_id="rollBackPlugin", opt=rule("plugins:update"), status_code=200, **JSON_BODY)
    async def rollback(
        self, request: Request, commands: NamedDependency[Commands], plugin_id: FromPath[str], data: JSONBody[Rollback | None] = None
    ) -> Response[Written]:
        cmd = c.RollBackPlugin(plugin_id=plugin_id, to_version=(data or Rollback()).to_version)
        return written(await commands.execute(cmd, command_context(request)), plugin_id)

    @staticmethod
    async def _lifecycle(
        request: Request, commands: Commands, command: type, plugin_id: str, data: Reason | None
    ) -> Response[Written]:
        cmd = command(plugin_id=plugin_id, reason=(data or Reason()).reason)
        return written(await commands.execute(cmd, command_context(request)), plugin_id)

    @post("/{plugin_id:str}/enable", operation_id="enablePlugin", opt=rule("plugins:operate"), status_code=200, **JSON_BODY)
    async def enable(
        self, request: Request, commands: NamedDependency[Commands], plugin_id: FromPath[str], data: JSONBody[Reason | None] = None
    ) -> Response[Written]:
        return await self._lifecycle(request, commands, c.EnablePlugin, plugin_id, data)

    @post(
        "/{plugin_id:str}/disable", operation_id="disablePlugin", opt=rule("plugins:operate"), status_code=200,
        summary="Global kill switch", **JSON_BODY,
    )
    async def disable(
        self, request: Request, commands: NamedDependency[Commands], plugin_id: FromPath[str], data: JSONBody[Reason | None] = None
    ) -> Response[Written]:
        return await self._lifecycle(request, commands, c.DisablePlugin, plugin_id, data)

    @post("/{plugin_id:str}/restart", operation_id="restartPlugin", opt=rule("plugins:operate"), status_code=200, **JSON_BODY)
    async def restart(
        self, request: Request, commands: NamedDependency[Commands], plugin_id: FromPath[str], data: JSONBody[Reason | None] = None
    ) -> Response[Written]:
        return await self._lifecycle(request, commands, c.RestartPlugin, plugin_id, data)

    @post("/{plugin_id:str}/reload", operation_id="reloadPlugin", opt=rule("plugins:operate"), status_code=200, **JSON_BODY)
    async def reload(
        self, request: Request, commands: NamedDependency[Commands], plugin_id: FromPath[str], data: JSONBody[Reason | None] = None
    ) -> Response[Written]:
        return await self._lifecycle(request, commands, c.ReloadPlugin, plugin_id, data)

    @delete(
        "/{plugin_id:str}", operation_id="uninstallPlugin", opt=rule("plugins:uninstall"), status_code=200,
        summary="Uninstall; options as a JSON body or as query parameters", **JSON_BODY,
    )
    async def uninstall(
        self,
        request: Request,
        commands: NamedDependency[Commands],
        plugin_id: FromPath[str],
        force: FromQuery[bool | None] = None,
        cleanup_data: FromQuery[bool | None] = None,
        reason: FromQuery[str | None] = None,
        data: JSONBody[PluginUninstall | None] = None,
    ) -> Response[Written]:
        queried = {"force": force, "cleanup_data": cleanup_data, "reason": reason}
        if data is not None and any(value is not None for value in queried.values()):
            named = next(name for name, value in queried.items() if value is not None)
            raise ApiError(
                400, "VALIDATION_FAILED", "give the uninstall options either as query parameters or as a JSON body, not both",
                field=named,
            )
        if data is None:
            data = PluginUninstall(reason=reason, force=bool(force), cleanup_data=bool(cleanup_data))
        cmd = c.UninstallPlugin(plugin_id=plugin_id, reason=data.reason, force=data.force, cleanup_data=data.cleanup_data)
        return written(await commands.execute(cmd, command_context(request)), plugin_id)

    @get("/{plugin_id:str}/config", operation_id="getPluginConfig", opt=rule("plugins:read", "any-site"), summary="Configuration, secrets masked")
    async def get_config(
        self,
        request: Request,
        plugins: NamedDependency[PluginQueries],
        read_models: NamedDependency[ReadModels],
        disclosure: NamedDependency[ConfigDisclosure],
        authority: NamedDependency[Authority],
        plugin_id: FromPath[str],
        include_secrets: FromQuery[bool] = False,
        consistent: FromQuery[bool] = False,
    ) -> Response[PluginConfig]:
        if include_secrets and authority.enabled and not access_of(request).allows("plugins:read_secrets"):
            raise ApiError(
                403, "FORBIDDEN", "include_secrets needs permission plugins:read_secrets", required_permission="plugins:read_secrets"
            )
        await read_consistency(request, read_models, PROJECTION, consistent)
        row = await plugin_row(plugins, plugin_id)
        schema = row["manifest"].get("config_schema", {})
        shown = disclosure.show(row["config"], schema, include_secrets)
        payload = PluginConfig(plugin_id, shown.config, schema, shown.secrets, row["stream_version"], shown.sealed)
        return Response(payload, headers={"ETag": f'"{row["stream_version"]}"', "Cache-Control": "no-store"})

    @put(
        "/{plugin_id:str}/config", operation_id="setPluginConfig", opt=rule("plugins:configure"),
        summary="Replace the configuration (validated)", **JSON_BODY,
    )
    async def put_config(
        self, request: Request, commands: NamedDependency[Commands], plugin_id: FromPath[str], data: JSONBody[PluginConfigUpdate]
    ) -> Response[Written]:
        cmd = c.ConfigurePlugin(plugin_id=plugin_id, config=data.config)
        return written(await commands.execute(cmd, command_context(request)), plugin_id)

    @post(
        "/{plugin_id:str}/config/declassify",
        operation_id="declassifyPluginConfig",
        opt=rule("plugins:declassify"),
        status_code=200,
        summary="Store sealed fields in clear from now on (audited; administrators only)",
        **JSON_BODY,
    )
    async def declassify(
        self, request: Request, commands: NamedDependency[Commands], plugin_id: FromPath[str], data: JSONBody[PluginDeclassify]
    ) -> Response[Written]:
        if not data.reason.strip():
            raise ApiError(400, "VALIDATION_FAILED", "reason must say why the fields are no longer secret", field="reason")
        cmd = c.DeclassifyConfig(plugin_id=plugin_id, fields=data.fields, reason=data.reason.strip())
        return written(await commands.execute(cmd, command_context(request)), plugin_id)


class ArchiveController(Controller):
    path = "/api/v1/archives"
    tags = ["plugins"]
    dependencies = services.ARCHIVES

    @get("/{sha256:str}", operation_id="getPluginArchive", opt=rule("plugins:read", "any-site"), summary="A stored plugin archive, by its sha256")
    async def get_archive(
        self, archives: NamedDependency[Archives], sha256: Annotated[str, PathParameter(pattern="^[0-9a-f]{64}$")]
    ) -> Response[bytes]:
        content = await archives.get(sha256)
        if content is None:
            raise ApiError(404, "ARCHIVE_NOT_FOUND", f"no archive with sha256 {sha256}", sha256=sha256)
        return Response(content, media_type="application/zip", headers={"ETag": f'"{sha256}"'})
