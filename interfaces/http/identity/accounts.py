"""Accounts: what a user does with their own (`/api/v1/auth`: change the password, the display name, list
and end their sign-ins) and what an administrator does with a user's (`/api/v1/admin/users/{id}`: reset
the password, list and end the sign-ins, read the user's audit trail with its sign-in history)."""

from __future__ import annotations

import secrets
from datetime import datetime

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import CacheControlHeader
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody

from application.envelope import EventEnvelope
from application.identity import accounts as a
from application.identity.signin import AuthenticationFailed, SignIn, SignInThrottled
from application.ports import Session
from interfaces.http.bodies import JsonBody, json_body_size
from interfaces.http.common import command_context, page_params, written
from interfaces.http.errors import ApiError
from interfaces.http.identity.admin import reason_of, visible_user
from interfaces.http.identity.auth import Password, refused, throttled
from interfaces.http.identity.dependencies import EXECUTE, READS, SESSIONS, SIGN_IN, Execute, IdentityReads, Sessions
from interfaces.http.schemas import Page, Reason, Written
from interfaces.http.security import AUTHENTICATED, PASSWORD_CHANGE, access_of, client_address, rule, visible_sites
from projections import event_log

NO_STORE = CacheControlHeader(no_store=True)
TEMPORARY_PASSWORD_BYTES = 15  # 20 URL-safe characters, ~120 bits
# The user stream's events an auditor reads as the sign-in history (the audit trail lists them all).
HISTORY = ("User.SignedIn", "User.SignedOut", "User.PasswordChanged", "User.PasswordReset", "User.SessionRevoked", "User.SessionsRevoked")


class PasswordChange(msgspec.Struct, forbid_unknown_fields=True):
    current_password: Password
    new_password: Password


class PasswordReset(msgspec.Struct, forbid_unknown_fields=True):
    """`temporary_password` absent: Charter makes one and answers it once."""

    temporary_password: Password | None = None


class PasswordResetDone(msgspec.Struct):
    id: str
    stream_id: str
    stream_version: int
    position: int | None
    credentials_expired: bool
    temporary_password: str | None = None  # only when Charter made it, only in this answer
    duplicate: bool = False


class SessionOut(msgspec.Struct):
    session_id: str
    started_at: datetime
    last_used_at: datetime
    expires_at: datetime
    client_address: str
    user_agent: str
    current: bool = False  # the sign-in of the token asking


def user_agent(request: Request) -> str:
    return request.headers.get("user-agent", "")


def session_out(s: Session, current: str | None) -> SessionOut:
    return SessionOut(s.session_id, s.started_at, s.last_used_at, s.expires_at, s.client_address, s.user_agent, s.session_id == current)


def session_page(found: list[Session], current: str | None, skip: int, limit: int) -> Page[SessionOut]:
    """One page of a user's live sign-ins (at most a hundred are read, the most recently used first)."""
    page_params(skip, limit, "last_used_at", "desc", {"last_used_at": None})
    items = [session_out(s, current) for s in found[skip : skip + limit]]
    return Page(total=len(found), skip=skip, limit=limit, items=items, has_more=skip + len(items) < len(found))


def own_session(request: Request, sign_in: SignIn) -> str | None:
    """The sign-in (`sid`) of the caller's token, when this server issued it."""
    claims = request.scope["state"].get("claims")
    return claims.session_id if claims is not None and claims.issuer == sign_in.tokens.issuer else None


def own_id(request: Request) -> str:
    user_id = access_of(request).user_id
    if not user_id or user_id.startswith("ext:"):
        raise ApiError(403, "FORBIDDEN", "only an account of this server has a password and sessions here")
    return user_id


def client_fields(request: Request) -> dict[str, str]:
    return {"client_address": client_address(request), "user_agent": user_agent(request)}


class AccountController(Controller):
    """The caller's own account."""

    path = "/api/v1/auth"
    tags = ["auth"]
    dependencies = {**EXECUTE, **SIGN_IN, **SESSIONS}
    guards = [json_body_size]

    @post(
        "/change-password",
        operation_id="changePassword",
        opt=PASSWORD_CHANGE,
        status_code=200,
        dto=JsonBody,
        return_dto=None,
        summary="Change your password (the current one, then the new one); every other sign-in ends",
    )
    async def change_password(self, request: Request, data: JSONBody[PasswordChange], sign_in: NamedDependency[SignIn]) -> Response[Written]:
        user_id = own_id(request)
        try:
            result = await sign_in.change_password(
                user_id, data.current_password, data.new_password, own_session(request, sign_in),
                client_address(request), user_agent(request),
            )  # fmt: skip
        except SignInThrottled as exc:
            raise throttled(request, exc.retry_after) from None
        except AuthenticationFailed as exc:
            raise refused(exc) from None
        return written(result, user_id)

    @get("/sessions", operation_id="listMySessions", opt=AUTHENTICATED, cache_control=NO_STORE, summary="Your live sign-ins")
    async def list_sessions(
        self, request: Request, sessions: NamedDependency[Sessions], sign_in: NamedDependency[SignIn],
        skip: FromQuery[int] = 0, limit: FromQuery[int] = 20,
    ) -> Page[SessionOut]:
        current = own_session(request, sign_in)
        return session_page(await sessions.of(own_id(request)), current, skip, limit)

    @delete(
        "/sessions/{session_id:str}",
        operation_id="endMySession",
        opt=AUTHENTICATED,
        status_code=200,
        dto=JsonBody,
        return_dto=None,
        summary="End one of your sign-ins: its refresh and access tokens stop at once (the body, with a reason, is optional)",
    )
    async def end_session(
        self, request: Request, execute: NamedDependency[Execute], session_id: FromPath[str], data: JSONBody[Reason | None] = None
    ) -> Response[Written]:
        user_id = own_id(request)
        cmd = a.EndSessions(user_id=user_id, session_id=session_id, reason=reason_of(data), **client_fields(request))
        return written(await execute(cmd, command_context(request)), user_id)

    @delete(
        "/sessions",
        operation_id="endMyOtherSessions",
        opt=AUTHENTICATED,
        status_code=200,
        dto=JsonBody,
        return_dto=None,
        summary="End every sign-in of yours but this one (the body, with a reason, is optional)",
    )
    async def end_other_sessions(
        self, request: Request, execute: NamedDependency[Execute], sign_in: NamedDependency[SignIn], data: JSONBody[Reason | None] = None
    ) -> Response[Written]:
        user_id = own_id(request)
        cmd = a.EndSessions(
            user_id=user_id, keep_session=own_session(request, sign_in), reason=reason_of(data), **client_fields(request)
        )
        return written(await execute(cmd, command_context(request)), user_id)


class UserAccountAdminController(Controller):
    """A user's password, sign-ins and audit trail, for administrators (site-scoped like the users list)."""

    path = "/api/v1/admin/users"
    tags = ["admin"]
    dependencies = {**EXECUTE, **READS, **SESSIONS}
    guards = [json_body_size]

    @post(
        "/{user_id:str}/reset-password",
        operation_id="resetPassword",
        opt=rule("users:manage"),
        status_code=200,
        dto=JsonBody,
        return_dto=None,
        cache_control=NO_STORE,
        summary="Set a temporary password (given, or made and answered once): it must be changed at the next sign-in; every sign-in ends",
    )
    async def reset_password(
        self, request: Request, execute: NamedDependency[Execute], user_id: FromPath[str], data: JSONBody[PasswordReset | None] = None
    ) -> Response[PasswordResetDone]:
        given = data.temporary_password if data is not None else None
        password = given or secrets.token_urlsafe(TEMPORARY_PASSWORD_BYTES)
        result = await execute(a.ResetPassword(user_id=user_id, password=password, **client_fields(request)), command_context(request))
        # A replayed Idempotency-Key answers the first reset, whose password this request did not make.
        shown = None if given or result.duplicate else password
        done = PasswordResetDone(user_id, result.stream_id, result.version, result.position, True, shown, result.duplicate)
        return Response(done, headers={"ETag": f'"{result.version}"'})

    @get("/{user_id:str}/sessions", operation_id="listUserSessions", opt=rule("users:read", "any-site"), cache_control=NO_STORE)
    async def list_sessions(
        self, request: Request, reads: NamedDependency[IdentityReads], sessions: NamedDependency[Sessions], user_id: FromPath[str],
        skip: FromQuery[int] = 0, limit: FromQuery[int] = 20,
    ) -> Page[SessionOut]:
        await visible_user(request, reads, user_id)
        return session_page(await sessions.of(user_id), None, skip, limit)

    @delete(
        "/{user_id:str}/sessions/{session_id:str}",
        operation_id="endUserSession",
        opt=rule("users:manage"),
        status_code=200,
        dto=JsonBody,
        return_dto=None,
        summary="End one sign-in of a user: its refresh and access tokens stop at once (the body, with a reason, is optional)",
    )
    async def end_session(
        self, request: Request, execute: NamedDependency[Execute], user_id: FromPath[str], session_id: FromPath[str],
        data: JSONBody[Reason | None] = None,
    ) -> Response[Written]:
        cmd = a.EndSessions(user_id=user_id, session_id=session_id, reason=reason_of(data), **client_fields(request))
        return written(await execute(cmd, command_context(request)), user_id)

    @delete(
        "/{user_id:str}/sessions",
        operation_id="endUserSessions",
        opt=rule("users:manage"),
        status_code=200,
        dto=JsonBody,
        return_dto=None,
        summary="End every sign-in of a user (the body, with a reason, is optional)",
    )
    async def end_sessions(
        self, request: Request, execute: NamedDependency[Execute], user_id: FromPath[str], data: JSONBody[Reason | None] = None
    ) -> Response[Written]:
        cmd = a.EndSessions(user_id=user_id, reason=reason_of(data), **client_fields(request))
        return written(await execute(cmd, command_context(request)), user_id)

    @get(
        "/{user_id:str}/audit-trail",
        operation_id="userAuditTrail",
        opt=rule("users:read", "any-site"),
        summary="The user's events, newest first (history=true: only sign-ins, sign-outs, passwords and ended sessions)",
    )
    async def audit_trail(
        self,
        request: Request,
        reads: NamedDependency[IdentityReads],
        user_id: FromPath[str],
        history: FromQuery[bool] = False,
        skip: FromQuery[int] = 0,
        limit: FromQuery[int] = 50,
        sort_order: FromQuery[str] = "desc",
    ) -> Page[EventEnvelope]:
        page_params(skip, limit, "position", sort_order, {"position": "position"})
        await visible_user(request, reads, user_id)
        query = event_log.EventQuery(
            stream_id=f"user:{user_id}", event_type=",".join(HISTORY) if history else None,
            visible_sites=visible_sites(request, "users:read"), with_global=True,
        )  # fmt: skip
        total, items = await event_log.list_events(reads.pool, query, skip, limit, sort_order == "desc")
        return Page(total=total, skip=skip, limit=limit, items=items, has_more=skip + len(items) < total)
