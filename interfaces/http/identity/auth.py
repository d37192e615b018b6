"""Sign-in: `/api/v1/auth` (register, login, refresh, logout, me). Each route decodes its typed body,
runs one command or sign-in use case (application/identity/signin.py) and translates the answer."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post, put
from litestar.datastructures import CacheControlHeader
from litestar.di import NamedDependency
from litestar.params import JSONBody

from application.identity.accounts import UpdateProfile
from application.identity.handlers import SignUp
from application.identity.signin import AuthenticationFailed, IssuedTokens, PasswordChangeRequired, SignIn, SignInThrottled
from domain.limits import Email, Name
from interfaces.http.bodies import FormOrJsonBody, JsonBody, json_body_size
from interfaces.http.common import command_context, written
from interfaces.http.errors import ApiError
from interfaces.http.identity.dependencies import EXECUTE, SIGN_IN, Execute
from interfaces.http.schemas import Written
from interfaces.http.security import AUTHENTICATED, PUBLIC, access_of, client_address

MAX_PASSWORD = 1024  # characters; argon2 takes any length, a request body need not
MAX_REFRESH_TOKEN = 512  # issued ones have 43
Password = Annotated[str, msgspec.Meta(max_length=MAX_PASSWORD)]
RefreshToken = Annotated[str, msgspec.Meta(max_length=MAX_REFRESH_TOKEN)]

# The one answer to a registration that passed validation, whether or not the address already had an account.
REGISTRATION_ACCEPTED = {
    "status": "accepted",
    "message": "if this address can be registered, its account now exists: sign in with the password you chose",
}


class Registration(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: Password
    full_name: Name = ""


class Login(msgspec.Struct, forbid_unknown_fields=True):
    password: Password
    username: Email | None = None
    email: Email | None = None


class ProfileUpdate(msgspec.Struct, forbid_unknown_fields=True):
    full_name: Name


class RefreshRequest(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: RefreshToken


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


NO_STORE = CacheControlHeader(no_store=True)  # tokens must not stay in any cache


def tokens(issued: IssuedTokens) -> Tokens:
    return Tokens(issued.access_token, issued.refresh_token, "bearer", issued.expires_in)


def refused(exc: AuthenticationFailed) -> ApiError:
    return ApiError(401, exc.code, exc.message)


def throttled(request: Request, retry_after: int) -> ApiError:
    request.scope.setdefault("state", {})["retry_after"] = retry_after
    return ApiError(
        429, "LOGIN_THROTTLED", f"too many failed sign-ins; retry after {retry_after}s", retry_after=retry_after
    )


class AuthController(Controller):
    path = "/api/v1/auth"
    tags = ["auth"]
    dependencies = {**EXECUTE, **SIGN_IN}
    guards = [json_body_size]

    @post(
        "/register",
        operation_id="register",
        opt=PUBLIC,
        cache_control=NO_STORE,
        status_code=202,
        dto=JsonBody,
        return_dto=None,
        summary="Create an account (no roles); the same answer whether or not the address already has one",
    )
    async def register(self, request: Request, data: JSONBody[Registration], execute: NamedDependency[Execute]) -> Response[dict[str, str]]:
        await execute(SignUp(email=data.email, password=data.password, full_name=data.full_name), command_context(request))
        return Response(REGISTRATION_ACCEPTED, status_code=202)

    @post(
        "/login",
        operation_id="login",
        opt=PUBLIC,
        cache_control=NO_STORE,
        status_code=200,
        dto=FormOrJsonBody,
        return_dto=None,
        summary="Sign in (JSON or form)",
    )
    async def login(self, request: Request, data: JSONBody[Login], sign_in: NamedDependency[SignIn]) -> Tokens:
        agent = request.headers.get("user-agent", "")
        try:
            return tokens(await sign_in.login(data.username or data.email, data.password, client_address(request), agent))
        except PasswordChangeRequired as exc:
            raise ApiError(
                403, "PASSWORD_CHANGE_REQUIRED", exc.message, password_change_token=exc.token, expires_in=exc.expires_in,
                change_password="/api/v1/auth/change-password",
            ) from None
        except SignInThrottled as exc:
            raise throttled(request, exc.retry_after) from None
        except AuthenticationFailed as exc:
            raise refused(exc) from None

    @post(
        "/refresh",
        operation_id="refreshToken",
        opt=PUBLIC,
        cache_control=NO_STORE,
        status_code=200,
        dto=JsonBody,
        return_dto=None,
        summary="Rotate the refresh token",
    )
    async def refresh(self, data: JSONBody[RefreshRequest], sign_in: NamedDependency[SignIn]) -> Tokens:
        try:
            return tokens(await sign_in.refresh(data.refresh_token))
        except AuthenticationFailed as exc:
            raise refused(exc) from None

    @post(
        "/logout",
        operation_id="logout",
        opt=AUTHENTICATED,
        status_code=200,
        dto=JsonBody,
        return_dto=None,
        summary="End this sign-in: its refresh tokens and access tokens stop working at once",
    )
    async def logout(self, request: Request, data: JSONBody[RefreshRequest], sign_in: NamedDependency[SignIn]) -> dict[str, Any]:
        claims = request.scope["state"].get("claims")
        issuer, session = (claims.issuer, claims.session_id) if claims is not None else (None, None)
        user_id = claims.subject if claims is not None and claims.issuer == sign_in.tokens.issuer else None
        await sign_in.logout(
            data.refresh_token, issuer, session, user_id, client_address(request), request.headers.get("user-agent", "")
        )
        return {"status": "signed out"}

    @get("/me", operation_id="me", opt=AUTHENTICATED, summary="The caller, its roles and effective permissions per site")
    async def me(self, request: Request, sign_in: NamedDependency[SignIn]) -> Me:
        access = access_of(request)
        user = await sign_in.user(access.user_id) if access.user_id else None
        if user is not None:
            grants = [GrantView(g.role, g.site_id) for g in user.grants]
        else:  # a token from a trusted external issuer speaks for itself
            claims = request.scope["state"].get("claims")
            grants = [GrantView(role, site) for role, site in (claims.grants if claims is not None else [])]
        return Me(
            id=access.user_id or "",
            email=user.email if user else None,
            full_name=user.full_name if user else None,
            is_active=user.active if user else True,
            roles=grants,
            permissions=access.permissions(),
        )

    @put("/me", operation_id="updateMe", opt=AUTHENTICATED, dto=JsonBody, return_dto=None, summary="Change your display name")
    async def update_me(self, request: Request, data: JSONBody[ProfileUpdate], execute: NamedDependency[Execute]) -> Response[Written]:
        user_id = access_of(request).user_id
        if not user_id or user_id.startswith("ext:"):
            raise ApiError(403, "FORBIDDEN", "only an account of this server has a display name here")
        result = await execute(UpdateProfile(user_id=user_id, full_name=data.full_name), command_context(request))
        return written(result, user_id)
