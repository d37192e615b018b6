"""The authorization matrix: every route of the OpenAPI document x every built-in role, granted everywhere
or at site-a only (asked about site-a, its own site, and site-b, another one), plus no token at all.

The permission each route needs is written down here, by hand, from the API's description: it is not read
from the routes' declared rules (that would only check the rules against themselves). A route the OpenAPI
document lists without an entry in ROUTES fails `test_every_documented_route_has_an_expected_rule`.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from domain.identity.access import BUILTIN_ROLES, grants
from tests.e2e.access_kit import Account, account_with, create_user, grant, send, unique_email

SITE = "site-a"  # where the site-scoped accounts hold their role
OTHER_SITE = "site-b"  # a site they hold nothing at
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@dataclass(frozen=True)
class Expect:
    """`scope`: public (no token needed), authenticated (any valid token), global (the permission held
    everywhere), any-site (held everywhere or at some site), site (held at the site named by ?site_id=,
    or everywhere when no site is named), at-site (held at the site named in the path, /site/{site_id}:
    a caller not holding `sites:read` there is answered 404 SITE_NOT_FOUND, as for a site that does not
    exist)."""

    permission: str | None
    scope: str


PUBLIC = Expect(None, "public")
AUTHENTICATED = Expect(None, "authenticated")


def needs(permission: str, scope: str = "global") -> Expect:
    return Expect(permission, scope)


def at_site(permission: str) -> Expect:
    return Expect(permission, "at-site")


ROUTES: dict[tuple[str, str], Expect] = {
    # operations
    ("GET", "/health"): PUBLIC,
    ("GET", "/ready"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    # sign-in
    ("POST", "/api/v1/auth/register"): PUBLIC,
    ("POST", "/api/v1/auth/login"): PUBLIC,
    ("POST", "/api/v1/auth/refresh"): PUBLIC,
    ("POST", "/api/v1/auth/logout"): AUTHENTICATED,
    ("GET", "/api/v1/auth/me"): AUTHENTICATED,
    ("PUT", "/api/v1/auth/me"): AUTHENTICATED,
    ("POST", "/api/v1/auth/change-password"): AUTHENTICATED,
    ("GET", "/api/v1/auth/sessions"): AUTHENTICATED,
    ("DELETE", "/api/v1/auth/sessions"): AUTHENTICATED,
    ("DELETE", "/api/v1/auth/sessions/{session_id}"): AUTHENTICATED,
    # plugin catalog: reading is for everyone with a role somewhere; changing is global only
    ("GET", "/api/v1/plugins"): needs("plugins:read", "any-site"),
    ("GET", "/api/v1/plugins/{plugin_id}"): needs("plugins:read", "any-site"),
    ("GET", "/api/v1/plugins/{plugin_id}/config"): needs("plugins:read", "any-site"),
    ("GET", "/api/v1/archives/{sha256}"): needs("plugins:read", "any-site"),
    ("POST", "/api/v1/plugins/install"): needs("plugins:install"),
    ("PUT", "/api/v1/plugins/{plugin_id}"): needs("plugins:update"),
    ("POST", "/api/v1/plugins/{plugin_id}/rollback"): needs("plugins:update"),
    ("POST", "/api/v1/plugins/{plugin_id}/enable"): needs("plugins:operate"),
    ("POST", "/api/v1/plugins/{plugin_id}/disable"): needs("plugins:operate"),
    ("POST", "/api/v1/plugins/{plugin_id}/restart"): needs("plugins:operate"),
    ("POST", "/api/v1/plugins/{plugin_id}/reload"): needs("plugins:operate"),
    ("DELETE", "/api/v1/plugins/{plugin_id}"): needs("plugins:uninstall"),
    ("PUT", "/api/v1/plugins/{plugin_id}/config"): needs("plugins:configure"),
    ("POST", "/api/v1/plugins/{plugin_id}/config/declassify"): needs("plugins:declassify"),
    # the event log (results limited to the caller's sites)
    ("GET", "/api/v1/events"): needs("events:read", "any-site"),
    ("GET", "/api/v1/events/stream"): needs("events:read", "any-site"),
    ("POST", "/api/v1/events/stream-tickets"): needs("events:read", "any-site"),
    # administration
    ("GET", "/api/v1/admin/users"): needs("users:read", "any-site"),
    ("GET", "/api/v1/admin/users/{user_id}"): needs("users:read", "any-site"),
    ("POST", "/api/v1/admin/users"): needs("users:create"),
    ("POST", "/api/v1/admin/users/{user_id}/activate"): needs("users:manage"),
    ("POST", "/api/v1/admin/users/{user_id}/deactivate"): needs("users:manage"),
    ("POST", "/api/v1/admin/users/{user_id}/roles/{role}"): needs("roles:grant", "site"),
    ("DELETE", "/api/v1/admin/users/{user_id}/roles/{role}"): needs("roles:grant", "site"),
    ("POST", "/api/v1/admin/users/{user_id}/reset-password"): needs("users:manage"),
    ("GET", "/api/v1/admin/users/{user_id}/sessions"): needs("users:read", "any-site"),
    ("DELETE", "/api/v1/admin/users/{user_id}/sessions"): needs("users:manage"),
    ("DELETE", "/api/v1/admin/users/{user_id}/sessions/{session_id}"): needs("users:manage"),
    ("GET", "/api/v1/admin/users/{user_id}/audit-trail"): needs("users:read", "any-site"),
    ("GET", "/api/v1/admin/roles"): needs("roles:read", "any-site"),
    ("GET", "/api/v1/admin/roles/{role_id}"): needs("roles:read", "any-site"),
    ("POST", "/api/v1/admin/roles"): needs("roles:manage"),
    ("PUT", "/api/v1/admin/roles/{role_id}"): needs("roles:manage"),
    ("DELETE", "/api/v1/admin/roles/{role_id}"): needs("roles:manage"),
    ("GET", "/api/v1/admin/permissions"): needs("roles:read", "any-site"),
    ("POST", "/api/v1/admin/permissions"): needs("roles:manage"),
    # tamper evidence: the public key is for anyone (auditors verify offline); online verification is global
    ("GET", "/api/v1/audit/public-key"): PUBLIC,
    ("GET", "/api/v1/audit/verify"): needs("audit:read"),
    # sites: a site shows only to those holding sites:read there (or everywhere)
    ("GET", "/api/v1/sites"): needs("sites:read", "any-site"),
    ("POST", "/api/v1/sites"): needs("sites:create"),
    ("GET", "/api/v1/sites/signoffs/pending"): AUTHENTICATED,
    ("POST", "/api/v1/sites/extensions/{plugin_id}/activate"): needs("extensions:activate", "any-site"),
    ("POST", "/api/v1/sites/extensions/{plugin_id}/deactivate"): needs("extensions:deactivate", "any-site"),
    ("GET", "/api/v1/site/{site_id}"): at_site("sites:read"),
    ("GET", "/api/v1/site/{site_id}/features"): at_site("sites:read"),
    ("GET", "/api/v1/site/{site_id}/capabilities/{name}"): at_site("sites:read"),
    ("GET", "/api/v1/site/{site_id}/status"): at_site("sites:read"),
    ("GET", "/api/v1/site/{site_id}/audit-trail"): at_site("sites:read"),
    ("POST", "/api/v1/site/{site_id}/extensions/validate-combination"): at_site("sites:read"),
    ("POST", "/api/v1/site/{site_id}/extensions/{plugin_id}/validate"): at_site("sites:read"),
    ("POST", "/api/v1/site/{site_id}/extensions/{plugin_id}/activate"): at_site("extensions:activate"),
    ("PUT", "/api/v1/site/{site_id}/extensions/{plugin_id}/configuration"): at_site("extensions:configure"),
    ("DELETE", "/api/v1/site/{site_id}/extensions/{plugin_id}"): at_site("extensions:deactivate"),
    ("GET", "/api/v1/site/{site_id}/extensions/{plugin_id}/signoffs"): at_site("sites:read"),
    ("POST", "/api/v1/site/{site_id}/extensions/{plugin_id}/signoffs"): at_site("signoffs:sign"),
    ("GET", "/api/v1/site/{site_id}/extensions/{plugin_id}/audit-trail"): at_site("sites:read"),
    ("GET", "/api/v1/site/{site_id}/reports/compliance"): at_site("reports:read"),
    ("GET", "/api/v1/site/{site_id}/reports/archive"): at_site("reports:read"),
    ("GET", "/api/v1/site/{site_id}/reports/archive/{report_id}"): at_site("reports:read"),
    # tasks: global or one site's; the route lets in a holder at any site, the task's own site decides
    # (a task of a site the caller holds nothing at is not found), so every route is any-site here
    ("GET", "/api/v1/tasks"): needs("tasks:read", "any-site"),
    ("GET", "/api/v1/tasks/{task_id}"): needs("tasks:read", "any-site"),
    ("GET", "/api/v1/tasks/{task_id}/runs"): needs("tasks:read", "any-site"),
    ("POST", "/api/v1/tasks"): needs("tasks:write", "any-site"),
    ("PUT", "/api/v1/tasks/{task_id}"): needs("tasks:write", "any-site"),
    ("DELETE", "/api/v1/tasks/{task_id}"): needs("tasks:write", "any-site"),
    ("POST", "/api/v1/tasks/{task_id}/run"): needs("tasks:run", "any-site"),
    ("POST", "/api/v1/tasks/{task_id}/pause"): needs("tasks:run", "any-site"),
    ("POST", "/api/v1/tasks/{task_id}/resume"): needs("tasks:run", "any-site"),
    ("POST", "/api/v1/tasks/{task_id}/runs/{run_id}/cancel"): needs("tasks:run", "any-site"),
}

# Path values that name nothing, so an allowed call changes nothing (404, 400 or 409 at most).
PATH_VALUES = {
    "plugin_id": "authz-matrix-no-such-plugin",
    "user_id": str(uuid.UUID(int=0xA11CE)),
    "role": "viewer",
    "role_id": "authz-matrix-no-such-role",
    "sha256": "0" * 64,
    "name": "authz-matrix-no-such-capability",
    "task_id": "authz-matrix-no-such-task",
    "run_id": str(uuid.UUID(int=0x7A5C)),
    "report_id": str(uuid.UUID(int=0x7A5D)),
    "session_id": "authz-matrix-no-such-session",
}


def fill(template: str, site_id: str = SITE) -> str:
    path = template.replace("{site_id}", site_id)
    for name, value in PATH_VALUES.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"no value for a path parameter of {template}"
    return path


@dataclass(frozen=True)
class Probe:
    """Who asks (a built-in role granted everywhere or at one site, or nobody) and about which site."""

    role: str | None
    granted_at: str | None = None
    asks_site: str | None = None

    def __str__(self) -> str:
        if self.role is None:
            return "no token"
        where = f"@{self.granted_at}" if self.granted_at else " everywhere"
        asks = f" asking ?site_id={self.asks_site}" if self.asks_site else ""
        return f"{self.role}{where}{asks}"


def probes(expect: Expect) -> list[Probe]:
    found = [Probe(None)]
    for role in BUILTIN_ROLES:
        found += [Probe(role), Probe(role, SITE, SITE), Probe(role, SITE, OTHER_SITE)]
        if expect.scope == "site":
            found += [Probe(role, SITE, None), Probe(role, None, OTHER_SITE)]
        if expect.scope == "at-site":
            found += [Probe(role, None, OTHER_SITE)]
    return found


def holds(probe: Probe, permission: str, site: str | None) -> bool:
    """Does the probe's role, where it is granted, cover `permission` at `site`?"""
    if probe.role is None or not any(grants(p, permission) for p in BUILTIN_ROLES[probe.role][1]):
        return False
    return probe.granted_at is None or probe.granted_at == (site or SITE)


def expected_allowed(expect: Expect, probe: Probe) -> bool:
    """The decision, from BUILTIN_ROLES and the table above."""
    if expect.scope == "public":
        return True
    if probe.role is None:
        return False
    if expect.scope == "authenticated":
        return True
    holds = any(grants(p, expect.permission) for p in BUILTIN_ROLES[probe.role][1])
    if not holds:
        return False
    if probe.granted_at is None:
        return True
    if expect.scope == "any-site":
        return True
    if expect.scope == "site":
        return probe.asks_site == probe.granted_at
    if expect.scope == "at-site":
        return probe.granted_at == (probe.asks_site or SITE)
    return False  # a global permission held at one site only


def hidden(expect: Expect, probe: Probe) -> bool:
    """A refused caller who cannot see the site at all is told it does not exist."""
    return expect.scope == "at-site" and not holds(probe, "sites:read", probe.asks_site)


def problem(expect: Expect, probe: Probe, response: Any) -> str | None:
    """What is wrong with the answer to `probe`, or None."""
    status = response.status_code
    try:
        error = response.json().get("error") if response.headers.get("content-type", "").startswith("application/json") else None
    except ValueError:
        error = None
    code = error.get("code") if isinstance(error, dict) else None
    if expected_allowed(expect, probe):
        if status in (401, 403):
            return f"expected allowed, got {status} {code}"
        if code == "SITE_NOT_FOUND":  # site-a and site-b exist (the `sites` fixture)
            return f"expected allowed, got {status} {code}"
        if status in (404, 405) and code in ("NOT_FOUND", "METHOD_NOT_ALLOWED"):
            return f"the request did not reach the route ({status} {code})"
        if status >= 500 and code != "FANOUT_UNAVAILABLE":
            return f"expected allowed, got a server error {status} {code}"
        return None
    if probe.role is None:
        if status != 401 or code != "AUTHENTICATION_REQUIRED":
            return f"expected 401 AUTHENTICATION_REQUIRED, got {status} {code}"
        return None
    if hidden(expect, probe):
        if status != 404 or code != "SITE_NOT_FOUND":
            return f"expected 404 SITE_NOT_FOUND (the site is hidden from the caller), got {status} {code}"
        return None
    if status != 403 or code != "FORBIDDEN":
        return f"expected 403 FORBIDDEN, got {status} {code}"
    details = error.get("details", {})
    if details.get("required_permission") != expect.permission:
        return f"403 names required_permission {details.get('required_permission')!r}, not {expect.permission!r}"
    if expect.scope in ("site", "at-site") and probe.asks_site and details.get("site_id") != probe.asks_site:
        return f"403 names site {details.get('site_id')!r}, not {probe.asks_site!r}"
    return None


@pytest.fixture(scope="module")
async def accounts(client) -> dict[tuple[str, str | None], Account]:
    """One signed-in user per built-in role and grant (everywhere, or at site-a), shared by every route."""
    wanted = [(role, site) for role in BUILTIN_ROLES for site in (None, SITE)]
    made = await asyncio.gather(*(account_with(client, (role, site), prefix=f"matrix-{role}") for role, site in wanted))
    return dict(zip(wanted, made))


@pytest.fixture(scope="module")
async def sites(client) -> None:
    """site-a and site-b exist, so an allowed call at either never answers SITE_NOT_FOUND."""
    for site_id in (SITE, OTHER_SITE):
        response = await send(client, "POST", "/api/v1/sites", json={"site_id": site_id, "name": site_id})
        assert response.status_code in (201, 409), response.text


async def ask(client, method: str, template: str, probe: Probe, accounts) -> Any:
    in_path = "{site_id}" in template
    params = {"site_id": probe.asks_site} if probe.asks_site and not in_path else {}
    kwargs: dict[str, Any] = {"params": params}
    if method in ("POST", "PUT"):
        kwargs["json"] = {}  # never a valid body: nothing is written even where the call is allowed
    path = fill(template, probe.asks_site or SITE)
    if probe.role is None:
        return await send(client, method, path, anonymous=True, **kwargs)
    account = accounts[(probe.role, probe.granted_at)]
    return await send(client, method, path, token=account.access_token, **kwargs)


async def test_every_documented_route_has_an_expected_rule(client) -> None:
    response = await send(client, "GET", "/schema/openapi.json", anonymous=True)
    assert response.status_code == 200, response.text
    documented = {
        (method.upper(), path)
        for path, operations in response.json()["paths"].items()
        for method in operations
        if method in HTTP_METHODS
    }

    missing = sorted(documented - set(ROUTES))
    stale = sorted(set(ROUTES) - documented)

    assert not missing, f"routes without an expected rule in this test's ROUTES table: {missing}"
    assert not stale, f"ROUTES names routes the OpenAPI document does not have: {stale}"


def test_the_table_names_only_known_scopes_and_permissions() -> None:
    for route, expect in ROUTES.items():
        assert expect.scope in ("public", "authenticated", "global", "any-site", "site", "at-site"), route
        assert (expect.permission is None) == (expect.scope in ("public", "authenticated")), route


@pytest.mark.parametrize(("method", "template"), list(ROUTES), ids=[f"{m} {p}" for m, p in ROUTES])
async def test_route_allows_and_denies_as_expected(client, accounts, sites, method: str, template: str) -> None:
    expect = ROUTES[(method, template)]
    if template.endswith("/events/stream") and client.app.state.runtime.settings.nats_url:
        pytest.skip("with NATS the event stream would stream forever through the in-memory client")

    failures = []
    for probe in probes(expect):
        response = await ask(client, method, template, probe, accounts)
        wrong = problem(expect, probe, response)
        if wrong:
            failures.append(f"{probe}: {wrong}: {response.text[:200]}")

    assert not failures, f"{method} {template} ({expect.permission or expect.scope}):\n" + "\n".join(failures)


async def test_every_role_is_covered_with_and_without_a_site(accounts) -> None:
    """The matrix really asked each built-in role both ways (guards against an empty fixture)."""
    assert set(accounts) == {(role, site) for role in BUILTIN_ROLES for site in (None, SITE)}


class TestSiteScopedRules:
    """Spot checks of the matrix's most delicate cells, with the full 403 body."""

    async def test_an_admin_of_one_site_may_grant_roles_there_only(self, client, accounts) -> None:
        target = accounts[("viewer", SITE)]
        site_admin = accounts[("admin", SITE)]

        at_own = await send(
            client, "POST", f"/api/v1/admin/users/{target.id}/roles/auditor", params={"site_id": SITE},
            token=site_admin.access_token,
        )
        at_other = await send(
            client, "POST", f"/api/v1/admin/users/{target.id}/roles/auditor", params={"site_id": OTHER_SITE},
            token=site_admin.access_token,
        )
        everywhere = await send(
            client, "POST", f"/api/v1/admin/users/{target.id}/roles/auditor", token=site_admin.access_token
        )

        assert at_own.status_code == 200, at_own.text
        for refused, site in ((at_other, OTHER_SITE), (everywhere, None)):
            assert refused.status_code == 403, refused.text
            error = refused.json()["error"]
            assert error["code"] == "FORBIDDEN"
            assert error["details"]["required_permission"] == "roles:grant"
            assert error["details"].get("site_id") == site
        revoked = await send(
            client, "DELETE", f"/api/v1/admin/users/{target.id}/roles/auditor", params={"site_id": SITE},
            token=site_admin.access_token,
        )
        assert revoked.status_code == 200, revoked.text

    async def test_a_global_route_ignores_a_site_named_in_the_query(self, client, accounts) -> None:
        response = await send(
            client, "POST", "/api/v1/plugins/install", params={"site_id": SITE}, json={},
            token=accounts[("admin", SITE)].access_token,
        )

        assert response.status_code == 403, response.text
        assert response.json()["error"]["details"]["required_permission"] == "plugins:install"

    async def test_a_repeated_site_id_cannot_grant_at_a_site_the_caller_does_not_hold(self, client, accounts) -> None:
        """The guard and the handler must read the same site: with `?site_id=site-a&site_id=site-b` an
        admin of site-a is either refused or acts at site-a, never at site-b."""
        target = await create_user(client, unique_email("matrix-smuggle-grant"))

        response = await send(
            client, "POST", f"/api/v1/admin/users/{target.id}/roles/admin",
            params=[("site_id", SITE), ("site_id", OTHER_SITE)], token=accounts[("admin", SITE)].access_token,
        )

        held = await send(client, "GET", f"/api/v1/admin/users/{target.id}", params={"consistent": "true"})
        sites = [(g["role"], g["site_id"]) for g in held.json()["roles"]]
        assert ("admin", OTHER_SITE) not in sites, f"{response.status_code} {response.text}: granted {sites}"
        assert response.status_code in (200, 400, 403), response.text

    async def test_a_repeated_site_id_cannot_revoke_at_a_site_the_caller_does_not_hold(self, client, accounts) -> None:
        target = await create_user(client, unique_email("matrix-smuggle-revoke"))
        await grant(client, target.id, "viewer", OTHER_SITE)

        response = await send(
            client, "DELETE", f"/api/v1/admin/users/{target.id}/roles/viewer",
            params=[("site_id", SITE), ("site_id", OTHER_SITE)], token=accounts[("admin", SITE)].access_token,
        )

        held = await send(client, "GET", f"/api/v1/admin/users/{target.id}", params={"consistent": "true"})
        sites = [(g["role"], g["site_id"]) for g in held.json()["roles"]]
        assert ("viewer", OTHER_SITE) in sites, f"{response.status_code} {response.text}: revoked at {OTHER_SITE}"
