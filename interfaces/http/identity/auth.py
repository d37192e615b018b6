"""Sign-in: `/api/v1/auth` (register, login, refresh, logout, me)."""

from __future__ import annotations

import uuid
from typing import Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import CacheControlHeader
from litestar.di import NamedDependency, Provide

from application.identity.handlers import SignUp
from domain.identity.user import STREAM_TYPE as USER_STREAM
from domain.identity.user import User
from domain.errors import DomainError
from infrastructure.identity.tokens import AuthenticationFailed, RefreshTokenReused
from infrastructure.identity.signin import account_key, address_key
from domain.limits import Email, Name
from interfaces.http.common import body, command_context, provide_runtime
from interfaces.http.errors import ApiError
from interfaces.http.security import AUTHENTICATED, PUBLIC, access_of, client_address
from interfaces.runtime import Runtime

# The one answer to a registration that passed validation, whether or not the address already had an account.
REGISTRATION_ACCEPTED = {
    "status": "accepted",
    "message": "if this address can be registered, its account now exists: sign in with the password you chose",
}


class Registration(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: str
    full_name: Name = ""


class Login(msgspec.Struct, forbid_unknown_fields=True):
    password: str
    username: Email | None = None
    email: Email | None = None


class RefreshRequest(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: str


class Tokens(msgspec.Struct):
    access_token: str
    refresh_token: str
    token_type: str
    expires_in: int


class GrantView(msgspec.Struct):
    role: str
    site_id: str | None


class Me(msgspec.Struct):
    id: str
    email: str | None
    full_name: str | None
    is_active: bool
    roles: list[GrantView]
    permissions: dict[str, list[str]]  # "*" : everywhere; otherwise per site id


async def load_user(runtime: Runtime, user_id: str) -> User | None:
    loaded = await runtime.repository.load(User, USER_STREAM, user_id, UUID(user_id))
    return loaded.aggregate


async def issue_tokens(runtime: Runtime, user: User, family: str | None = None, refresh: str | None = None) -> Tokens:
    """Tokens of one sign-in: the refresh-token family is the session, named in the access token's `sid`."""
    family = family or uuid.uuid4().hex
    grants = [(g.role, g.site_id) for g in user.grants]
    access, ttl = runtime.authority.tokens.issue(str(user.id), grants, user.email, session=family)
    if refresh is None:
        refresh = await runtime.refresh_tokens.issue(str(user.id), family)
    return Tokens(access, refresh, "bearer", ttl)


NO_STORE = CacheControlHeader(no_store=True)  # tokens must not stay in any cache


def throttled(request: Request, retry_after: int) -> ApiError:
    request.scope.setdefault("state", {})["retry_after"] = retry_after
    return ApiError(
        429, "LOGIN_THROTTLED", f"too many failed sign-ins; retry after {retry_after}s", retry_after=retry_after
    )


class AuthController(Controller):
    path = "/api/v1/auth"
    tags = ["auth"]
    dependencies = {"runtime": Provide(provide_runtime, sync_to_thread=False)}

    @post(
        "/register",
        operation_id="register",
        opt=PUBLIC,
        cache_control=NO_STORE,
        status_code=202,
        summary="Create an account (no roles); the same answer whether or not the address already has one",
    )
    async def register(self, request: Request, runtime: NamedDependency[Runtime]) -> Response[dict[str, str]]:
        if not runtime.settings.allow_registration:
            raise ApiError(403, "REGISTRATION_CLOSED", "self-registration is closed; ask an administrator")
        data = await body(request, Registration)
        await runtime.execute(SignUp(email=data.email, password=data.password, full_name=data.full_name), command_context(request))
        return Response(REGISTRATION_ACCEPTED, status_code=202)

    @post("/login", operation_id="login", opt=PUBLIC, cache_control=NO_STORE, status_code=200, summary="Sign in (JSON or form)")
    async def login(self, request: Request, runtime: NamedDependency[Runtime]) -> Tokens:
        if request.content_type[0] in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.form()
            data = Login(password=str(form.get("password") or ""), username=form.get("username"), email=form.get("email"))
        else:
            data = await body(request, Login)
        who = data.username or data.email
        if not who or not data.password:
            raise ApiError(400, "VALIDATION_FAILED", "username (or email) and password are required", field="username")
        attempt = await runtime.login_throttle.attempt(account_key(who), address_key(client_address(request)))
        if attempt.retry_after:
            raise throttled(request, attempt.retry_after)
        try:
            user_id = await runtime.user_id_of(who)
        except DomainError:  # not an e-mail address
            user_id = None
        user = await load_user(runtime, user_id) if user_id else None
        # An unknown account costs the same argon2 check as a known one: the time tells nothing.
        password_hash = user.password_hash if user is not None else runtime.dummy_hash
        if not await runtime.passwords.verify(password_hash, data.password) or user is None:
            raise ApiError(401, "INVALID_CREDENTIALS", "unknown user or wrong password")
        await runtime.login_throttle.succeeded(attempt)
        if not user.active:
            raise ApiError(401, "USER_INACTIVE", "this account is deactivated")
        return await issue_tokens(runtime, user)

    @post("/refresh", operation_id="refreshToken", opt=PUBLIC, cache_control=NO_STORE, status_code=200, summary="Rotate the refresh token")
    async def refresh(self, request: Request, runtime: NamedDependency[Runtime]) -> Tokens:
        data = await body(request, RefreshRequest)
        try:
            grant, fresh = await runtime.refresh_tokens.rotate(data.refresh_token)
        except RefreshTokenReused as exc:  # theft: the sign-in's access tokens die with it, here at once
            runtime.authority.end_sessions(exc.family_id)
            raise ApiError(401, exc.code, exc.message) from None
        except AuthenticationFailed as exc:
            raise ApiError(401, exc.code, exc.message) from None
        user = await load_user(runtime, grant.user_id)
        if user is None or not user.active:
            await runtime.refresh_tokens.revoke(fresh)
            runtime.authority.end_sessions(grant.family_id)
            raise ApiError(401, "USER_INACTIVE", "this account is deactivated")
        return await issue_tokens(runtime, user, grant.family_id, refresh=fresh)

    @post(
        "/logout",
        operation_id="logout",
        opt=AUTHENTICATED,
        status_code=200,
        summary="End this sign-in: its refresh tokens and access tokens stop working at once",
    )
    async def logout(self, request: Request, runtime: NamedDependency[Runtime]) -> dict[str, Any]:
        data = await body(request, RefreshRequest)
        claims = request.scope["state"].get("claims")
        session = claims.session_id if claims is not None and claims.issuer == runtime.authority.tokens.issuer else None
        if session:
            await runtime.refresh_tokens.revoke_family(session)
        given = await runtime.refresh_tokens.revoke(data.refresh_token)  # normally the same sign-in
        runtime.authority.end_sessions(session, given)
        return {"status": "signed out"}

    @get("/me", operation_id="me", opt=AUTHENTICATED, summary="The caller, its roles and effective permissions per site")
    async def me(self, request: Request, runtime: NamedDependency[Runtime]) -> Me:
        access = access_of(request)
        user = await load_user(runtime, access.user_id) if access.user_id and _is_uuid(access.user_id) else None
        grants = [GrantView(g.role, g.site_id) for g in (user.grants if user else [])]
        if user is None:  # a token from a trusted external issuer
            claims = await runtime.authority.tokens.verify(request.headers["authorization"].split(" ", 1)[1])
            grants = [GrantView(role, site) for role, site in claims.grants]
        return Me(
            id=access.user_id or "",
            email=user.email if user else None,
            full_name=user.full_name if user else None,
            is_active=user.active if user else True,
            roles=grants,
            permissions=access.permissions(),
        )


def _is_uuid(value: str) -> bool:
    try:
        UUID(value)
        return True
    except ValueError:
        return False
