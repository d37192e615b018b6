"""Helpers for the sites e2e tests: sites, plugins with site rules, signers, validation and reads."""

from __future__ import annotations

import time
import uuid
from typing import Any

from httpx import Response

from tests.e2e.access_kit import Account, claims, send, sign
from tests.e2e.plugin_kit import installed, manifest

SITES = "/api/v1/sites"
SCHEMA = {
    "type": "object",
    "properties": {"endpoint": {"type": "string"}, "retries": {"type": "integer"}, "token": {"type": "string", "secret": True}},
    "additionalProperties": False,
}
ASPECTS = {
    "aspects": [
        {"name": "esig", "role": "quality-focal", "meaning": "Reviewed and approved"},
        {"name": "audit-trail", "role": "compliance-officer", "meaning": "Audit trail verified"},
    ],
    "distinct_signers": [["esig", "audit-trail"]],
}
CONFIG = {"endpoint": "https://erp.example", "retries": 3, "token": "s3cret-erp-token"}


def unique_site(prefix: str = "plant") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def site(site_id: str) -> str:
    return f"/api/v1/site/{site_id}"


def extension(site_id: str, plugin_id: str) -> str:
    return f"/api/v1/site/{site_id}/extensions/{plugin_id}"


async def created_site(client: Any, site_id: str | None = None, **fields: Any) -> str:
    site_id = site_id or unique_site()
    body = {"site_id": site_id, "name": f"Plant {site_id}", "timezone": "Europe/Paris", **fields}
    response = await client.post(SITES, json=body)
    assert response.status_code == 201, response.text
    return site_id


async def installed_plugin(client: Any, plugin_id: str, **fields: Any) -> str:
    await installed(client, manifest(plugin_id, **fields), auto_enable=True)
    return plugin_id


async def validate(client: Any, site_id: str, plugin_id: str, configuration: dict[str, Any] | None = None,
                   token: str | None = None) -> dict[str, Any]:
    response = await send(client, "POST", f"{extension(site_id, plugin_id)}/validate",
                          json={"configuration": configuration or {}}, token=token)
    assert response.status_code == 200, response.text
    return response.json()


async def activate(client: Any, site_id: str, plugin_id: str, configuration: dict[str, Any] | None = None,
                   token: str | None = None, **fields: Any) -> Response:
    body = {"configuration": configuration or {}, **fields}
    return await send(client, "POST", f"{extension(site_id, plugin_id)}/activate", json=body, token=token)


async def activated(client: Any, site_id: str, plugin_id: str, configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    response = await activate(client, site_id, plugin_id, configuration)
    assert response.status_code == 200, response.text
    return response.json()


async def sign_off(client: Any, site_id: str, plugin_id: str, signer: Account, aspect: str, configuration_hash: str,
                   **reauth: Any) -> Response:
    """POST a signoff as `signer`, re-authenticating with their password unless told otherwise."""
    body = {"aspect": aspect, "configuration_hash": configuration_hash, "notes": "checked against the site QMS",
            **(reauth or {"password": signer.password})}
    return await send(client, "POST", f"{extension(site_id, plugin_id)}/signoffs", json=body, token=signer.access_token)


def stale_token(client: Any, user_id: str, age: int = 600) -> str:
    """An access token of `user_id`, valid and signed by the server, but issued `age` seconds ago."""
    now = int(time.time())
    values = claims(subject=user_id, ttl=900, iat=now - age, nbf=now - age, exp=now + 300)
    return sign(values, client.app.state.runtime.authority.tokens.key)


async def read(client: Any, path: str, token: str | None = None, **params: Any) -> Response:
    return await send(client, "GET", path, params={"consistent": "true", **params}, token=token)


async def read_ok(client: Any, path: str, **params: Any) -> dict[str, Any]:
    response = await read(client, path, **params)
    assert response.status_code == 200, response.text
    return response.json()


def codes(problems: list[dict[str, Any]]) -> list[str]:
    return sorted(p["code"] for p in problems)
