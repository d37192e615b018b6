"""Authentication: argon2 password hashes, JWT access tokens (joserfc, authlib's JOSE library),
rotating refresh tokens stored hashed, and trusted external identity providers (JWKS)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import httpx
import msgspec
import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, OctKey

from application.identity.signin import AuthenticationFailed, RefreshTokenReused
from application.ports import RefreshGrant, Session
from domain.identity.user import Client

log = structlog.get_logger(__name__)

LOCAL_ALGORITHMS = ["HS256"]
PASSWORD_CHANGE = "password-change"  # the `purpose` of the token a temporary password signs in with
PASSWORD_CHANGE_TTL = 300  # seconds
EXTERNAL_ALGORITHMS = ["RS256", "ES256"]


class Argon2Passwords:
    """Memory-hard password hashes (argon2id), computed in a worker thread so the event loop keeps serving."""

    def __init__(self) -> None:
        self._hasher = PasswordHasher()

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        return await asyncio.to_thread(self._check, password_hash, password)

    def _check(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False


class ExternalIssuer(msgspec.Struct, frozen=True):
    """An identity provider whose tokens Charter trusts, and how its claims map to Charter roles."""

    issuer: str
    audience: str
    jwks_url: str
    role_claim: str = "roles"
    role_map: dict[str, str] = {}  # provider value -> "role" or "role@site"
    subject_prefix: str = "ext"


@dataclass
class Claims:
    subject: str
    grants: list[tuple[str, str | None]]
    issuer: str
    expires_at: int
    name: str | None = None
    token_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    grants_at: float = 0.0
    session_id: str | None = None  # `sid`: the sign-in (refresh-token family) the token was issued to
    purpose: str | None = None  # a restricted token's one use (PASSWORD_CHANGE); None: an access token


class TokenService:
    """Issues and verifies access tokens. Verified tokens are cached until they expire."""

    def __init__(
        self,
        signing_key: str,
        issuer: str = "charter",
        audience: str = "charter",
        access_ttl: int = 900,
        external: list[ExternalIssuer] | None = None,
        cache_size: int = 10000,
    ) -> None:
        self.key = OctKey.import_key(hashlib.sha256(signing_key.encode()).digest())
        self.issuer = issuer
        self.audience = audience
        self.access_ttl = access_ttl
        self.external = {e.issuer: e for e in external or []}
        self._jwks: dict[str, tuple[float, KeySet]] = {}
        self._cache: OrderedDict[str, Claims] = OrderedDict()
        self._cache_size = cache_size

    def issue(
        self, subject: str, grants: list[tuple[str, str | None]], name: str | None = None, session: str | None = None
    ) -> tuple[str, int]:
        """A signed access token; `session` (the `sid` claim) ties it to a sign-in, so it dies when that
        sign-in is revoked (logout, refresh-token reuse) rather than at its expiry."""
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + self.access_ttl,
            "jti": uuid.uuid4().hex,
            "name": name,
            "grants": [[role, site] for role, site in grants],
            "grants_at": time.time(),  # when `grants` were read: newer changes override them
        }
        if session is not None:
            claims["sid"] = session
        return jwt.encode({"alg": "HS256", "typ": "JWT"}, claims, self.key), self.access_ttl

    def issue_password_change(self, subject: str) -> tuple[str, int]:
        """A token whose only use is changing the temporary password of `subject` (no grants, no sign-in)."""
        now = int(time.time())
        claims = {
            "iss": self.issuer, "aud": self.audience, "sub": subject, "iat": now, "nbf": now,
            "exp": now + PASSWORD_CHANGE_TTL, "jti": uuid.uuid4().hex, "grants": [], "purpose": PASSWORD_CHANGE,
        }  # fmt: skip
        return jwt.encode({"alg": "HS256", "typ": "JWT"}, claims, self.key), PASSWORD_CHANGE_TTL

    async def verify(self, token: str) -> Claims:
        cached = self._cache.get(token)
        if cached is not None:
            if cached.expires_at > time.time():
                self._cache.move_to_end(token)
                return cached
            del self._cache[token]
        claims = await self._verify(token)
        self._cache[token] = claims
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return claims

    async def _verify(self, token: str) -> Claims:
        issuer = _unverified_issuer(token)
        if issuer in self.external:
            return await self._verify_external(token, self.external[issuer])
        try:
            decoded = jwt.decode(token, self.key, algorithms=LOCAL_ALGORITHMS)
            _registry(self.issuer, self.audience).validate(decoded.claims)
        except (JoseError, ValueError) as exc:
            raise AuthenticationFailed(f"access token refused: {_describe(exc)}", "TOKEN_INVALID") from None
        c = decoded.claims
        grants = [(g[0], g[1]) for g in c.get("grants", []) if isinstance(g, list) and len(g) == 2]
        grants_at = c.get("grants_at")
        grants_at = float(grants_at) if isinstance(grants_at, (int, float)) else float(c.get("iat", 0))
        sid = c.get("sid")
        purpose = c.get("purpose")
        return Claims(
            c["sub"], grants, c["iss"], int(c["exp"]), c.get("name"), c.get("jti"), c, grants_at,
            sid if isinstance(sid, str) else None, purpose if isinstance(purpose, str) else None,
        )

    async def _verify_external(self, token: str, provider: ExternalIssuer) -> Claims:
        keys = await self._keys(provider)
        try:
            decoded = jwt.decode(token, keys, algorithms=EXTERNAL_ALGORITHMS)
            _registry(provider.issuer, provider.audience).validate(decoded.claims)
        except (JoseError, ValueError) as exc:
            raise AuthenticationFailed(f"access token refused: {_describe(exc)}", "TOKEN_INVALID") from None
        c = decoded.claims
        values = c.get(provider.role_claim, [])
        values = [values] if isinstance(values, str) else values
        grants = []
        for value in values if isinstance(values, list) else []:
            mapped = provider.role_map.get(str(value))
            if mapped:
                role, _, site = mapped.partition("@")
                grants.append((role, site or None))
        return Claims(f"{provider.subject_prefix}:{c['sub']}", grants, c["iss"], int(c["exp"]), c.get("name"), c.get("jti"), c)

    async def _keys(self, provider: ExternalIssuer) -> KeySet:
        cached = self._jwks.get(provider.issuer)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                response = await client.get(provider.jwks_url)
                response.raise_for_status()
                keys = KeySet.import_key_set(response.json())
        except (httpx.HTTPError, ValueError, JoseError) as exc:
            raise AuthenticationFailed(f"keys of issuer {provider.issuer} are unavailable: {exc}", "TOKEN_INVALID") from None
        self._jwks[provider.issuer] = (time.monotonic() + 300, keys)
        return keys


def _registry(issuer: str, audience: str) -> jwt.JWTClaimsRegistry:
    return jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": audience},
        exp={"essential": True},
        sub={"essential": True},
    )


def _unverified_issuer(token: str) -> str | None:
    try:
        payload = token.split(".")[1]
        claims = msgspec.json.decode(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return claims.get("iss") if isinstance(claims, dict) else None
    except (IndexError, ValueError, msgspec.DecodeError):
        return None


def _describe(exc: Exception) -> str:
    return getattr(exc, "description", None) or str(exc) or type(exc).__name__


# -- refresh tokens --------------------------------------------------------------------------------


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class RefreshTokens:
    """Opaque refresh tokens, stored as sha256 digests. Each use rotates the token; presenting a
    token that was already rotated is taken as theft and revokes its whole family."""

    def __init__(self, pool: asyncpg.Pool, ttl: timedelta = timedelta(days=14)) -> None:
        self.pool = pool
        self.ttl = ttl

    async def issue(
        self, user_id: str, family_id: str | None = None, client: Client | None = None, conn: asyncpg.Connection | None = None
    ) -> str:
        token = secrets.token_urlsafe(32)
        runner = conn or self.pool
        client = client or Client()
        await runner.execute(
            "INSERT INTO refresh_tokens (token_hash, family_id, user_id, expires_at, client_address, user_agent)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            _digest(token),
            family_id or uuid.uuid4().hex,
            user_id,
            datetime.now(timezone.utc) + self.ttl,
            client.address,
            client.user_agent,
        )
        return token

    async def rotate(self, token: str) -> tuple[RefreshGrant, str]:
        reused_family: str | None = None
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                row = await conn.fetchrow(
                    "SELECT family_id, user_id, expires_at, rotated_at, revoked_at, client_address, user_agent FROM refresh_tokens"
                    " WHERE token_hash = $1 FOR UPDATE",
                    _digest(token),
                )
                if row is None:
                    raise AuthenticationFailed("refresh token unknown", "REFRESH_TOKEN_INVALID")
                if row["revoked_at"] is not None:
                    raise AuthenticationFailed("refresh token revoked", "REFRESH_TOKEN_REVOKED")
                if row["rotated_at"] is not None:
                    # Committed before answering: the refusal must not roll the revocation back.
                    await conn.execute(
                        "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL",
                        row["family_id"],
                    )
                    reused_family = row["family_id"]
                elif row["expires_at"] < datetime.now(timezone.utc):
                    raise AuthenticationFailed("refresh token expired", "REFRESH_TOKEN_EXPIRED")
                else:
                    await conn.execute("UPDATE refresh_tokens SET rotated_at = now() WHERE token_hash = $1", _digest(token))
                    where = Client(row["client_address"], row["user_agent"])
                    fresh = await self.issue(row["user_id"], row["family_id"], where, conn)
        if reused_family is not None:
            log.warning("refresh token reused; family revoked", family_id=reused_family, user_id=row["user_id"])
            raise RefreshTokenReused(reused_family)
        return RefreshGrant(row["user_id"], row["family_id"]), fresh

    async def revoke(self, token: str) -> str | None:
        """Revoke the sign-in `token` belongs to; answers its family id (None for an unknown token)."""
        family = await self.pool.fetchval("SELECT family_id FROM refresh_tokens WHERE token_hash = $1", _digest(token))
        if family is not None:
            await self.revoke_family(family)
        return family

    async def revoke_family(self, family_id: str) -> None:
        await self.pool.execute(
            "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL", family_id
        )

    async def revoke_user(self, user_id: str, keep: str | None = None) -> list[str]:
        rows = await self.pool.fetch(
            "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL"
            " AND family_id IS DISTINCT FROM $2 RETURNING family_id",
            user_id,
            keep,
        )
        return sorted({row["family_id"] for row in rows})

    # -- the live sign-ins (application.ports.SessionStore) ----------------------------------------

    async def owner(self, session_id: str) -> str | None:
        return await self.pool.fetchval(
            "SELECT user_id FROM refresh_tokens WHERE family_id = $1 AND revoked_at IS NULL AND rotated_at IS NULL"
            " AND expires_at > now() LIMIT 1",
            session_id,
        )

    async def sessions(self, user_id: str) -> list[Session]:
        """The user's live sign-ins, the most recently used first (at most MAX_SESSIONS)."""
        rows = await self.pool.fetch(SESSIONS, user_id, MAX_SESSIONS)
        return [Session(**dict(row)) for row in rows]


MAX_SESSIONS = 100
# A family is live while none of its tokens is revoked and its newest has not expired.
SESSIONS = """
SELECT family_id AS session_id, user_id, min(issued_at) AS started_at, max(issued_at) AS last_used_at,
       max(expires_at) AS expires_at,
       (array_agg(client_address ORDER BY issued_at))[1] AS client_address,
       (array_agg(user_agent ORDER BY issued_at))[1] AS user_agent
  FROM refresh_tokens WHERE user_id = $1
 GROUP BY family_id, user_id
HAVING count(revoked_at) = 0 AND max(expires_at) > now()
 ORDER BY max(issued_at) DESC, family_id LIMIT $2
"""


async def revoked_families(pool: Any, within: float) -> dict[str, float]:
    """Sign-ins revoked in the last `within` seconds (older ones have no live access token left), with
    when (epoch seconds). A sign-in's rows are only ever revoked, never un-revoked."""
    rows = await pool.fetch(
        "SELECT family_id, extract(epoch FROM max(revoked_at)) AS at FROM refresh_tokens"
        " WHERE revoked_at > now() - make_interval(secs => $1) GROUP BY family_id",
        within,
    )
    return {row["family_id"]: float(row["at"]) for row in rows}
