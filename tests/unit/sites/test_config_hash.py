"""The configuration hash: a fixed vector (documented in DEVELOPERS.md "Sites"), and what moves it."""

from __future__ import annotations

import hashlib
import hmac

from domain.sites.config_hash import canonical, configuration_hash, digest_of, hashed_form

KEY = b"k" * 32
CONFIG = {"endpoint": "https://erp.example", "token": "s3cret", "retries": 3}
SECRETS = [("token",)]
VECTOR = "sha256:0d8acc08bfd3860ddfbc25bb34b9c8aff89fa091f94cc723dfc1b511b0b1a32e"
TOKEN_DIGEST = "hmac-sha256:b2938588d27d9c184ced682fec504b0e89df1569d609f0ff8b54334a6f71a905"


class TestTheVector:
    def test_gives_the_documented_hash(self) -> None:
        assert configuration_hash(CONFIG, SECRETS, KEY) == VECTOR

    def test_replaces_the_secret_by_its_keyed_digest(self) -> None:
        assert hashed_form(CONFIG, SECRETS, KEY) == {**CONFIG, "token": TOKEN_DIGEST}

    def test_can_be_recomputed_with_the_standard_library_from_an_export(self) -> None:
        exported = '{"endpoint":"https://erp.example","retries":3,"token":"%s"}' % TOKEN_DIGEST
        secret = hmac.new(KEY, b'"s3cret"', hashlib.sha256).hexdigest()

        assert "hmac-sha256:" + secret == TOKEN_DIGEST
        assert "sha256:" + hashlib.sha256(exported.encode()).hexdigest() == VECTOR
        assert digest_of(hashed_form(CONFIG, SECRETS, KEY)) == VECTOR


class TestCanonicalForm:
    def test_sorts_keys_at_every_depth_and_drops_whitespace(self) -> None:
        assert canonical({"b": {"y": 1, "x": [2, {"d": 0, "c": 1}]}, "a": None}) == (
            b'{"a":null,"b":{"x":[2,{"c":1,"d":0}],"y":1}}'
        )

    def test_writes_non_ascii_as_utf8(self) -> None:
        assert canonical({"site": "Zürich"}) == '{"site":"Zürich"}'.encode()

    def test_key_order_does_not_change_the_hash(self) -> None:
        reordered = {"retries": 3, "token": "s3cret", "endpoint": "https://erp.example"}

        assert configuration_hash(reordered, SECRETS, KEY) == VECTOR


class TestWhatMovesTheHash:
    def test_a_changed_secret_changes_it(self) -> None:
        assert configuration_hash({**CONFIG, "token": "other"}, SECRETS, KEY) != VECTOR

    def test_another_key_changes_it(self) -> None:
        assert configuration_hash(CONFIG, SECRETS, b"x" * 32) != VECTOR

    def test_the_secret_is_not_in_the_hashed_form(self) -> None:
        assert b"s3cret" not in canonical(hashed_form(CONFIG, SECRETS, KEY))

    def test_a_value_not_marked_secret_is_hashed_in_clear(self) -> None:
        assert configuration_hash(CONFIG, [], KEY) == digest_of(CONFIG)
