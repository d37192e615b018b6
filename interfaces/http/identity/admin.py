"""Administration of users, roles and permissions: `/api/v1/admin`. Writes decode a typed body and run
one command (the access cache follows by the identity reactions, after the commit); reads ask the
identity read model."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody

from application.identity import handlers as i
from domain.limits import Email, Id, Ids, Name, Text
from interfaces.http.bodies import JsonBody, json_body_size
from interfaces.http.common import command_context, page_params, read_consistency, written
from interfaces.http.errors import ApiError
from interfaces.http.identity.auth import Password
from interfaces.http.identity.dependencies import EXECUTE, READS, Execute, IdentityReads
from interfaces.http.schemas import Page, Reason, Written
from interfaces.http.security import rule, visible_sites
from projections.identity import queries as q

PROJECTION = "identity"


class GrantOut(msgspec.Struct):
    role: str
    site_id: str | None
    granted_at: datetime | None = None
    granted_by: str | None = None
    reason: str = ""  # why it was granted, as recorded in User.RoleGranted


class UserOut(msgspec.Struct):
    id: str
    email: str
    full_name: str
    is_active: bool
    roles: list[GrantOut]
    created_at: datetime
    updated_at: datetime
    stream_version: int
    last_login_at: datetime | None = None  # the last successful sign-in (User.SignedIn)
    credentials_expired: bool = False  # a temporary password was set (reset) and not changed yet


class UserCreate(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: Password
    full_name: Name = ""
    is_active: bool = True


class Deactivation(msgspec.Struct, forbid_unknown_fields=True):
    reason: Text | None = None


class RoleOut(msgspec.Struct):
    id: str
    name: str
    description: str
    permissions: list[str]
    builtin: bool
    users_count: int
    created_at: datetime
    updated_at: datetime
    stream_version: int


class RoleCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Id
    description: Text = ""
    permissions: Ids = []


class RoleUpdate(msgspec.Struct, forbid_unknown_fields=True):
    name: Id | None = None
    description: Text | None = None
    permissions: Ids | None = None


class PermissionOut(msgspec.Struct):
    name: str
    resource: str
    action: str
    description: str
    defined_at: datetime


class PermissionCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Id
    description: Text = ""


def reason_of(data: Reason | Deactivation | None) -> str | None:
    """The reason of an optional body (recorded in the event; none: "")."""
    return data.reason if data is not None else None


def user_out(row: dict[str, Any], sites: set[str] | None) -> UserOut:
    grants = [g for g in row["grants"] if sites is None or g["site_id"] in sites]
    return UserOut(
        id=row["user_id"],
        email=row["email"],
        full_name=row["full_name"],
        is_active=row["is_active"],
        roles=[msgspec.convert(g, GrantOut, strict=False) for g in grants],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        stream_version=row["stream_version"],
        last_login_at=row["last_login_at"],
        credentials_expired=row["password_change_required"],
    )


def role_out(row: dict[str, Any]) -> RoleOut:
    return RoleOut(
        id=row["role_key"],
        name=row["name"],
        description=row["description"],
        permissions=list(row["permissions"]),
        builtin=row["builtin"],
        users_count=row["users_count"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        stream_version=row["stream_version"],
    )


async def visible_user(request: Request, reads: IdentityReads, user_id: str) -> tuple[dict[str, Any], set[str] | None]:
    sites = visible_sites(request, "users:read")
    row = await q.get_user(reads.pool, user_id)
    if row is None or (sites is not None and not any(g["site_id"] in sites for g in row["grants"])):
        raise ApiError(404, "USER_NOT_FOUND", f"user {user_id} is not known", user_id=user_id)
    return row, sites


class UserAdminController(Controller):
    path = "/api/v1/admin/users"
    tags = ["admin"]
    dependencies = {**EXECUTE, **READS}
    guards = [json_body_size]

    @get("/", operation_id="listUsers", opt=rule("users:read", "any-site"), summary="Users (search, is_active)")
    async def list_users(
        self,
        request: Request,
        reads: NamedDependency[IdentityReads],
        search: FromQuery[str | None] = None,
        is_active: FromQuery[bool | None] = None,
        skip: FromQuery[int] = 0,
        limit: FromQuery[int] = 20,
        sort_by: FromQuery[str] = "email",
        sort_order: FromQuery[str] = "asc",
        consistent: FromQuery[bool] = False,
    ) -> Page[UserOut]:
        page_params(skip, limit, sort_by, sort_order, q.USER_SORTABLE)
        await read_consistency(request, reads, PROJECTION, consistent)
        sites = visible_sites(request, "users:read")
        total, rows = await q.list_users(reads.pool, search, is_active, sites, skip, limit, sort_by, sort_order == "desc")
        items = [user_out(r, sites) for r in rows]
        return Page(total=total, skip=skip, limit=limit, items=items, has_more=skip + len(items) < total)

    @post("/", operation_id="createUser", opt=rule("users:create"), status_code=201, dto=JsonBody, return_dto=None)
    async def create_user(self, request: Request, data: JSONBody[UserCreate], execute: NamedDependency[Execute]) -> Response[Written]:
        cmd = i.RegisterUser(email=data.email, password=data.password, full_name=data.full_name, active=data.is_active)
        result = await execute(cmd, command_context(request))
        user_id = result.stream_id.split(":", 1)[1]
        return written(result, user_id, 201, location=f"/api/v1/admin/users/{user_id}")

    @get("/{user_id:str}", operation_id="getUser", opt=rule("users:read", "any-site"))
    async def get_user(
        self, request: Request, reads: NamedDependency[IdentityReads], user_id: FromPath[str], consistent: FromQuery[bool] = False
    ) -> Response[UserOut]:
        await read_consistency(request, reads, PROJECTION, consistent)
        row, sites = await visible_user(request, reads, user_id)
        return Response(user_out(row, sites), headers={"ETag": f'"{row["stream_version"]}"'})

    @post(
        "/{user_id:str}/activate",
        operation_id="activateUser",
        opt=rule("users:manage"),
        status_code=200,
        dto=JsonBody,
        return_dto=None,
        summary="Activate a user (the body, with a reason, is optional)",
    )
    async def activate(
        self, request: Request, execute: NamedDependency[Execute], user_id: FromPath[str], data: JSONBody[Reason | None] = None
    ) -> Response[Written]:
        result = await execute(i.ActivateUser(user_id=user_id, reason=reason_of(data)), command_context(request))
        return written(result, user_id)

    @post(
        "/{user_id:str}/deactivate",
        operation_id="deactivateUser",
        opt=rule("users:manage"),
        status_code=200,
        dto=JsonBody,
        return_dto=None,
        summary="Deactivate a user (the body, with a reason, is optional): its sign-ins end at once",
    )
    async def deactivate(
        self, request: Request, execute: NamedDependency[Execute], user_id: FromPath[str], data: JSONBody[Deactivation | None] = None
    ) -> Response[Written]:
        result = await execute(i.DeactivateUser(user_id=user_id, reason=reason_of(data)), command_context(request))
        return written(result, user_id)

    @post(
        "/{user_id:str}/roles/{role:str}",
        operation_id="grantRole",
        opt=rule("roles:grant", "site"),
        status_code=200,
        dto=JsonBody,
        return_dto=None,
        summary="Grant a role, everywhere or at one site (?site_id=); the body, with a reason, is optional",
    )
    async def grant(
        self,
        request: Request,
        execute: NamedDependency[Execute],
        user_id: FromPath[str],
        role: FromPath[str],
        site_id: FromQuery[str | None] = None,
        data: JSONBody[Reason | None] = None,
    ) -> Response[Written]:
        cmd = i.GrantRole(user_id=user_id, role=role, site_id=site_id, reason=reason_of(data))
        result = await execute(cmd, command_context(request))
        return written(result, user_id)

    @delete(
        "/{user_id:str}/roles/{role:str}",
        operation_id="revokeRole",
        opt=rule("roles:grant", "site"),
        status_code=200,
        dto=JsonBody,
        return_dto=None,
        summary="Revoke a role granted everywhere or at one site (?site_id=); the body, with a reason, is optional",
    )
    async def revoke(
        self,
        request: Request,
        execute: NamedDependency[Execute],
        user_id: FromPath[str],
        role: FromPath[str],
        site_id: FromQuery[str | None] = None,
        data: JSONBody[Reason | None] = None,
    ) -> Response[Written]:
        cmd = i.RevokeRole(user_id=user_id, role=role, site_id=site_id, reason=reason_of(data))
        result = await execute(cmd, command_context(request))
        return written(result, user_id)


class RoleAdminController(Controller):
    path = "/api/v1/admin/roles"
    tags = ["admin"]
    dependencies = {**EXECUTE, **READS}
    guards = [json_body_size]

    @get("/", operation_id="listRoles", opt=rule("roles:read", "any-site"), summary="Roles with permissions and user counts")
    async def list_roles(
        self,
        request: Request,
        reads: NamedDependency[IdentityReads],
        skip: FromQuery[int] = 0,
        limit: FromQuery[int] = 20,
        sort_by: FromQuery[str] = "name",
        sort_order: FromQuery[str] = "asc",
        consistent: FromQuery[bool] = False,
    ) -> Page[RoleOut]:
        page_params(skip, limit, sort_by, sort_order, q.ROLE_SORTABLE)
        await read_consistency(request, reads, PROJECTION, consistent)
        total, rows = await q.list_roles(reads.pool, skip, limit, sort_by, sort_order == "desc")
        items = [role_out(r) for r in rows]
        return Page(total=total, skip=skip, limit=limit, items=items, has_more=skip + len(items) < total)

    @post("/", operation_id="createRole", opt=rule("roles:manage"), status_code=201, dto=JsonBody, return_dto=None)
    async def create_role(self, request: Request, data: JSONBody[RoleCreate], execute: NamedDependency[Execute]) -> Response[Written]:
        cmd = i.CreateRole(name=data.name, description=data.description, permissions=data.permissions)
        result = await execute(cmd, command_context(request))
        key = result.stream_id.split(":", 1)[1]
        return written(result, key, 201, location=f"/api/v1/admin/roles/{key}")

    @get("/{role_id:str}", operation_id="getRole", opt=rule("roles:read", "any-site"))
    async def get_role(
        self, request: Request, reads: NamedDependency[IdentityReads], role_id: FromPath[str], consistent: FromQuery[bool] = False
    ) -> Response[RoleOut]:
        await read_consistency(request, reads, PROJECTION, consistent)
        row = await q.get_role(reads.pool, role_id)
        if row is None:
            raise ApiError(404, "ROLE_NOT_FOUND", f"role {role_id} is not known", role=role_id)
        return Response(role_out(row), headers={"ETag": f'"{row["stream_version"]}"'})

    @put("/{role_id:str}", operation_id="updateRole", opt=rule("roles:manage"), dto=JsonBody, return_dto=None)
    async def update_role(
        self, request: Request, data: JSONBody[RoleUpdate], execute: NamedDependency[Execute], role_id: FromPath[str]
    ) -> Response[Written]:
        cmd = i.UpdateRole(role_id=role_id, name=data.name, description=data.description, permissions=data.permissions)
        result = await execute(cmd, command_context(request))
        return written(result, result.stream_id.split(":", 1)[1])

    @delete(
        "/{role_id:str}",
        operation_id="deleteRole",
        opt=rule("roles:manage"),
        status_code=200,
        dto=JsonBody,
        return_dto=None,
        summary="Delete a role (the body, with a reason, is optional)",
    )
    async def delete_role(
        self, request: Request, execute: NamedDependency[Execute], role_id: FromPath[str], data: JSONBody[Reason | None] = None
    ) -> Response[Written]:
        result = await execute(i.DeleteRole(role_id=role_id, reason=reason_of(data)), command_context(request))
        return written(result, result.stream_id.split(":", 1)[1])


class PermissionAdminController(Controller):
    path = "/api/v1/admin/permissions"
    tags = ["admin"]
    dependencies = {**EXECUTE, **READS}
    guards = [json_body_size]

    @get("/", operation_id="listPermissions", opt=rule("roles:read", "any-site"))
    async def list_permissions(
        self,
        request: Request,
        reads: NamedDependency[IdentityReads],
        resource: FromQuery[str | None] = None,
        skip: FromQuery[int] = 0,
        limit: FromQuery[int] = 50,
        sort_by: FromQuery[str] = "name",
        sort_order: FromQuery[str] = "asc",
        consistent: FromQuery[bool] = False,
    ) -> Page[PermissionOut]:
        page_params(skip, limit, sort_by, sort_order, q.PERMISSION_SORTABLE)
        await read_consistency(request, reads, PROJECTION, consistent)
        total, rows = await q.list_permissions(reads.pool, resource, skip, limit, sort_by, sort_order == "desc")
        items = [msgspec.convert(r, PermissionOut) for r in rows]
        return Page(total=total, skip=skip, limit=limit, items=items, has_more=skip + len(items) < total)

    @post(
        "/", operation_id="createPermission", opt=rule("roles:manage"), status_code=201, dto=JsonBody, return_dto=None
    )
    async def create_permission(self, request: Request, data: JSONBody[PermissionCreate], execute: NamedDependency[Execute]) -> Response[Written]:
        result = await execute(i.DefinePermission(name=data.name, description=data.description), command_context(request))
        return written(result, data.name, 201)
