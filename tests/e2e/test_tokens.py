"""Access tokens through HTTP: every way a token is refused (401 in the error envelope), tokens of a trusted
external issuer (RS256 and ES256, keys from its JWKS URL, claims mapped to roles), and deactivated users.

The module runs its own app (own database) with a known JWT signing key and one trusted external issuer
whose key set is served by a tiny HTTP server in a thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from joserfc.jwk import ECKey, KeySet, OctKey, RSAKey
from litestar.testing import AsyncTestClient

from domain.identity.access import BUILTIN_ROLES
from infrastructure.embedded.process import find_free_port
from interfaces.app import create_app
from tests.e2e.access_kit import (
    AUTH,
    USERS,
    account_with,
    assert_denied,
    assert_error,
    b64json,
    claims,
    hmac_signed,
    local_key,
    login,
    me,
    send,
    sign,
    sign_in,
    tampered,
    unb64json,
    unsigned,
)
from tests.e2e.conftest import admin_token, make_settings

SIGNING_KEY = "e2e-token-tests-signing-key"
ISSUER = "https://idp.example.test/"
AUDIENCE = "charter-e2e"
ROLE_MAP = {"ops": "plugin-admin", "site-a-admins": "site-admin@site-a"}
ME = f"{AUTH}/me"
INSTALL = "/api/v1/plugins/install"
PLUGINS = "/api/v1/plugins"


# -- the external identity provider ----------------------------------------------------------------


class Provider:
    """An identity provider: an RSA and an EC signing key, their public halves served as a JWKS."""

    def __init__(self) -> None:
        self.rsa = RSAKey.generate_key(2048, parameters={"kid": "rsa-1", "use": "sig"}, private=True)
        self.ec = ECKey.generate_key("P-256", parameters={"kid": "ec-1", "use": "sig"}, private=True)
        self.jwks = KeySet([self.rsa, self.ec]).as_dict(private=False)
        self.hits = 0
        self.url = ""

    def token(self, alg: str = "RS256", key: Any = None, kid: str | None = None, **overrides: Any) -> str:
        values = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": f"person-{uuid.uuid4().hex[:8]}",
            "iat": int(time.time()),
            "exp": int(time.time()) + 300,
            "groups": ["ops"],
        }
        values.update(overrides)
        values = {k: v for k, v in values.items() if v is not None}
        if key is None:
            key = self.rsa if alg.startswith("RS") else self.ec
        header_kid = kid or ("rsa-1" if alg.startswith("RS") else "ec-1")
        return sign(values, key, alg, kid=header_kid)


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    idp = Provider()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path != "/jwks.json":
                self.send_error(404)
                return
            idp.hits += 1
            content = json.dumps(idp.jwks).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", find_free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, name="jwks", daemon=True)
    thread.start()
    idp.url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    try:
        yield idp
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def token_settings(database_url: str, data_dir, provider: Provider):
    issuers = [
        {
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "jwks_url": provider.url,
            "role_claim": "groups",
            "role_map": ROLE_MAP,
        }
    ]
    return make_settings(database_url, data_dir, jwt_secret=SIGNING_KEY, external_issuers=json.dumps(issuers))


@pytest.fixture(scope="module")
async def token_db(databases) -> str:
    return await databases.create("tokens")


@pytest.fixture(scope="module")
async def tc(token_db, provider, tmp_path_factory) -> AsyncIterator[AsyncTestClient]:
    """A client of this module's app, carrying an administrator's Authorization header."""
    app = create_app(token_settings(token_db, tmp_path_factory.mktemp("charter-tokens"), provider))
    async with AsyncTestClient(app=app) as client:
        client.headers["Authorization"] = f"Bearer {await admin_token(client)}"
        yield client


@pytest.fixture(scope="module")
async def viewer(tc):
    """A signed-in user holding `viewer` everywhere."""
    return await account_with(tc, ("viewer", None), prefix="tokens-viewer")


def key() -> OctKey:
    return local_key(SIGNING_KEY)


def refused(response, code: str = "TOKEN_INVALID") -> dict[str, Any]:
    error = assert_error(response, 401, code)
    assert response.headers["www-authenticate"].startswith('Bearer realm="charter"'), response.headers
    return error


# -- local tokens ----------------------------------------------------------------------------------


class TestForgedLocalTokensAreAcceptedOnlyWhenRight:
    async def test_a_token_signed_with_the_servers_key_and_right_claims_is_accepted(self, tc, viewer) -> None:
        """The control case: the forging below is right, so the refusals are about what each one changes."""
        token = sign(claims(viewer.id, grants=[["viewer", None]]), key())

        response = await me(tc, token)

        assert response.status_code == 200, response.text
        assert response.json()["id"] == viewer.id

    async def test_a_token_signed_by_hand_with_the_derived_key_is_accepted(self, tc, viewer) -> None:
        """The control case of `hmac_signed`, used below with a public key as the secret."""
        token = hmac_signed(claims(viewer.id), hashlib.sha256(SIGNING_KEY.encode()).digest())

        assert (await me(tc, token)).status_code == 200

    async def test_the_token_from_login_is_the_same_kind_of_token(self, tc, viewer) -> None:
        header, payload, _ = viewer.access_token.split(".")
        values = unb64json(payload)

        assert unb64json(header)["alg"] == "HS256"
        assert values["iss"] == "charter" and values["aud"] == "charter" and values["sub"] == viewer.id
        assert values["exp"] - values["iat"] == 900
        assert values["grants"] == [["viewer", None]]


class TestRefusedTokens:
    async def test_no_token_on_a_protected_route(self, tc) -> None:
        response = await send(tc, "GET", ME, anonymous=True)

        error = refused(response, "AUTHENTICATION_REQUIRED")
        assert "Bearer" in error["message"]

    @pytest.mark.parametrize("header", ["Basic x", "Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer   ", "Token abc", "bearer-abc"])
    async def test_an_authorization_header_that_is_not_bearer(self, tc, header: str) -> None:
        response = await send(tc, "GET", ME, authorization=header)

        refused(response, "AUTHENTICATION_REQUIRED")

    @pytest.mark.parametrize("token", ["not-a-jwt", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9.e30."])
    async def test_garbage(self, tc, token: str) -> None:
        refused(await me(tc, token))

    @pytest.mark.parametrize("alg", ["none", "None", "NONE"])
    async def test_alg_none(self, tc, viewer, alg: str) -> None:
        values = claims(viewer.id, grants=[["admin", None]])
        token = f"{b64json({'alg': alg, 'typ': 'JWT'})}.{b64json(values)}."

        refused(await me(tc, token))
        refused(await send(tc, "GET", f"{USERS}", token=token))

    async def test_alg_none_keeping_a_real_signature(self, tc, viewer) -> None:
        header, payload, signature = viewer.access_token.split(".")
        token = f"{b64json({'alg': 'none', 'typ': 'JWT'})}.{payload}.{signature}"

        refused(await me(tc, token))

    async def test_wrong_issuer(self, tc, viewer) -> None:
        token = sign(claims(viewer.id, issuer="someone-else"), key())

        error = refused(await me(tc, token))
        assert "iss" in error["message"]

    async def test_no_issuer(self, tc, viewer) -> None:
        values = claims(viewer.id)
        del values["iss"]

        refused(await me(tc, sign(values, key())))

    async def test_wrong_audience(self, tc, viewer) -> None:
        token = sign(claims(viewer.id, audience="another-service"), key())

        error = refused(await me(tc, token))
        assert "aud" in error["message"]

    async def test_expired(self, tc, viewer) -> None:
        token = sign(claims(viewer.id, ttl=-5, iat=int(time.time()) - 905, nbf=int(time.time()) - 905), key())

        refused(await me(tc, token))

    async def test_without_an_expiry(self, tc, viewer) -> None:
        values = claims(viewer.id)
        del values["exp"]

        refused(await me(tc, sign(values, key())))

    async def test_without_a_subject(self, tc) -> None:
        values = claims()
        del values["sub"]

        refused(await me(tc, sign(values, key())))

    async def test_not_yet_valid(self, tc, viewer) -> None:
        token = sign(claims(viewer.id, nbf=int(time.time()) + 600), key())

        refused(await me(tc, token))

    async def test_tampered_grants(self, tc, viewer) -> None:
        """A viewer's real token, with the payload changed to claim the admin role; the signature kept."""
        token = tampered(viewer.access_token, grants=[["admin", None]])

        refused(await me(tc, token))
        refused(await send(tc, "GET", USERS, token=token))

    async def test_tampered_subject(self, tc, viewer) -> None:
        admin_id = (await me(tc, tc.headers["Authorization"].split(" ", 1)[1])).json()["id"]

        refused(await me(tc, tampered(viewer.access_token, sub=admin_id)))

    async def test_tampered_expiry(self, tc) -> None:
        """An expired token whose exp is pushed into the future is refused for its signature."""
        expired = sign(claims(ttl=-5), key())

        refused(await me(tc, tampered(expired, exp=int(time.time()) + 600)))

    async def test_a_truncated_signature(self, tc, viewer) -> None:
        refused(await me(tc, viewer.access_token[:-4]))

    async def test_signed_with_another_key(self, tc, viewer) -> None:
        other = local_key("not-the-servers-signing-key")

        refused(await me(tc, sign(claims(viewer.id, grants=[["admin", None]]), other)))

    async def test_signed_with_the_signing_key_itself_not_its_derived_key(self, tc, viewer) -> None:
        raw = OctKey.import_key(SIGNING_KEY.encode())

        refused(await me(tc, sign(claims(viewer.id), raw)))

    @pytest.mark.parametrize("alg", ["HS384", "HS512"])
    async def test_another_hmac_algorithm_with_the_right_key(self, tc, viewer, alg: str) -> None:
        refused(await me(tc, sign(claims(viewer.id), key(), alg)))

    async def test_rs256_from_an_untrusted_issuer(self, tc) -> None:
        stranger = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"}, private=True)
        token = sign(claims(issuer="https://untrusted.example.test/", audience=AUDIENCE, groups=["ops"]), stranger, "RS256", kid="rsa-1")

        refused(await me(tc, token))

    async def test_rs256_claiming_the_local_issuer(self, tc, viewer) -> None:
        stranger = RSAKey.generate_key(2048, private=True)

        refused(await me(tc, sign(claims(viewer.id, grants=[["admin", None]]), stranger, "RS256")))

    async def test_a_token_in_the_stream_url_is_refused_by_default(self, tc) -> None:
        """A token in a URL leaks (proxies, histories, browser consoles): browsers use stream tickets."""
        admin = tc.headers["Authorization"].split(" ", 1)[1]

        stream = await send(tc, "GET", "/api/v1/events/stream", params={"access_token": admin}, anonymous=True)

        assert_error(stream, 401, "AUTHENTICATION_REQUIRED", field="access_token")
        assert stream.headers["www-authenticate"] == 'Bearer realm="charter", error="invalid_request"'
        assert "stream-tickets" in stream.json()["error"]["message"]

    async def test_the_event_stream_alone_takes_the_token_from_the_query_when_allowed(self, tc, viewer) -> None:
        """CHARTER_SSE_QUERY_TOKENS=true: /events/stream reads ?access_token=; no other route does."""
        admin = tc.headers["Authorization"].split(" ", 1)[1]
        settings = tc.app.state.runtime.settings
        settings.sse_query_tokens = True
        try:
            stream = await send(tc, "GET", "/api/v1/events/stream", params={"access_token": admin}, anonymous=True)
            other = await send(tc, "GET", ME, params={"access_token": admin}, anonymous=True)
            forged = await send(tc, "GET", "/api/v1/events/stream", params={"access_token": unsigned(claims())}, anonymous=True)
        finally:
            settings.sse_query_tokens = False

        assert_error(stream, 503, "FANOUT_UNAVAILABLE")  # past the guard: this app has no NATS
        refused(other, "AUTHENTICATION_REQUIRED")
        refused(forged)
        assert forged.headers["www-authenticate"] == 'Bearer realm="charter", error="invalid_token"'


# -- a trusted external issuer ---------------------------------------------------------------------


class TestTrustedExternalIssuer:
    async def test_an_rs256_token_is_accepted_with_the_mapped_global_role(self, tc, provider) -> None:
        token = provider.token("RS256", sub="alice", groups=["ops", "unmapped-group"], name="Alice")

        response = await me(tc, token)

        assert response.status_code == 200, response.text
        body = response.json()
        assert body["id"] == "ext:alice"
        assert body["email"] is None
        assert body["is_active"] is True
        assert body["roles"] == [{"role": "plugin-admin", "site_id": None}]
        assert body["permissions"] == {"*": sorted(BUILTIN_ROLES["plugin-admin"][1])}

    async def test_the_mapped_role_opens_a_global_route(self, tc, provider) -> None:
        token = provider.token("RS256", groups=["ops"])

        response = await send(tc, "POST", INSTALL, json={}, token=token)

        assert response.status_code == 400, response.text  # past the guard; the empty body is refused
        assert_denied(await send(tc, "POST", f"{USERS}", json={}, token=token), "users:create")

    async def test_an_es256_token_is_accepted_with_a_role_at_one_site(self, tc, provider) -> None:
        token = provider.token("ES256", sub="bob", groups="site-a-admins")  # a single value, not a list

        response = await me(tc, token)

        assert response.status_code == 200, response.text
        body = response.json()
        assert body["id"] == "ext:bob"
        assert body["roles"] == [{"role": "site-admin", "site_id": "site-a"}]
        assert body["permissions"] == {"*": [], "site-a": sorted(BUILTIN_ROLES["site-admin"][1])}
        assert (await send(tc, "GET", PLUGINS, token=token)).status_code == 200
        assert_denied(await send(tc, "POST", INSTALL, json={}, token=token), "plugins:install")

    async def test_a_token_with_no_mapped_group_has_no_permission(self, tc, provider) -> None:
        token = provider.token("RS256", groups=["nobody-knows-this-group"])

        assert (await me(tc, token)).status_code == 200
        assert_denied(await send(tc, "GET", PLUGINS, token=token), "plugins:read")

    async def test_the_key_set_is_fetched_from_the_jwks_url(self, tc, provider) -> None:
        await me(tc, provider.token("RS256"))

        assert provider.hits >= 1

    @pytest.mark.parametrize(
        "change",
        [
            pytest.param({"aud": "another-service"}, id="wrong-audience"),
            pytest.param({"exp": int(time.time()) - 10, "iat": int(time.time()) - 400}, id="expired"),
            pytest.param({"exp": None}, id="no-expiry"),
            pytest.param({"sub": None}, id="no-subject"),
        ],
    )
    @pytest.mark.parametrize("alg", ["RS256", "ES256"])
    async def test_bad_claims_are_refused(self, tc, provider, alg: str, change: dict[str, Any]) -> None:
        token = provider.token(alg, **change)

        refused(await me(tc, token))

    async def test_alg_none_naming_the_issuer(self, tc, provider) -> None:
        values = {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": int(time.time()) + 300, "groups": ["ops"]}

        refused(await me(tc, unsigned(values)))

    async def test_signed_by_a_key_outside_the_key_set_with_a_known_kid(self, tc, provider) -> None:
        impostor = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"}, private=True)

        refused(await me(tc, provider.token("RS256", key=impostor, kid="rsa-1")))

    async def test_hs256_naming_the_issuer_and_signed_with_the_servers_own_key(self, tc) -> None:
        """External tokens must be asymmetric: the local HMAC key does not vouch for the external issuer."""
        token = sign(claims(issuer=ISSUER, audience=AUDIENCE, groups=["ops"]), key())

        refused(await me(tc, token))

    async def test_hs256_signed_with_the_public_key_of_the_issuer(self, tc, provider) -> None:
        """The RS256/HS256 confusion: the public key, used as an HMAC secret, is refused."""
        public_pem = provider.rsa.as_pem(private=False)
        token = hmac_signed(claims(issuer=ISSUER, audience=AUDIENCE, groups=["ops"]), public_pem, kid="rsa-1")

        refused(await me(tc, token))

    async def test_a_tampered_external_token(self, tc, provider) -> None:
        token = provider.token("ES256", groups=["site-a-admins"])

        refused(await me(tc, tampered(token, groups=["ops"])))


# -- deactivated users -----------------------------------------------------------------------------


class TestDeactivatedUser:
    async def test_its_tokens_are_refused_on_every_replica_and_it_cannot_refresh_or_sign_in(
        self, tc, token_db, provider, tmp_path_factory
    ) -> None:
        account = await account_with(tc, ("viewer", None), prefix="tokens-deactivated")
        replica = create_app(token_settings(token_db, tmp_path_factory.mktemp("charter-replica"), provider))
        async with AsyncTestClient(app=replica) as other:
            assert (await me(tc, account.access_token)).status_code == 200
            assert (await me(other, account.access_token)).status_code == 200  # same signing key, same user

            response = await send(tc, "POST", f"{USERS}/{account.id}/deactivate", json={"reason": "left the company"})
            assert response.status_code == 200, response.text
            deactivated_at = time.monotonic()

            refused(await me(tc, account.access_token), "USER_INACTIVE")
            while True:  # the other replica learns it from the read model
                answer = await me(other, account.access_token)
                if answer.status_code == 401 or time.monotonic() - deactivated_at > 2.0:
                    break
                await asyncio.sleep(0.05)
            refused(answer, "USER_INACTIVE")
            for _ in range(12):  # and both keep refusing it
                await asyncio.sleep(0.1)
                refused(await me(tc, account.access_token), "USER_INACTIVE")
                refused(await me(other, account.access_token), "USER_INACTIVE")

            refresh = await send(tc, "POST", f"{AUTH}/refresh", json={"refresh_token": account.refresh_token}, anonymous=True)
            assert refresh.status_code == 401, refresh.text
            assert refresh.json()["error"]["code"] in ("REFRESH_TOKEN_REVOKED", "USER_INACTIVE"), refresh.text
            sign_in = await send(
                tc, "POST", f"{AUTH}/login", json={"username": account.email, "password": account.password}, anonymous=True
            )
            refused(sign_in, "USER_INACTIVE")

    async def test_activating_it_again_lets_it_sign_in(self, tc) -> None:
        account = await account_with(tc, ("viewer", None), prefix="tokens-reactivated")
        assert (await send(tc, "POST", f"{USERS}/{account.id}/deactivate")).status_code == 200

        response = await send(tc, "POST", f"{USERS}/{account.id}/activate")

        assert response.status_code == 200, response.text
        tokens = await login(tc, account.email, account.password)
        deadline = time.monotonic() + 2.0
        while (answer := await me(tc, tokens["access_token"])).status_code != 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert answer.status_code == 200, answer.text

    async def test_activation_takes_effect_at_once_on_the_replica_that_made_it(self, tc) -> None:
        """Deactivation is immediate on the replica that records it (the guard's inactive set is updated
        in the request); activation must be too, or a user just activated (and even just signed in) is
        refused as deactivated until the next refresh of the guard's caches."""
        account = await account_with(tc, ("viewer", None), prefix="tokens-activated-at-once")
        assert (await send(tc, "POST", f"{USERS}/{account.id}/deactivate")).status_code == 200
        refused(await me(tc, account.access_token), "USER_INACTIVE")

        assert (await send(tc, "POST", f"{USERS}/{account.id}/activate")).status_code == 200
        # Deactivation ended the user's sessions (its after-commit reaction): the user signs in again, and
        # the new session is accepted at once.
        account = await sign_in(account, tc)
        response = await me(tc, account.access_token)

        assert response.status_code == 200, response.text
