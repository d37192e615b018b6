"""Site isolation: a user granted roles only at some sites never sees the id of any other site.

Hypothesis draws a scenario: a few sites (new ids each example, e.g. `site-bravo-007-xyz`), a few users,
built-in roles granted to them at random sites (never globally), then random grant/revoke activity at
the sites (each a `User.RoleGranted` / `User.RoleRevoked` event whose site_id is that site). Every user
then gets a fresh access token (through /auth/refresh, so the token carries the user's grants as they
are now) and reads: `GET /api/v1/auth/me`, the event log (`GET /api/v1/events`, every page, with and
without filters), the users list and every user's detail (`/api/v1/admin/users`), and the live stream
(`GET /api/v1/events/stream`, replayed from the start of the JetStream stream). Properties:

- no response body (nor header) contains the id of any site ever created in this module at which the
  user holds no grant now (a plain substring search of the raw text, so a site id anywhere counts);
- what a user sees is exactly what their grants allow: the events of the sites where they hold
  `events:read` (log and stream alike), the users holding a grant at a site where they hold `users:read`
  with only those sites' grants listed, and 403 where they hold the permission nowhere;
- in particular a site-admin sees the events of their own site;
- the sites routes (issue 11): each example's sites exist, with an extension needing a compliance-officer's
  signoff active at each (one batch activation); the sites list shows exactly the user's sites, each site
  route answers for the user's own sites and 404 SITE_NOT_FOUND for the others (the same answer as a site
  that does not exist; those answers name the site the caller asked about, so they stay out of the leak
  search), and the pending signoffs are exactly the user's sites where they are compliance-officer.

The app is a real uvicorn server (relay + SSE hub on an embedded nats-server) running on an event loop of
its own in a background thread, so the test itself is a plain synchronous hypothesis test; users are a
fixed pool registered once (argon2 hashing is slow), stripped of their grants after every example.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from litestar import Litestar

from interfaces.app import create_app
from tests.conftest import DatabaseFactory, StreamFactory
from tests.e2e.conftest import ADMIN_PASSWORD, admin_token, make_settings, serve_live
from tests.e2e.plugin_kit import install, manifest

T = TypeVar("T")

ROLES = ("site-admin", "auditor", "viewer", "compliance-officer")
# The spec of the built-in roles (README, domain/identity/access.py), written out here as the test's own oracle.
EVENT_READERS = {"site-admin", "auditor", "compliance-officer"}  # hold events:read
USER_READERS = {"site-admin", "auditor"}  # hold users:read
SITE_WORDS = ("alpha", "bravo", "charlie", "delta")
POOL_SIZE = 4
PASSWORD = "pool-user-password-123"
EVENTS = "/api/v1/events"
USERS = "/api/v1/admin/users"
SIGNERS = {"compliance-officer"}  # the role the extension's compliance aspect names
EXTENSION = "isolation-erp"
SITE_READS = ("", "/features", "/status", "/audit-trail", "/capabilities/erp", f"/extensions/{EXTENSION}/signoffs",
              f"/extensions/{EXTENSION}/audit-trail")


# -- an event loop of our own, in a thread: the app lives there, hypothesis drives it from outside ----


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="site-isolation-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def cancel_the_rest() -> None:  # e.g. the NATS client's background checks
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        self.run(cancel_the_rest(), timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass(eq=False)  # hashed by identity: a key of the scenario's grant model
class PoolUser:
    email: str
    id: str
    refresh_token: str
    access_token: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


@dataclass
class World:
    loop: LoopThread
    app: Litestar
    http: httpx.AsyncClient
    admin: dict[str, str]
    admin_id: str
    users: list[PoolUser]
    server: uvicorn.Server
    serving: asyncio.Task[None]
    all_sites: list[str] = field(default_factory=list)  # every site any example created
    current: dict[PoolUser, set[tuple[str, str]]] = field(default_factory=dict)  # the grants held now
    tags: itertools.count = field(default_factory=lambda: itertools.count(1))


async def _start(databases: DatabaseFactory, streams: StreamFactory, data_dir: Path, loop: LoopThread) -> World:
    stream = streams.new("sites")
    settings_ = make_settings(
        await databases.create("sites"),
        data_dir,
        nats_url=streams.url,
        nats_stream=stream.name,
        nats_subject_prefix=stream.prefix,
        sse_heartbeat=0.2,
    )
    app = create_app(settings_)
    server, serving, url = await serve_live(app)
    http = httpx.AsyncClient(base_url=url, timeout=30)
    admin = {"Authorization": f"Bearer {await admin_token(http)}"}
    me = await http.get("/api/v1/auth/me", headers=admin)
    assert me.status_code == 200, me.text
    users = []
    for i in range(POOL_SIZE):
        email = f"pool-user-{i}@isolation.test"
        created = await http.post(USERS, json={"email": email, "password": PASSWORD, "full_name": f"Pool User {i}"}, headers=admin)
        assert created.status_code == 201, created.text
        login = await http.post("/api/v1/auth/login", json={"username": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        users.append(PoolUser(email, created.json()["id"], login.json()["refresh_token"]))
    plugin = manifest(
        EXTENSION, capabilities=["erp"], config_schema={"type": "object", "properties": {"token": {"type": "string", "secret": True}}},
        compliance={"aspects": [{"name": "audit-trail", "role": "compliance-officer", "meaning": "Audit trail verified"}]},
    )
    await _ok(await install(http, plugin, auto_enable=True, headers=admin), 201)
    await _ok(await http.post(f"{USERS}/{me.json()['id']}/roles/compliance-officer", headers=admin))  # signs everywhere
    return World(loop, app, http, admin, me.json()["id"], users, server, serving)


async def _stop(world: World) -> None:
    await world.http.aclose()
    world.server.should_exit = True
    await world.serving


@pytest.fixture(scope="module")
def world(pg_server_dsn: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    loop = LoopThread()
    databases, streams = DatabaseFactory(pg_server_dsn), StreamFactory(nats_url)
    try:
        built = loop.run(_start(databases, streams, tmp_path_factory.mktemp("charter-sites"), loop))
        try:
            yield built
        finally:
            loop.run(_stop(built))
    finally:
        try:
            loop.run(streams.delete_all())
            loop.run(databases.drop_all())
        finally:
            loop.close()


# -- scenarios --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    sites: int  # how many sites
    users: int  # how many of the pool take part
    initial: tuple[tuple[int, str, int], ...]  # (user, role, site) granted first
    toggles: tuple[tuple[int, str, int], ...]  # then each: revoke when held, else grant


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    sites = draw(st.integers(2, len(SITE_WORDS)))
    users = draw(st.integers(1, POOL_SIZE))
    step = st.tuples(st.integers(0, users - 1), st.sampled_from(ROLES), st.integers(0, sites - 1))
    initial = draw(st.lists(step, min_size=1, max_size=8, unique=True))
    toggles = draw(st.lists(step, max_size=6))
    return Scenario(sites, users, tuple(initial), tuple(toggles))


# -- the scenario, run against the server ------------------------------------------------------------


async def _ok(response: httpx.Response, status: int = 200) -> httpx.Response:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
    return response


async def _settle(world: World) -> None:
    """Until the access read model, the relay and the SSE hub have caught up with the log."""
    await _ok(await world.http.get(USERS, params={"consistent": "true", "limit": 1}, headers=world.admin))
    runtime = world.app.state.runtime
    hub = runtime.hub
    deadline = asyncio.get_running_loop().time() + 15
    while await runtime.relay_lag() > 0:
        assert asyncio.get_running_loop().time() < deadline, "the relay did not catch up"
        await asyncio.sleep(0.02)
    last = (await hub._js.stream_info(hub.stream.name)).state.last_seq
    while hub.last_seq < last or hub._pending:
        assert asyncio.get_running_loop().time() < deadline, "the SSE hub did not catch up"
        await asyncio.sleep(0.01)


async def _all_events(world: World, headers: dict[str, str], params: dict[str, Any]) -> tuple[list[httpx.Response], list[dict[str, Any]]]:
    """Every page of GET /api/v1/events: the responses and their items."""
    responses, items, skip = [], [], 0
    while True:
        response = await world.http.get(EVENTS, params={**params, "limit": 100, "skip": skip}, headers=headers)
        responses.append(response)
        if response.status_code != 200:
            return responses, items
        page = response.json()
        items += page["items"]
        if not page["has_more"]:
            return responses, items
        skip += 100


async def _sse(world: World, token: str, params: dict[str, Any]) -> tuple[int, str, dict[str, str]]:
    """The stream replayed from the start, read up to the first heartbeat (the live part is idle by then)."""

    async def read() -> tuple[int, str, dict[str, str]]:
        query = {**params, "last_event_id": 0}
        headers = {"Authorization": f"Bearer {token}"}
        async with world.http.stream("GET", f"{EVENTS}/stream", params=query, headers=headers) as response:
            if response.status_code != 200:
                await response.aread()
                return response.status_code, response.text, dict(response.headers)
            raw = b""
            async for chunk in response.aiter_raw():
                raw += chunk
                if b": heartbeat" in raw:
                    break
            return 200, raw.decode(), dict(response.headers)

    return await asyncio.wait_for(read(), 20)


def _sse_events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


@dataclass
class Seen:
    """Every raw response one user got, for the leak search."""

    bodies: list[tuple[str, str]] = field(default_factory=list)

    def add(self, label: str, response: httpx.Response) -> httpx.Response:
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        self.bodies.append((label, f"{response.status_code}\n{headers}\n\n{response.text}"))
        return response


async def _observe(world: World, user: PoolUser, held: set[tuple[str, str]], sites: list[str]) -> Seen:
    """Read everything the user may ask for; check exact visibility on the way."""
    seen = Seen()
    http, h = world.http, user.headers
    mine = {s for _, s in held}
    event_sites = {s for r, s in held if r in EVENT_READERS}
    user_sites = {s for r, s in held if r in USER_READERS}

    me = seen.add("GET /auth/me", await http.get("/api/v1/auth/me", headers=h))
    assert me.status_code == 200, me.text
    body = me.json()
    assert body["id"] == user.id
    assert {(g["role"], g["site_id"]) for g in body["roles"]} == held
    assert set(body["permissions"]) == {"*"} | mine and body["permissions"]["*"] == []

    # The event log: all of it, then with filters that name other sites, streams and the global events.
    responses, items = await _all_events(world, h, {})
    for i, r in enumerate(responses):
        seen.add(f"GET /events page {i}", r)
    if not event_sites:
        assert responses[0].status_code == 403, responses[0].text
    else:
        assert {e["site_id"] for e in items} <= event_sites
        expected = set()
        for site in event_sites:  # the administrator's view of each of the user's sites
            _, theirs = await _all_events(world, world.admin, {"site_id": site})
            assert theirs, f"site {site} has events (at least the grant that put the user there)"
            expected |= {e["event_id"] for e in theirs}
        assert {e["event_id"] for e in items} == expected, "the log shows exactly the events of the user's sites"
    for label, params in (
        *((f"site_id={s}", {"site_id": s}) for s in sites),
        ("site_id=global", {"site_id": "global"}),
        ("site_id=all current", {"site_id": ",".join(sites)}),
        ("desc", {"sort_order": "desc"}),
        *((f"stream=user:{u.id}", {"stream": f"user:{u.id}"}) for u in world.users),
        ("stream_type=user", {"stream_type": "user"}),
        ("actor=admin", {"actor": world.admin_id}),
    ):
        filtered, found = await _all_events(world, h, params)
        for i, r in enumerate(filtered):
            seen.add(f"GET /events?{label} page {i}", r)
        assert filtered[-1].status_code == (200 if event_sites else 403), filtered[-1].text
        assert {e["site_id"] for e in found} <= event_sites

    await _observe_sites(world, user, held, sites, seen)

    # The users, listed and one by one.
    listed = seen.add("GET /admin/users", await http.get(USERS, params={"consistent": "true", "limit": 100}, headers=h))
    if not user_sites:
        assert listed.status_code == 403, listed.text
    else:
        assert listed.status_code == 200, listed.text
        got = {u["id"]: {(g["role"], g["site_id"]) for g in u["roles"]} for u in listed.json()["items"]}
        expected_users = {
            other.id: {(r, s) for r, s in grants if s in user_sites}
            for other, grants in world.current.items()
            if any(s in user_sites for _, s in grants)
        }
        assert got == expected_users, "the users list shows exactly the users of the user's sites, with those sites' grants"
    seen.add("GET /admin/users?search", await http.get(USERS, params={"search": "isolation", "limit": 100}, headers=h))
    for other in [*world.users]:
        detail = seen.add(f"GET /admin/users/{other.id}", await http.get(f"{USERS}/{other.id}", params={"consistent": "true"}, headers=h))
        if not user_sites:
            assert detail.status_code == 403, detail.text
            continue
        theirs = world.current.get(other, set())
        if any(s in user_sites for _, s in theirs):
            assert detail.status_code == 200, detail.text
            assert {(g["role"], g["site_id"]) for g in detail.json()["roles"]} == {(r, s) for r, s in theirs if s in user_sites}
        else:
            assert detail.status_code == 404, detail.text
    admin_detail = seen.add("GET /admin/users/<admin>", await http.get(f"{USERS}/{world.admin_id}", headers=h))
    assert admin_detail.status_code == (404 if user_sites else 403), admin_detail.text

    # The live stream, replayed from its start: everything, and filtered to each site.
    status, text, headers = await _sse(world, user.access_token, {})
    seen.bodies.append(("GET /events/stream", f"{status}\n{headers}\n\n{text}"))
    if not event_sites:
        assert status == 403, text
    else:
        assert status == 200, text
        streamed = _sse_events(text)
        assert {e["site_id"] for e in streamed} <= event_sites
        assert {e["event_id"] for e in streamed} == {e["event_id"] for e in items}, "the stream replays exactly the log's events"
    filtered_streams = await asyncio.gather(*(_sse(world, user.access_token, {"site_id": site}) for site in sites))
    for site, (status, text, headers) in zip(sites, filtered_streams, strict=True):
        seen.bodies.append((f"GET /events/stream?site_id={site}", f"{status}\n{headers}\n\n{text}"))
        if event_sites:
            assert {e["site_id"] for e in _sse_events(text)} <= event_sites & {site}
    return seen


def _without_request_id(response: httpx.Response) -> dict[str, Any]:
    error = response.json()["error"]
    return {k: v for k, v in error.items() if k != "request_id"}


async def _observe_sites(world: World, user: PoolUser, held: set[tuple[str, str]], sites: list[str], seen: Seen) -> None:
    """The sites routes: the user's own sites answer, the others are 404 like a site that does not exist."""
    http, h = world.http, user.headers
    mine = {s for _, s in held}
    listed = seen.add("GET /sites", await http.get("/api/v1/sites", params={"consistent": "true", "limit": 100}, headers=h))
    if not mine:  # every role of the scenario holds sites:read: without a grant, nowhere
        assert listed.status_code == 403, listed.text
    else:
        assert listed.status_code == 200, listed.text
        assert {s["site_id"] for s in listed.json()["items"]} == mine, "the sites list shows exactly the user's sites"
    for site in sites:
        for tail in SITE_READS:
            response = await http.get(f"/api/v1/site/{site}{tail}", params={"consistent": "true"}, headers=h)
            if site in mine:
                seen.add(f"GET /site/{site}{tail}", response)
                assert response.status_code == 200, response.text
                continue
            never = await http.get(f"/api/v1/site/{site}-never{tail}", headers=h)
            assert response.status_code == never.status_code == 404, response.text
            expected = _without_request_id(never)
            expected["message"] = expected["message"].replace(f"{site}-never", site)
            expected["details"] = {"site_id": site}
            assert _without_request_id(response) == expected, "a hidden site answers as one that does not exist"
    pending = seen.add("GET /sites/signoffs/pending", await http.get(
        "/api/v1/sites/signoffs/pending", params={"consistent": "true"}, headers=h))
    assert pending.status_code == 200, pending.text
    assert {p["site_id"] for p in pending.json()["items"]} == {s for r, s in held if r in SIGNERS}


async def _activate_signed(world: World, sites: list[str]) -> None:
    """The extension signed (by the administrator, compliance-officer everywhere) and activated at each
    site in one batch, then reconfigured: its aspect is pending again at every site."""
    http, configuration = world.http, {"token": "isolation-secret"}
    validated = await _ok(await http.post(f"/api/v1/site/{sites[0]}/extensions/{EXTENSION}/validate",
                                          json={"configuration": configuration}, headers=world.admin))
    approved = validated.json()["configuration_hash"]
    for site in sites:
        body = {"aspect": "audit-trail", "configuration_hash": approved, "password": ADMIN_PASSWORD}
        await _ok(await http.post(f"/api/v1/site/{site}/extensions/{EXTENSION}/signoffs", json=body, headers=world.admin), 201)
    await _ok(await http.post(f"/api/v1/sites/extensions/{EXTENSION}/activate",
                              json={"site_ids": sites, "configuration": configuration}, headers=world.admin))
    for site in sites:
        await _ok(await http.put(f"/api/v1/site/{site}/extensions/{EXTENSION}/configuration",
                                 json={"configuration": {"token": "isolation-secret-2"}}, headers=world.admin))


async def _grant(world: World, user: PoolUser, role: str, site: str, grant: bool) -> None:
    path = f"{USERS}/{user.id}/roles/{role}"
    call = world.http.post if grant else world.http.delete
    await _ok(await call(path, params={"site_id": site}, headers=world.admin))


async def _run(world: World, scenario: Scenario) -> None:
    tag = next(world.tags)
    sites = [f"site-{word}-{tag:03d}-xyz" for word in SITE_WORDS[: scenario.sites]]
    world.all_sites += sites
    for site in sites:
        await _ok(await world.http.post("/api/v1/sites", json={"site_id": site, "name": site.title()}, headers=world.admin), 201)
    await _activate_signed(world, sites)
    users = world.users[: scenario.users]
    current = world.current = {u: set() for u in world.users}
    try:
        for u, role, s in scenario.initial:
            await _grant(world, users[u], role, sites[s], True)
            current[users[u]].add((role, sites[s]))
        for u, role, s in scenario.toggles:
            held = (role, sites[s]) in current[users[u]]
            await _grant(world, users[u], role, sites[s], not held)
            current[users[u]] ^= {(role, sites[s])}
        await _settle(world)
        for user in users:  # a token carrying the grants as they are now
            fresh = await _ok(await world.http.post("/api/v1/auth/refresh", json={"refresh_token": user.refresh_token}))
            user.refresh_token, user.access_token = fresh.json()["refresh_token"], fresh.json()["access_token"]
        seen_by = dict(zip(users, await asyncio.gather(*(_observe(world, u, current[u], sites) for u in users)), strict=True))
        for user, seen in seen_by.items():
            mine = {s for _, s in current[user]}
            foreign = [s for s in world.all_sites if s not in mine]
            for label, text in seen.bodies:
                leaked = [s for s in foreign if s in text]
                assert not leaked, (
                    f"{user.email} holding {sorted(current[user])} got site(s) {leaked} in {label}:\n{text[:3000]}"
                )
            if any(r == "site-admin" for r, _ in current[user]):
                own = {s for r, s in current[user] if r == "site-admin"}
                log = next(t for label, t in seen.bodies if label == "GET /events page 0")
                assert all(s in log for s in own), f"a site-admin sees the events of their own site(s) {own}"
    finally:  # strip the pool users of their grants for the next example
        for user, grants in current.items():
            for role, site in sorted(grants):
                await _grant(world, user, role, site, False)


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenario=scenarios())
@example(
    scenario=Scenario(
        sites=3,
        users=3,
        initial=((0, "site-admin", 0), (1, "auditor", 1), (1, "viewer", 0), (2, "compliance-officer", 2)),
        toggles=((1, "site-admin", 2), (2, "viewer", 1), (1, "site-admin", 2)),
    )
)
def test_site_scoped_users_never_see_other_sites(world: World, scenario: Scenario) -> None:
    world.loop.run(_run(world, scenario), timeout=120)


# -- a token issued before a revocation -----------------------------------------------------------------


async def _stale_token(world: World) -> list[str]:
    """Auditor at two sites, signs in, loses the second site: what the older token still shows of it."""
    tag = next(world.tags)
    kept, revoked = f"site-kept-{tag:03d}-xyz", f"site-gone-{tag:03d}-xyz"
    world.all_sites += [kept, revoked]
    user = world.users[0]
    held = {("auditor", kept), ("auditor", revoked)}
    try:
        for role, site in sorted(held):
            await _grant(world, user, role, site, True)
        await _settle(world)
        fresh = await _ok(await world.http.post("/api/v1/auth/refresh", json={"refresh_token": user.refresh_token}))
        user.refresh_token, token = fresh.json()["refresh_token"], fresh.json()["access_token"]
        await _grant(world, user, "auditor", revoked, False)
        held.discard(("auditor", revoked))
        await _settle(world)
        await asyncio.sleep(world.app.state.runtime.authority.refresh_every + 0.2)  # every cache has refreshed
        headers = {"Authorization": f"Bearer {token}"}
        leaks = []
        for label, path, params in (
            ("GET /auth/me", "/api/v1/auth/me", {}),
            ("GET /events", EVENTS, {"limit": 100}),
            (f"GET /events?site_id={revoked}", EVENTS, {"site_id": revoked}),
            ("GET /admin/users", USERS, {"consistent": "true", "limit": 100}),
        ):
            response = await world.http.get(path, params=params, headers=headers)
            if revoked in response.text:
                leaks.append(f"{label} -> {response.status_code}: {response.text[:400]}")
        status, text, _ = await _sse(world, token, {})
        if revoked in text:
            leaks.append(f"GET /events/stream -> {status}: {text[:400]}")
        return leaks
    finally:
        for role, site in sorted(held):
            await _grant(world, user, role, site, False)


def test_a_revoked_site_grant_stops_showing_that_site_to_an_older_token(world: World) -> None:
    """Revoking a user's role at a site must end their view of that site, as deactivating a user ends
    their access at once (Authority.inactive), not only once the access token expires (15 min)."""
    leaks = world.loop.run(_stale_token(world), timeout=60)
    assert not leaks, "a token issued before the revocation still shows the revoked site:\n" + "\n".join(leaks)
