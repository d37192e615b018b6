"""Sign-in abuse: password guessing is slowed per account and per address (429 LOGIN_THROTTLED with
Retry-After, doubling waits), an unknown account takes the same argon2 check as a known one, registration
does not tell which addresses have accounts, refused tokens count against the caller's address, the
probes keep answering when anonymous traffic is limited, and X-Forwarded-For is believed only from
trusted proxies.

Time is moved by hand where a wait is the behaviour under test: `time_passes` shifts the recorded
failures into the past instead of sleeping.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from infrastructure.identity.signin import backoff
from interfaces.app import create_app
from interfaces.http.clients import TrustedProxies
from tests.e2e.access_kit import AUTH, PASSWORD, create_user, send, unique_email
from tests.e2e.conftest import admin_token, live_server, make_settings
from tests.e2e.plugin_kit import assert_error

LOGIN = f"{AUTH}/login"
REGISTER = f"{AUTH}/register"
OPEN = "/schema/openapi.json"  # a public route in the anonymous bucket
FREE_PER_ACCOUNT = 3
FREE_PER_ADDRESS = 10
BASE = 10  # seconds: long enough that a slow machine cannot outlive a wait between two requests
CAP = 30
WINDOW = 3600


@dataclass
class App:
    client: AsyncTestClient
    database_url: str

    @property
    def runtime(self) -> Any:
        return self.client.app.state.runtime


@pytest.fixture(scope="module")
async def app(databases, tmp_path_factory) -> AsyncIterator[App]:
    """An app of its own (its own database: no other test's failures count) with small thresholds."""
    database_url = await databases.create("signin")
    settings = make_settings(
        database_url,
        tmp_path_factory.mktemp("charter-signin"),
        login_free_failures_account=FREE_PER_ACCOUNT,
        login_free_failures_ip=FREE_PER_ADDRESS,
        login_backoff_base=BASE,
        login_backoff_max=CAP,
    )
    async with AsyncTestClient(app=create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {await admin_token(client)}"
        yield App(client, database_url)


@pytest.fixture(autouse=True)
async def no_failures_yet(request) -> None:
    """Every test starts with no failed sign-in recorded (they all come from the test client's address)."""
    if "app" in request.fixturenames:
        await sql(request.getfixturevalue("app"), "DELETE FROM login_failures")


async def sql(app: App, query: str, *args: Any) -> Any:
    conn = await asyncpg.connect(app.database_url)
    try:
        return await conn.execute(query, *args)
    finally:
        await conn.close()


async def time_passes(app: App, seconds: float) -> None:
    await sql(app, "UPDATE login_failures SET last_failure = last_failure - make_interval(secs => $1)", float(seconds))


def sign_in(app: App, email: str, password: str) -> Any:
    return send(app.client, "POST", LOGIN, json={"username": email, "password": password}, anonymous=True)


def assert_throttled(response: Any, retry_after: int | None = None) -> int:
    """A 429 LOGIN_THROTTLED; its Retry-After is `retry_after` less the time since the failure that
    started the wait (an argon2 check and a request: well under the 5 s allowed on a busy machine)."""
    error = assert_error(response, 429, "LOGIN_THROTTLED")
    waited = int(response.headers["retry-after"])
    assert error["details"]["retry_after"] == waited
    if retry_after is not None:
        assert retry_after - 5 < waited <= retry_after, response.text
    return waited


def about(wait: int) -> int:
    """A Retry-After rounded up to the step it belongs to (steps are multiples of 10 s here)."""
    return -(-wait // 10) * 10


class Spy:
    """Wraps an async method of the app's password service, recording the arguments of each call."""

    def __init__(self, target: Any, name: str) -> None:
        self.target, self.name = target, name
        self.original = getattr(target, name)
        self.calls: list[tuple[Any, ...]] = []

    def __enter__(self) -> "Spy":
        async def spy(*args: Any) -> Any:
            self.calls.append(args)
            return await self.original(*args)

        setattr(self.target, self.name, spy)
        return self

    def __exit__(self, *exc: Any) -> None:
        delattr(self.target, self.name)  # back to the class's method


# -- backoff ---------------------------------------------------------------------------------------


class TestBackoffPolicy:
    def test_free_failures_cost_nothing_then_each_further_one_doubles_the_wait_up_to_the_cap(self) -> None:
        waits = [backoff(n, 3, 1.0, 20.0) for n in range(0, 10)]

        assert waits == [0, 0, 0, 0, 1, 2, 4, 8, 16, 20]

    def test_a_huge_count_does_not_overflow(self) -> None:
        assert backoff(10**6, 5, 1.0, 900.0) == 900.0


class TestAccountBackoff:
    async def test_after_its_free_failures_an_account_must_wait_even_with_the_right_password(self, app) -> None:
        account = await create_user(app.client, unique_email("throttle"))

        failed = [await sign_in(app, account.email, "wrong-password") for _ in range(FREE_PER_ACCOUNT + 1)]
        with Spy(app.runtime.passwords, "verify") as verify:
            refused = await sign_in(app, account.email, PASSWORD)

        for response in failed:
            assert_error(response, 401, "INVALID_CREDENTIALS")
        assert_throttled(refused, BASE)
        assert verify.calls == []  # refused before any password check: guessing gets no answer at all

    async def test_each_further_failure_doubles_the_wait_up_to_the_cap(self, app) -> None:
        account = await create_user(app.client, unique_email("throttle-doubling"))
        for _ in range(FREE_PER_ACCOUNT + 1):
            await sign_in(app, account.email, "wrong-password")

        waits = []
        for _ in range(3):
            waits.append(assert_throttled(await sign_in(app, account.email, "wrong-password")))
            await time_passes(app, waits[-1])
            assert_error(await sign_in(app, account.email, "wrong-password"), 401, "INVALID_CREDENTIALS")
        waits.append(assert_throttled(await sign_in(app, account.email, "wrong-password")))

        assert [about(w) for w in waits] == [BASE, 2 * BASE, CAP, CAP]

    async def test_an_unknown_account_is_throttled_exactly_like_a_known_one(self, app) -> None:
        """Otherwise a 429 would tell which addresses have accounts."""
        known = await create_user(app.client, unique_email("throttle-known"))
        answers: dict[str, list[tuple[int, str, str | None]]] = {}
        for email in (known.email, unique_email("throttle-ghost")):
            await sql(app, "DELETE FROM login_failures")
            responses = [await sign_in(app, email, "wrong-password") for _ in range(FREE_PER_ACCOUNT + 2)]
            answers[email] = [(r.status_code, r.json()["error"]["code"], r.headers.get("retry-after")) for r in responses]

        first, second = ([(status, code) for status, code, _ in a] for a in answers.values())
        assert first == second
        assert first[-1] == (429, "LOGIN_THROTTLED")
        assert [about(int(a[-1][2])) for a in answers.values()] == [BASE, BASE]

    async def test_a_successful_sign_in_starts_the_account_afresh(self, app) -> None:
        account = await create_user(app.client, unique_email("throttle-reset"))
        for _ in range(FREE_PER_ACCOUNT):
            await sign_in(app, account.email, "wrong-password")
        assert (await sign_in(app, account.email, PASSWORD)).status_code == 200

        again = [await sign_in(app, account.email, "wrong-password") for _ in range(FREE_PER_ACCOUNT + 1)]

        assert [r.status_code for r in again] == [401] * (FREE_PER_ACCOUNT + 1)
        assert_throttled(await sign_in(app, account.email, PASSWORD), BASE)

    async def test_failures_are_forgotten_after_a_quiet_hour(self, app) -> None:
        account = await create_user(app.client, unique_email("throttle-forget"))
        for _ in range(FREE_PER_ACCOUNT + 1):
            await sign_in(app, account.email, "wrong-password")
        assert_throttled(await sign_in(app, account.email, PASSWORD))

        await time_passes(app, 3601)

        assert (await sign_in(app, account.email, PASSWORD)).status_code == 200

    async def test_the_throttle_is_shared_with_other_replicas(self, app, tmp_path_factory) -> None:
        account = await create_user(app.client, unique_email("throttle-replicas"))
        for _ in range(FREE_PER_ACCOUNT + 1):
            await sign_in(app, account.email, "wrong-password")
        settings = make_settings(
            app.database_url, tmp_path_factory.mktemp("charter-signin-replica"),
            login_free_failures_account=FREE_PER_ACCOUNT, login_free_failures_ip=FREE_PER_ADDRESS,
            login_backoff_base=BASE, login_backoff_max=CAP,
        )
        async with AsyncTestClient(app=create_app(settings)) as replica:
            response = await send(replica, "POST", LOGIN, json={"username": account.email, "password": PASSWORD}, anonymous=True)

        assert_throttled(response, BASE)


class TestAddressBackoff:
    async def test_guessing_across_many_accounts_throttles_the_address(self, app) -> None:
        account = await create_user(app.client, unique_email("throttle-victim"))

        spread = [await sign_in(app, unique_email("throttle-spray"), "wrong-password") for _ in range(FREE_PER_ADDRESS + 1)]
        refused = await sign_in(app, account.email, PASSWORD)

        assert [r.status_code for r in spread] == [401] * (FREE_PER_ADDRESS + 1)
        assert_throttled(refused, BASE)

    async def test_successful_sign_ins_do_not_use_up_the_address(self, app) -> None:
        """Many people behind one address (an office) sign in all day."""
        account = await create_user(app.client, unique_email("throttle-office"))

        answers = [await sign_in(app, account.email, PASSWORD) for _ in range(FREE_PER_ADDRESS + 3)]

        assert [r.status_code for r in answers] == [200] * (FREE_PER_ADDRESS + 3)


# -- the same work for unknown accounts ------------------------------------------------------------


class TestUnknownAccountsTakeTheSameTime:
    async def test_an_unknown_address_is_checked_against_the_dummy_hash(self, app) -> None:
        with Spy(app.runtime.passwords, "verify") as verify:
            response = await sign_in(app, unique_email("ghost"), "some-password")

        assert_error(response, 401, "INVALID_CREDENTIALS")
        assert verify.calls == [(app.runtime.dummy_hash, "some-password")]

    async def test_a_string_that_is_no_address_is_checked_too(self, app) -> None:
        with Spy(app.runtime.passwords, "verify") as verify:
            response = await sign_in(app, "no-at-sign", "some-password")

        assert_error(response, 401, "INVALID_CREDENTIALS")
        assert verify.calls == [(app.runtime.dummy_hash, "some-password")]

    async def test_a_known_address_is_checked_once_against_its_own_hash(self, app) -> None:
        account = await create_user(app.client, unique_email("checked"))

        with Spy(app.runtime.passwords, "verify") as verify:
            response = await sign_in(app, account.email, "wrong-password")

        assert_error(response, 401, "INVALID_CREDENTIALS")
        [(password_hash, password)] = verify.calls
        assert password_hash.startswith("$argon2id$") and password_hash != app.runtime.dummy_hash
        assert password == "wrong-password"

    async def test_the_dummy_hash_costs_what_a_real_one_does(self, app) -> None:
        """Same algorithm and parameters as the hashes of real accounts (argon2's defaults)."""
        from argon2 import PasswordHasher, extract_parameters

        assert extract_parameters(app.runtime.dummy_hash) == extract_parameters(PasswordHasher().hash("x"))


# -- registration does not tell --------------------------------------------------------------------


def comparable(response: Any) -> tuple[int, Any, set[str]]:
    """Status, body and header names: everything but the request id and the rate-limit numbers."""
    return response.status_code, response.json(), set(response.headers)


class TestRegistrationDoesNotTell:
    async def test_a_taken_address_gets_the_same_answer_as_a_new_one(self, app) -> None:
        taken = await create_user(app.client, unique_email("taken"))

        new = await send(app.client, "POST", REGISTER, json={"email": unique_email("new"), "password": PASSWORD}, anonymous=True)
        again = await send(app.client, "POST", REGISTER, json={"email": taken.email, "password": "another-password"}, anonymous=True)
        shouted = await send(app.client, "POST", REGISTER, json={"email": taken.email.upper(), "password": PASSWORD}, anonymous=True)

        assert new.status_code == 202, new.text
        assert comparable(again) == comparable(new) == comparable(shouted)
        assert "location" not in new.headers and "etag" not in new.headers and "charter-position" not in new.headers

    async def test_the_existing_account_is_left_as_it_was(self, app) -> None:
        taken = await create_user(app.client, unique_email("kept"))
        stream = f"user:{taken.id}"
        conn = await asyncpg.connect(app.database_url)
        try:
            before = await conn.fetchval("SELECT count(*) FROM events WHERE stream_id = $1", stream)
            await send(app.client, "POST", REGISTER, json={"email": taken.email, "password": "hijack-password"}, anonymous=True)
            after = await conn.fetchval("SELECT count(*) FROM events WHERE stream_id = $1", stream)
        finally:
            await conn.close()

        assert after == before
        assert (await sign_in(app, taken.email, PASSWORD)).status_code == 200
        assert_error(await sign_in(app, taken.email, "hijack-password"), 401, "INVALID_CREDENTIALS")

    async def test_a_taken_address_costs_the_same_password_hash(self, app) -> None:
        """The slow part of registering (argon2) is done whether or not the address is taken."""
        taken = await create_user(app.client, unique_email("hashed"))

        with Spy(app.runtime.passwords, "hash") as hashing:
            await send(app.client, "POST", REGISTER, json={"email": unique_email("fresh"), "password": "first-password"}, anonymous=True)
            await send(app.client, "POST", REGISTER, json={"email": taken.email, "password": "second-password"}, anonymous=True)

        assert [args[0] for args in hashing.calls] == ["first-password", "second-password"]

    async def test_the_public_metrics_do_not_tell_either(self, app) -> None:
        """Registering a taken address counts as `SignUp ok`, like a new one (metrics are per process:
        other apps of the test run count too, so only the change is looked at)."""

        async def sign_ups() -> dict[str, float]:
            text = (await send(app.client, "GET", "/metrics", anonymous=True)).text
            return {o: float(n) for o, n in re.findall(r'charter_commands_total\{command="SignUp",outcome="([^"]*)"\} (\S+)', text)}

        taken = await create_user(app.client, unique_email("counted"))
        before = await sign_ups()
        await send(app.client, "POST", REGISTER, json={"email": taken.email, "password": PASSWORD}, anonymous=True)
        after = await sign_ups()

        changed = {o: n - before.get(o, 0.0) for o, n in after.items() if n != before.get(o, 0.0)}
        assert changed == {"ok": 1.0}

    async def test_bad_input_is_still_refused_naming_the_field(self, app) -> None:
        """Validation does not depend on the address being taken, so it may answer 400."""
        short = await send(app.client, "POST", REGISTER, json={"email": unique_email(), "password": "short"}, anonymous=True)
        nonsense = await send(app.client, "POST", REGISTER, json={"email": "nope", "password": PASSWORD}, anonymous=True)

        assert_error(short, 400, "VALIDATION_FAILED", field="password")
        assert_error(nonsense, 400, "VALIDATION_FAILED", field="email")

    async def test_a_new_account_can_sign_in_at_once(self, app) -> None:
        email = unique_email("welcome")

        await send(app.client, "POST", REGISTER, json={"email": email, "password": PASSWORD}, anonymous=True)
        response = await sign_in(app, email, PASSWORD)

        assert response.status_code == 200, response.text
        assert (await send(app.client, "GET", f"{AUTH}/me", token=response.json()["access_token"])).json()["email"] == email


# -- refused tokens and the probes -----------------------------------------------------------------


async def inside_one_window(margin: float = 20.0) -> None:
    left = WINDOW - time.time() % WINDOW
    if left < margin:
        await asyncio.sleep(left + 0.5)


@pytest.fixture
async def limited(databases, tmp_path_factory) -> AsyncIterator[AsyncTestClient]:
    """An app of its own allowing 5 anonymous requests per address and hour."""
    await inside_one_window()
    settings = make_settings(
        await databases.create("signin-limits"), tmp_path_factory.mktemp("charter-signin-limits"),
        rate_limit_anonymous=5, rate_limit_window=WINDOW, rate_limit_ops=50,
    )
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


class TestRefusedTokensCountAgainstTheAddress:
    @pytest.mark.parametrize(
        "authorization",
        ["Bearer not-a-token", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2ln", "Basic YWRtaW46YWRtaW4="],
        ids=["garbage", "bad-signature", "not-bearer"],
    )
    async def test_guessing_tokens_runs_into_the_anonymous_limit(self, limited, authorization: str) -> None:
        answers = [await send(limited, "GET", f"{AUTH}/me", authorization=authorization) for _ in range(6)]

        assert [r.status_code for r in answers] == [401] * 5 + [429]
        assert_error(answers[-1], 429, "RATE_LIMITED")
        assert int(answers[-1].headers["retry-after"]) >= 1
        assert_error(await send(limited, "GET", OPEN, anonymous=True), 429, "RATE_LIMITED")  # one bucket

    async def test_a_revoked_sign_in_counts_too(self, limited) -> None:
        tokens = (await send(limited, "POST", LOGIN, json={"username": "admin@charter.test", "password": "admin-password-for-tests"})).json()
        logout = await send(limited, "POST", f"{AUTH}/logout", json={"refresh_token": tokens["refresh_token"]}, token=tokens["access_token"])
        assert logout.status_code == 200, logout.text

        answers = [await send(limited, "GET", f"{AUTH}/me", token=tokens["access_token"]) for _ in range(5)]

        assert [r.status_code for r in answers] == [401] * 4 + [429]  # the sign-in used one anonymous request


class TestProbesAreNotLimitedByAnonymousTraffic:
    async def test_health_ready_and_metrics_answer_when_the_anonymous_bucket_is_empty(self, limited) -> None:
        while (await send(limited, "GET", OPEN, anonymous=True)).status_code != 429:
            pass

        for path in ("/health", "/ready", "/metrics"):
            response = await send(limited, "GET", path, anonymous=True)
            assert response.status_code == 200, f"{path}: {response.text}"
            assert response.headers["x-ratelimit-limit"] == "50"

    async def test_probes_have_a_limit_of_their_own(self, limited) -> None:
        answers = [await send(limited, "GET", "/health", anonymous=True) for _ in range(51)]

        assert [r.status_code for r in answers] == [200] * 50 + [429]
        assert (await send(limited, "GET", OPEN, anonymous=True)).status_code == 200  # API traffic unaffected


# -- X-Forwarded-For -------------------------------------------------------------------------------


class TestTrustedProxiesAlone:
    """`TrustedProxies.client(peer, X-Forwarded-For values)`: the resolution itself."""

    proxies = TrustedProxies.parse("10.0.0.0/8, 192.0.2.1 2001:db8::/32")

    @pytest.mark.parametrize(
        ("peer", "forwarded", "client"),
        [
            ("203.0.113.9", ["198.51.100.1"], "203.0.113.9"),  # an untrusted peer's header is ignored
            ("10.1.2.3", [], "10.1.2.3"),  # a proxy that sent no header is the client
            ("10.1.2.3", ["198.51.100.1"], "198.51.100.1"),
            ("10.1.2.3", ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),  # the left-most is the client's word
            ("10.1.2.3", ["6.6.6.6, 198.51.100.1, 10.9.9.9"], "198.51.100.1"),  # trusted hops skipped
            ("10.1.2.3", ["6.6.6.6", "198.51.100.1, 192.0.2.1"], "198.51.100.1"),  # several headers
            ("10.1.2.3", ["10.0.0.1, 10.0.0.2"], "10.0.0.1"),  # all trusted: the left-most
            ("10.1.2.3", ["not-an-ip, 198.51.100.1"], "198.51.100.1"),
            ("10.1.2.3", ["198.51.100.1, not-an-ip"], "10.1.2.3"),  # garbage from a trusted hop: stop there
            ("10.1.2.3", ["198.51.100.1:4711"], "198.51.100.1"),
            ("10.1.2.3", ["[2001:db9::1]:443"], "2001:db9::1"),
            ("2001:db8::5", ["2001:db9::1"], "2001:db9::1"),
            ("::ffff:10.1.2.3", ["198.51.100.1"], "198.51.100.1"),  # IPv4-mapped peer
            (None, ["198.51.100.1"], "unknown"),
            ("testclient", ["198.51.100.1"], "testclient"),
        ],
    )
    def test_resolution(self, peer: str | None, forwarded: list[str], client: str) -> None:
        assert self.proxies.client(peer, forwarded) == client

    def test_none_are_trusted_by_default(self) -> None:
        from infrastructure.settings import Settings

        assert Settings().trusted_proxies == ""
        assert TrustedProxies.parse("").client("127.0.0.1", ["198.51.100.1"]) == "127.0.0.1"

    def test_a_setting_that_is_not_an_address_stops_the_start(self) -> None:
        with pytest.raises(SystemExit, match="not-a-network"):
            TrustedProxies.parse("10.0.0.0/8,not-a-network")


@dataclass
class Live:
    url: str
    app: Litestar


@pytest.fixture(scope="module")
async def behind_a_proxy(databases, tmp_path_factory) -> AsyncIterator[Live]:
    """A real server (uvicorn: its own proxy-header handling is what must not interfere) that trusts one
    proxy, 127.0.0.2; requests from 127.0.0.1 come from an untrusted peer."""
    settings = make_settings(
        await databases.create("signin-proxies"), tmp_path_factory.mktemp("charter-signin-proxies"),
        trusted_proxies="127.0.0.2", rate_limit_anonymous=1000, rate_limit_window=WINDOW,
        login_free_failures_account=FREE_PER_ACCOUNT, login_free_failures_ip=2, login_backoff_base=BASE,
    )
    async with live_server(settings, as_admin=False) as served:
        yield Live(served.url, served.app)


def http_from(live: Live, source: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=live.url, transport=httpx.AsyncHTTPTransport(local_address=source), timeout=10)


def remaining(response: Any) -> int:
    assert response.status_code == 200, response.text
    return int(response.headers["x-ratelimit-remaining"])


class TestThroughARealServer:
    async def test_an_untrusted_peer_cannot_pick_its_bucket_with_the_header(self, behind_a_proxy) -> None:
        await inside_one_window()
        async with http_from(behind_a_proxy, "127.0.0.1") as direct:
            counts = [
                remaining(await direct.get(OPEN, headers={"X-Forwarded-For": f"198.51.100.{n}"})) for n in range(1, 4)
            ]

        assert counts[1] == counts[0] - 1 and counts[2] == counts[0] - 2  # one bucket: 127.0.0.1's

    async def test_behind_a_trusted_proxy_the_right_most_untrusted_address_is_the_client(self, behind_a_proxy) -> None:
        await inside_one_window()
        client = f"203.0.113.{uuid.uuid4().int % 250 + 1}"
        async with http_from(behind_a_proxy, "127.0.0.2") as proxy:
            first = remaining(await proxy.get(OPEN, headers={"X-Forwarded-For": f"6.6.6.6, {client}"}))
            spoofed_left = remaining(await proxy.get(OPEN, headers={"X-Forwarded-For": f"7.7.7.7, {client}"}))
            via_two_hops = remaining(await proxy.get(OPEN, headers={"X-Forwarded-For": f"{client}, 127.0.0.2"}))
            someone_else = remaining(await proxy.get(OPEN, headers={"X-Forwarded-For": "198.51.100.77"}))

        assert [spoofed_left, via_two_hops] == [first - 1, first - 2]  # the same client each time
        assert someone_else == 999  # a bucket of its own

    async def test_sign_in_backoff_is_per_resolved_client(self, behind_a_proxy) -> None:
        async with http_from(behind_a_proxy, "127.0.0.2") as proxy:

            def attempt(client: str) -> Any:
                body = {"username": unique_email("proxied"), "password": "wrong-password"}
                return proxy.post(LOGIN, json=body, headers={"X-Forwarded-For": client})

            guesser = [await attempt("198.51.100.66") for _ in range(4)]
            bystander = await attempt("198.51.100.67")

        assert [r.status_code for r in guesser] == [401, 401, 401, 429]
        assert_error(bystander, 401, "INVALID_CREDENTIALS")

    async def test_concurrent_guesses_are_charged_before_the_password_is_checked(self, behind_a_proxy) -> None:
        """Guesses sent at once (each from another address) cannot all get in before the first failure is
        written: exactly the free ones and the one that starts the wait are checked, the rest refused."""
        email = unique_email("throttle-burst")
        async with http_from(behind_a_proxy, "127.0.0.2") as proxy:

            def guess(n: int) -> Any:
                body = {"username": email, "password": f"guess-{n}"}
                return proxy.post(LOGIN, json=body, headers={"X-Forwarded-For": f"198.51.100.{100 + n}"})

            answers = await asyncio.gather(*(guess(n) for n in range(12)))

        codes = sorted(r.status_code for r in answers)
        assert codes == [401] * (FREE_PER_ACCOUNT + 1) + [429] * (12 - FREE_PER_ACCOUNT - 1)
