"""Verification of the log's tamper evidence, online (rows from the database) and offline (an export).

Pure: msgspec, hashlib and `cryptography` only, so `charter audit check FILE` runs where there is no
database and no Charter server. Events are fed in the global order `(transaction_id, position)`; the
`Verifier` recomputes each stream's hash chain (each event by its chain version), checks that a stream's
positions grow with its versions, and checks every checkpoint: its signature, its continuity with the
previous one, and the Merkle root, count and positions of the events it sealed. Every disagreement is a
`Finding` naming the kind (edited, deleted, inserted, reordered, checkpoint), the position and the stream.

The export (`charter audit verify --export FILE`) is JSON Lines: a header line
`{"format": "charter-audit-export/1", ...}`, one line per event (`ExportedEvent`, in the global order;
checkpoints are events of the stream `audit:checkpoints`), and a trailer `{"end": true, "events": N}`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from infrastructure.audit import chain, signing

FORMAT = "charter-audit-export/1"
MAX_FINDINGS = 10_000  # kept in full; past this only counted


class ExportedEvent(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One event as the export (and the verifier) carries it: what its hash covers, and the hash (hex)."""

    position: int
    transaction_id: int
    event_id: str
    stream_id: str
    stream_type: str
    stream_version: int
    event_type: str
    schema_version: int
    site_id: str | None
    recorded_at: str  # UTC, as chain version 2 hashes it
    chain_version: int
    payload: Any  # an object, unless a row was tampered with
    metadata: Any
    hash: str
    withheld: list[str] = []  # payload fields carried as their digest (credentials never leave the database)


class Finding(msgspec.Struct, kw_only=True):
    kind: str  # edited | deleted | inserted | reordered | checkpoint
    position: int | None
    stream_id: str | None
    stream_version: int | None
    detail: str

    def line(self) -> str:
        where = f"position {self.position}" if self.position is not None else "position ?"
        stream = f" stream {self.stream_id}" if self.stream_id else ""
        version = f" version {self.stream_version}" if self.stream_version is not None else ""
        return f"{self.kind.upper()}: {where}{stream}{version}: {self.detail}"


class Report(msgspec.Struct, kw_only=True):
    ok: bool
    events: int
    streams: int
    checkpoints: int
    sealed_to_position: int | None  # `to_position` of the last checkpoint verified
    unsealed: int  # events after the last checkpoint (covered by their stream chains only)
    unverifiable: int  # chain-version-1 events whose withheld fields an export cannot carry
    findings: list[Finding]
    findings_total: int


class _Stream:
    __slots__ = ("version", "hash", "position", "chain_version")

    def __init__(self, version: int, hash_: bytes, position: int, chain_version: int) -> None:
        self.version, self.hash, self.position, self.chain_version = version, hash_, position, chain_version


def _hash_of(e: ExportedEvent, prev: bytes) -> bytes | None:
    """The event's hash recomputed from its content (None: an export cannot carry what it covers)."""
    if e.chain_version == 1:
        if e.withheld:
            return None
        return chain.link(prev, chain.body_v1(e.event_id, e.stream_id, e.stream_version, e.event_type, e.payload))
    payload = chain.withhold(e.payload, e.withheld)
    return chain.link(prev, chain.body_v2(
        e.event_id, e.stream_id, e.stream_type, e.stream_version, e.event_type, e.schema_version,
        e.site_id, e.recorded_at, payload, e.metadata,
    ))  # fmt: skip


class Verifier:
    """Feed every event in the global order (`add`), then `finish()` for the report.

    `public_key`: the sealer's key; None checks no signature (and says so in a finding)."""

    def __init__(self, public_key: Any = None) -> None:
        self.public_key = public_key
        self.fingerprint = signing.fingerprint(public_key) if public_key is not None else None
        self.streams: dict[str, _Stream] = {}
        self.waiting: dict[tuple[str, int], ExportedEvent] = {}  # (stream, previous version) -> event
        self.leaves: list[tuple[int, int, bytes, str]] = []  # (transaction_id, position, leaf, stream) not yet sealed
        self.findings: list[Finding] = []
        self.findings_total = 0
        self.events = self.checkpoints = self.unverifiable = 0
        self.last_checkpoint: dict[str, Any] | None = None
        self.unsigned_reported = False
        self.checked_before: int | None = None  # a bounded run starts after this checkpoint's range (checked then)

    def found(self, kind: str, position: int | None, stream: str | None, version: int | None, detail: str) -> None:
        self.findings_total += 1
        if len(self.findings) < MAX_FINDINGS:
            self.findings.append(Finding(kind=kind, position=position, stream_id=stream, stream_version=version, detail=detail))

    def anchor(self, stream_id: str, version: int, hash_hex: str, position: int, chain_version: int) -> None:
        """Start a stream's chain at a stored event before the verified range (bounded verification)."""
        self.streams.setdefault(stream_id, _Stream(version, bytes.fromhex(hash_hex), position, chain_version))

    # -- one event ----------------------------------------------------------------------------------

    def add(self, e: ExportedEvent, stored: bytes | None = None) -> None:
        """`stored`: the event's hash as bytes, when the caller has them (else read from `e.hash`)."""
        self.events += 1
        if stored is None:
            try:
                stored = bytes.fromhex(e.hash)
            except ValueError:
                stored = b""
        state = self.streams.get(e.stream_id)
        if e.stream_version == 1 and state is None or state is not None and state.version == e.stream_version - 1:
            self._link(e, stored, state)
        elif state is not None and state.version >= e.stream_version:
            self.found("inserted", e.position, e.stream_id, e.stream_version,
                       f"a second event numbered {e.stream_version} in its stream")  # fmt: skip
        else:
            self.waiting[(e.stream_id, e.stream_version - 1)] = e
        self.leaves.append((e.transaction_id, e.position, chain.leaf(e.position, stored), e.stream_id))
        if e.stream_id == chain.CHECKPOINT_STREAM and e.position != self.checked_before:
            self._checkpoint(e)

    def _link(self, e: ExportedEvent, stored: bytes, state: _Stream | None, after_gap: bool = False) -> None:
        """Check `e` against the stream's last event, then every event that was waiting for it. After a gap
        (`after_gap`) the previous hash is lost: the first event's own hash is then not checked."""
        while True:
            prev = chain.GENESIS if state is None else state.hash
            computed = stored if after_gap else _hash_of(e, prev)
            if computed is None:
                self.unverifiable += 1
            elif computed != stored:
                self.found("edited", e.position, e.stream_id, e.stream_version,
                           "its hash does not match its content and the previous event's hash")  # fmt: skip
            if state is not None and state.chain_version > e.chain_version:
                self.found("edited", e.position, e.stream_id, e.stream_version,
                           f"chain version {e.chain_version} after version {state.chain_version}")  # fmt: skip
            if state is not None and state.position > e.position:
                self.found("reordered", e.position, e.stream_id, e.stream_version,
                           f"at position {e.position}, before version {e.stream_version - 1} at position {state.position}")  # fmt: skip
            state = self.streams[e.stream_id] = _Stream(e.stream_version, stored, e.position, e.chain_version)
            nxt = self.waiting.pop((e.stream_id, e.stream_version), None)
            if nxt is None:
                return
            e, after_gap = nxt, False
            try:
                stored = bytes.fromhex(e.hash)
            except ValueError:
                stored = b""

    # -- checkpoints --------------------------------------------------------------------------------

    def _checkpoint(self, e: ExportedEvent) -> None:
        self.checkpoints += 1
        cp = e.payload
        try:
            sequence = int(cp["sequence"])
            start = (int(cp["from_transaction_id"]), int(cp["from_position"]))
            end = (int(cp["to_transaction_id"]), int(cp["to_position"]))
            count, root = int(cp["count"]), str(cp["root"])
            runs = cp.get("positions")
        except (KeyError, TypeError, ValueError, AttributeError):
            self.found("checkpoint", e.position, e.stream_id, e.stream_version, "not a well-formed checkpoint")
            return
        where = (e.position, e.stream_id, e.stream_version)
        if self.public_key is None:
            if not self.unsigned_reported:
                self.unsigned_reported = True
                self.found("checkpoint", *where, "no public key given: signatures not checked")
        elif cp.get("key_fingerprint") != self.fingerprint:
            self.found("checkpoint", *where, f"checkpoint {sequence} names key {cp.get('key_fingerprint')!r}, not {self.fingerprint}")
        elif not signing.verify(self.public_key, str(cp.get("signature", "")), chain.signed_bytes(cp)):
            self.found("checkpoint", *where, f"checkpoint {sequence}: the signature does not verify (forged or altered)")
        last = self.last_checkpoint
        expected = (0, 0) if last is None else (last["to_transaction_id"], last["to_position"])
        if last is not None and sequence != last["sequence"] + 1 or last is None and sequence != 1:
            self.found("checkpoint", *where, f"checkpoint {sequence} follows checkpoint {last['sequence'] if last else 'none'}")
        if start != expected:
            self.found("checkpoint", *where, f"checkpoint {sequence} starts after {start}, the previous one ended at {expected}")
        sealed = sorted(x for x in self.leaves if start < (x[0], x[1]) <= end)
        self.leaves = [x for x in self.leaves if (x[0], x[1]) > end]
        self._compare(sequence, sealed, count, root, runs, where)
        self.last_checkpoint = {"sequence": sequence, "to_transaction_id": end[0], "to_position": end[1]}

    def _compare(self, sequence: int, sealed: list[tuple[int, int, bytes, str]], count: int, root: str,
                 runs: Any, where: tuple[int, str, int]) -> None:  # fmt: skip
        try:
            if runs is not None and sum(int(last) - int(first) + 1 for first, last in runs) != count:
                raise ValueError
        except (TypeError, ValueError):
            self.found("checkpoint", *where, f"checkpoint {sequence}: its positions do not add up to its count")
            runs = None
        if runs is not None:
            expected = {p for first, last in runs for p in range(int(first), int(last) + 1)}
            present = {x[1]: x[3] for x in sealed}
            for p in sorted(expected - present.keys()):
                self.found("deleted", p, None, None, f"sealed by checkpoint {sequence}, no longer in the log")
            for p in sorted(present.keys() - expected):
                self.found("inserted", p, present[p], None, f"in the range of checkpoint {sequence}, which did not seal it")
        if count != len(sealed):
            self.found("checkpoint", *where, f"checkpoint {sequence} sealed {count} events, the log now holds {len(sealed)} in its range")
        if chain.merkle_root([x[2] for x in sealed]).hex() != root:
            span = f"positions {min(x[1] for x in sealed)}..{max(x[1] for x in sealed)}" if sealed else "no events"
            self.found("checkpoint", *where, f"checkpoint {sequence}: Merkle root differs over its range ({span}): "
                       "an event in it was edited, deleted, inserted or moved")  # fmt: skip

    def finish(self) -> Report:
        for (stream, before), e in sorted(self.waiting.items(), key=lambda item: item[1].position):
            if (stream, before) not in self.waiting:
                continue  # linked while an earlier gap of its stream was closed
            del self.waiting[(stream, before)]
            state = self.streams.get(stream)
            have = state.version if state else 0
            missing = f"version {have + 1}" if have + 1 == e.stream_version - 1 else f"versions {have + 1}..{e.stream_version - 1}"
            after = f" (after position {state.position})" if state else ""
            self.found("deleted", e.position, stream, e.stream_version, f"{missing} of the stream missing before it{after}")
            try:
                stored = bytes.fromhex(e.hash)
            except ValueError:
                stored = b""
            self._link(e, stored, state, after_gap=True)
        last = self.last_checkpoint
        findings = sorted(self.findings, key=lambda f: (f.position is None, f.position or 0, f.kind))
        return Report(
            ok=self.findings_total == 0,
            events=self.events,
            streams=len(self.streams),
            checkpoints=self.checkpoints,
            sealed_to_position=last["to_position"] if last else None,
            unsealed=len(self.leaves),
            unverifiable=self.unverifiable,
            findings=findings,
            findings_total=self.findings_total,
        )


class ExportHeader(msgspec.Struct, kw_only=True):
    format: str
    exported_at: str
    key_fingerprint: str | None = None


class ExportTrailer(msgspec.Struct, kw_only=True):
    end: bool
    events: int


def for_export(e: ExportedEvent) -> ExportedEvent:
    """The event as an export carries it: withheld payload fields (credentials) by their digest only."""
    if not isinstance(e.payload, dict):
        return e
    names = [k for k in chain.WITHHELD_V2 if k in e.payload and k not in e.withheld]
    if not names:
        return e
    payload = {k: (chain.withheld_digest(v) if k in names else v) for k, v in e.payload.items()}
    return msgspec.structs.replace(e, payload=payload, withheld=[*e.withheld, *names])


def export_lines(lines: Iterable[bytes]) -> Iterator[ExportedEvent | Finding]:
    """The events of an export, and a finding for every line that is not what the format says."""
    decode_event = msgspec.json.Decoder(ExportedEvent).decode
    header_seen, trailer, count = False, None, 0
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        if not header_seen:
            try:
                header = msgspec.json.decode(line, type=ExportHeader)
            except msgspec.MsgspecError:
                header = None
            if header is None or header.format != FORMAT:
                yield Finding(kind="inserted", position=None, stream_id=None, stream_version=None,
                              detail=f"line {number}: not a {FORMAT} header")  # fmt: skip
                return
            header_seen = True
            continue
        if trailer is not None:
            yield Finding(kind="inserted", position=None, stream_id=None, stream_version=None, detail=f"line {number}: after the end line")
            continue
        if line.startswith(b'{"end"'):
            try:
                trailer = msgspec.json.decode(line, type=ExportTrailer)
                continue
            except msgspec.MsgspecError:
                pass
        try:
            event = decode_event(line)
        except msgspec.MsgspecError as exc:
            yield Finding(kind="edited", position=None, stream_id=None, stream_version=None, detail=f"line {number}: {exc}")
            continue
        count += 1
        yield event
    if trailer is None or trailer.events != count:
        said = "no end line" if trailer is None else f"the end line counts {trailer.events} events"
        yield Finding(kind="deleted", position=None, stream_id=None, stream_version=None,
                      detail=f"the export is cut short or altered: {said}, it holds {count}")  # fmt: skip


def check_export(path: Path, public_key: Any) -> Report:
    """`charter audit check FILE --public-key KEY`: the offline verification of an export."""
    verifier = Verifier(public_key)
    with path.open("rb") as fh:
        for item in export_lines(fh):
            if isinstance(item, Finding):
                verifier.found(item.kind, item.position, item.stream_id, item.stream_version, item.detail)
            else:
                verifier.add(item)
    return verifier.finish()
