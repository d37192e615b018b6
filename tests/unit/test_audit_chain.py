"""The canonical forms of tamper evidence, pinned by the worked vector the README documents, and the
offline checker's promise: it imports nothing that needs a database or a server."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from uuid import UUID

from application.ports import NewEvent
from domain.identity.user import WITHHELD_FIELDS
from infrastructure.audit import chain

ROOT = Path(__file__).resolve().parents[2]

VECTOR = NewEvent(
    event_id=UUID("00000000-0000-4000-8000-000000000001"), stream_id="plugin:hello", stream_type="plugin",
    stream_version=1, event_type="Plugin.Installed", payload={"version": "1.0.0", "plugin_id": "hello"},
    metadata={"actor": "user:42", "correlation_id": "c-7"},
    recorded_at=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc), site_id="site-a", schema_version=1,
)  # fmt: skip
VECTOR_BODY = (
    '["charter-event",2,"00000000-0000-4000-8000-000000000001","plugin:hello","plugin",1,"Plugin.Installed",1,'
    '"site-a","2026-01-02T03:04:05.678901Z",{"plugin_id":"hello","version":"1.0.0"},'
    '{"actor":"user:42","correlation_id":"c-7"}]'
)
VECTOR_HASH = "1688c78ebeb56b097e5c7a244ecdeee85edf573f8bd0af9dad63be68986f8915"


class TestChainVersion2:
    def test_the_readme_vector_body_and_hash(self) -> None:
        body = chain.body_v2(
            str(VECTOR.event_id), VECTOR.stream_id, VECTOR.stream_type, VECTOR.stream_version, VECTOR.event_type,
            VECTOR.schema_version, VECTOR.site_id, chain.utc_instant(VECTOR.recorded_at), VECTOR.payload, VECTOR.metadata,
        )  # fmt: skip

        assert body.decode() == VECTOR_BODY
        assert hashlib.sha256(chain.GENESIS + body).hexdigest() == VECTOR_HASH == chain.hash_v2(chain.GENESIS, VECTOR).hex()

    def test_every_part_of_the_event_is_covered(self) -> None:
        import dataclasses

        changes = {
            "stream_type": "other", "event_type": "Plugin.Removed", "schema_version": 2, "site_id": None,
            "recorded_at": VECTOR.recorded_at + timedelta(microseconds=1), "metadata": {"actor": "user:43"},
            "payload": {"version": "1.0.1", "plugin_id": "hello"}, "stream_version": 2, "stream_id": "plugin:bye",
        }  # fmt: skip
        for field, value in changes.items():
            assert chain.hash_v2(chain.GENESIS, dataclasses.replace(VECTOR, **{field: value})).hex() != VECTOR_HASH, field

    def test_a_time_with_an_offset_is_hashed_as_the_same_utc_instant(self) -> None:
        import dataclasses

        there = VECTOR.recorded_at.astimezone(timezone(timedelta(hours=5, minutes=30)))
        assert chain.hash_v2(chain.GENESIS, dataclasses.replace(VECTOR, recorded_at=there)).hex() == VECTOR_HASH

    def test_withheld_fields_are_covered_by_their_digest(self) -> None:
        payload = {"email": "a@b.c", "password_hash": "$argon2id$v=19$x"}

        withheld = chain.withhold(payload)

        assert withheld["password_hash"] == {"withheld": "sha256:" + hashlib.sha256(b'"$argon2id$v=19$x"').hexdigest()}
        assert chain.withhold(withheld, already=["password_hash"]) == withheld
        assert chain.WITHHELD_V2 == WITHHELD_FIELDS


class TestMerkleRoot:
    def test_leaves_pair_up_and_an_odd_one_goes_up_as_it_is(self) -> None:
        a, b, c = (chain.leaf(p, bytes(32)) for p in (1, 2, 3))
        ab = hashlib.sha256(b"\x01" + a + b).digest()

        assert chain.merkle_root([a, b, c]) == hashlib.sha256(b"\x01" + ab + c).digest()
        assert chain.merkle_root([]) == hashlib.sha256(b"").digest()
        assert chain.leaf(1, bytes(32)) == hashlib.sha256(b"\x00" + (1).to_bytes(8, "big") + bytes(32)).digest()

    def test_position_runs(self) -> None:
        assert chain.position_runs([5, 1, 2, 3, 7, 8]) == [[1, 3], [5, 5], [7, 8]]


def test_the_offline_check_imports_no_database_driver_nor_server(tmp_path: Path) -> None:
    export = tmp_path / "empty.jsonl"
    export.write_text('{"format":"charter-audit-export/1","exported_at":""}\n{"end":true,"events":0}\n')
    from infrastructure.audit.signing import Signer

    (tmp_path / "public.pem").write_text(Signer.load_or_create(tmp_path / "key.pem").public_pem)
    script = (
        "import sys\nfrom interfaces.cli import main\ncode = main(['audit', 'check', sys.argv[1], '--public-key', sys.argv[2]])\n"
        "loaded = [m for m in ('asyncpg', 'litestar', 'nats', 'uvicorn', 'psycopg') if m in sys.modules]\n"
        "print('LOADED', loaded)\nsys.exit(code)\n"
    )
    run = subprocess.run([sys.executable, "-c", script, str(export), str(tmp_path / "public.pem")], cwd=ROOT,
                         capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, timeout=60)  # fmt: skip

    assert run.returncode == 0, run.stdout + run.stderr
    assert "LOADED []" in run.stdout and "no findings" in run.stdout
