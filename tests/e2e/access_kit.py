"""Helpers for the identity and access e2e tests: users with grants, sign-in, raw requests, forged tokens.

A user's grants are copied into the access token at sign-in, so grant first and log in afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from httpx import Response
from joserfc import jwt
from joserfc.jwk import OctKey

from tests.e2e.conftest import ADMIN_EMAIL
from tests.e2e.plugin_kit import assert_error

AUTH = "/api/v1/auth"
USERS = "/api/v1/admin/users"
ROLES = "/api/v1/admin/roles"
PERMISSIONS = "/api/v1/admin/permissions"
EVENTS = "/api/v1/events"
PASSWORD = "correct-horse-battery"


def unique_email(prefix: str = "user") -> str:
    """An address no other test uses (the e2e tests share one database)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}@access.test"


def unique_name(prefix: str = "role") -> str:
    """A role name no other test uses (roles are lowercase letters, digits, '-' and '_')."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def send(
    client: Any,
    method: str,
    url: str,
    *,
    token: str | None = None,
    authorization: str | None = None,
    anonymous: bool = False,
    **kwargs: Any,
) -> Response:
    """One request with exactly the credentials asked for: a bearer `token`, a raw `authorization` header,
    or none at all (`anonymous`), whatever Authorization header the client carries by default."""
    request = client.build_request(method, url, **kwargs)
    if anonymous or token is not None or authorization is not None:
        request.headers.pop("authorization", None)
    if token is not None:
        request.headers["authorization"] = f"Bearer {token}"
    elif authorization is not None:
        request.headers["authorization"] = authorization
    return await client.send(request)


@dataclass
class Account:
    """A user created through the admin API, signed in after its grants were made."""

    id: str
    email: str
    password: str = PASSWORD
    tokens: dict[str, Any] = field(default_factory=dict)

    @property
    def access_token(self) -> str:
        return self.tokens["access_token"]

    @property
    def refresh_token(self) -> str:
        return self.tokens["refresh_token"]

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.access_token)


async def create_user(
    client: Any,
    email: str | None = None,
    password: str = PASSWORD,
    full_name: str = "",
    is_active: bool = True,
    token: str | None = None,
) -> Account:
    """POST /admin/users as the administrator (the client's default header) or as `token`'s holder."""
    email = email or unique_email()
    body = {"email": email, "password": password, "full_name": full_name, "is_active": is_active}
    response = await send(client, "POST", USERS, json=body, token=token)
    assert response.status_code == 201, response.text
    return Account(response.json()["id"], email, password)


async def grant(
    client: Any, user_id: str, role: str, site_id: str | None = None, token: str | None = None, reason: str | None = None
) -> Response:
    params = {"site_id": site_id} if site_id else {}
    body = {"json": {"reason": reason}} if reason is not None else {}
    response = await send(client, "POST", f"{USERS}/{user_id}/roles/{role}", params=params, token=token, **body)
    assert response.status_code == 200, response.text
    return response


async def revoke(
    client: Any, user_id: str, role: str, site_id: str | None = None, token: str | None = None, reason: str | None = None
) -> Response:
    params = {"site_id": site_id} if site_id else {}
    body = {"json": {"reason": reason}} if reason is not None else {}
    response = await send(client, "DELETE", f"{USERS}/{user_id}/roles/{role}", params=params, token=token, **body)
    assert response.status_code == 200, response.text
    return response


async def login(client: Any, email: str, password: str = PASSWORD) -> dict[str, Any]:
    """POST /auth/login (JSON); answers the token body."""
    response = await send(client, "POST", f"{AUTH}/login", json={"username": email, "password": password}, anonymous=True)
    assert response.status_code == 200, response.text
    return response.json()


async def sign_in(account: Account, client: Any) -> Account:
    account.tokens = await login(client, account.email, account.password)
    return account


async def account_with(client: Any, *grants: tuple[str, str | None], prefix: str = "user") -> Account:
    """A new user holding `grants` (role, site or None), already signed in."""
    account = await create_user(client, unique_email(prefix))
    for role, site_id in grants:
        await grant(client, account.id, role, site_id)
    return await sign_in(account, client)


async def admin_id(client: Any) -> str:
    """The bootstrap administrator's id (random, so asked of /auth/me with the client's default header)."""
    response = await send(client, "GET", f"{AUTH}/me")
    assert response.status_code == 200, response.text
    return response.json()["id"]


async def me(client: Any, token: str) -> Response:
    return await send(client, "GET", f"{AUTH}/me", token=token)


# -- forged tokens ---------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def unb64json(segment: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def local_key(signing_key: str) -> OctKey:
    """The HMAC key the TokenService derives from its signing key (sha256 of it)."""
    return OctKey.import_key(hashlib.sha256(signing_key.encode()).digest())


def claims(
    subject: str | None = None,
    issuer: str = "charter",
    audience: str = "charter",
    ttl: int = 300,
    grants: list[list[Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    now = int(time.time())
    values: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject or str(uuid.uuid4()),
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "jti": uuid.uuid4().hex,
        "grants": grants if grants is not None else [],
    }
    values.update(extra)
    return {k: v for k, v in values.items() if v is not None}


def sign(values: dict[str, Any], key: Any, alg: str = "HS256", **header: Any) -> str:
    return jwt.encode({"alg": alg, "typ": "JWT", **header}, values, key, algorithms=[alg])


def hmac_signed(values: dict[str, Any], secret: bytes, **header: Any) -> str:
    """HS256 computed by hand, with any bytes as the secret (JOSE libraries refuse e.g. a public key)."""
    signing_input = f"{b64json({'alg': 'HS256', 'typ': 'JWT', **header})}.{b64json(values)}"
    digest = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(digest)}"


def unsigned(values: dict[str, Any]) -> str:
    """`header.payload.` with alg none (no signature at all)."""
    return f"{b64json({'alg': 'none', 'typ': 'JWT'})}.{b64json(values)}."


def tampered(token: str, **changes: Any) -> str:
    """The same header and signature, with claims of the payload changed."""
    header, payload, signature = token.split(".")
    values = unb64json(payload)
    values.update(changes)
    return f"{header}.{b64json(values)}.{signature}"


def assert_denied(response: Response, permission: str, site_id: str | None = None) -> dict[str, Any]:
    """403 FORBIDDEN naming the permission that was missing (and the site it was missing at)."""
    error = assert_error(response, 403, "FORBIDDEN")
    assert error["details"].get("required_permission") == permission, error
    if site_id is not None:
        assert error["details"].get("site_id") == site_id, error
    return error
