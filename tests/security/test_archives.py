"""Hostile plugin archives: zip bombs, lying headers, path tricks, links and devices, oversized uploads.

Every hostile zip is built here, byte by byte where zipfile would not write it; nothing binary is committed.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import stat
import struct
import time
import tracemalloc
import uuid
import zipfile
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
import uvicorn
from litestar.testing import AsyncTestClient

from domain.plugins.errors import ManifestInvalid
from infrastructure.plugins import archives
from infrastructure.plugins.archives import ArchiveLimits
from infrastructure.embedded.process import find_free_port
from infrastructure.plugins.sources import manifest_from_archive
from infrastructure.settings import Settings
from interfaces.app import create_app
from interfaces.serving import server_config
from tests.e2e.conftest import admin_token, make_settings
from tests.e2e.plugin_kit import PLUGINS, archive, assert_error, install, manifest, unique_id, upload

MiB = 1024 * 1024
GiB = 1024 * MiB
CAP = 4 * MiB  # the upload cap of the app under test (the default is 20 MiB)
FAST = 1.0  # seconds a hostile archive may take to be refused
MEMORY = 64 * MiB  # traced allocations while refusing one (a bomb would need a GiB)


# -- building zips ----------------------------------------------------------------------------------


def zeros_deflated(size: int) -> bytes:
    """A raw deflate stream inflating to `size` zero bytes (a multiple of 1 MiB), built in milliseconds:
    one fully flushed 1 MiB block stands alone, so it can be repeated."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(MiB)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return block * (size // MiB) + compressor.flush()


def zeros_crc(size: int) -> int:
    crc, block = 0, bytes(MiB)
    for _ in range(size // MiB):
        crc = zlib.crc32(block, crc)
    return crc


@dataclass
class Entry:
    name: str
    data: bytes  # as stored in the archive (deflated unless `method` says otherwise)
    file_size: int  # what the headers declare it inflates to
    crc: int = 0
    method: int = zipfile.ZIP_DEFLATED
    mode: int = stat.S_IFREG | 0o644  # unix mode, in the high half of external_attr
    flags: int = 0x800  # names in UTF-8


def raw_zip(entries: list[Entry]) -> bytes:
    """A zip written field by field, saying whatever the entries say (zipfile would correct a lie)."""
    out, offsets = bytearray(), []
    for e in entries:
        name = e.name.encode()
        offsets.append(len(out))
        out += struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, e.flags, e.method, 0, 0x21, e.crc, len(e.data), e.file_size, len(name), 0)
        out += name + e.data
    start = len(out)
    for e, offset in zip(entries, offsets):
        name = e.name.encode()
        out += struct.pack(
            "<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, e.flags, e.method, 0, 0x21, e.crc, len(e.data), e.file_size,
            len(name), 0, 0, 0, 0, e.mode << 16, offset,
        )
        out += name
    out += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(out) - start, start, 0)
    return bytes(out)


def zip_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def manifest_entry(plugin_id: str) -> Entry:
    text = json.dumps(manifest(plugin_id)).encode()
    return Entry("charter-plugin.json", text, len(text), zlib.crc32(text), method=zipfile.ZIP_STORED)


def overlapping_bomb(plugin_id: str, files: int, kernel_size: int) -> bytes:
    """Fifield's non-recursive bomb: every file's data runs on through the local headers of the files after
    it (quoted as stored deflate blocks) into one shared kernel, so each file re-inflates the kernel."""
    kernel = zeros_deflated(kernel_size)
    names = [f"f{i:04d}" for i in range(files)]
    headers: list[bytes] = [b""] * files
    sizes = [0] * files
    for i in reversed(range(files)):  # a header holds the sizes of everything after it
        after = b"".join(struct.pack("<BHH", 0, len(h), len(h) ^ 0xFFFF) + h for h in headers[i + 1 :])
        compressed = len(after) + len(kernel)
        inflated = sum(len(h) for h in headers[i + 1 :]) + kernel_size
        name = names[i].encode()
        headers[i] = struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, 8, 0, 0x21, 0, compressed, inflated, len(name), 0) + name
        sizes[i] = (compressed, inflated)
    body = bytearray()
    offsets = []
    for i, header in enumerate(headers):
        offsets.append(len(body))
        body += header
        if i + 1 < files:
            body += struct.pack("<BHH", 0, len(headers[i + 1]), len(headers[i + 1]) ^ 0xFFFF)
    body += kernel
    manifest_at = len(body)
    plugin = manifest_entry(plugin_id)
    body += struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0x21, plugin.crc, len(plugin.data), plugin.file_size, len(plugin.name), 0)
    body += plugin.name.encode() + plugin.data
    start = len(body)
    records = [(names[i], offsets[i], 8, 0, *sizes[i]) for i in range(files)]
    records.append((plugin.name, manifest_at, 0, plugin.crc, len(plugin.data), plugin.file_size))
    for name, offset, method, crc, compressed, inflated in records:
        body += struct.pack(
            "<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, method, 0, 0x21, crc, compressed, inflated,
            len(name), 0, 0, 0, 0, (stat.S_IFREG | 0o644) << 16, offset,
        )
        body += name.encode()
    body += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(records), len(records), len(body) - start, start, 0)
    return bytes(body)


# -- the app under test ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def client(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AsyncTestClient]:
    settings = make_settings(database_url, tmp_path_factory.mktemp("charter-archives"), archive_max_bytes=CAP)
    async with AsyncTestClient(app=create_app(settings)) as test_client:
        test_client.headers["Authorization"] = f"Bearer {await admin_token(test_client)}"
        yield test_client


@pytest.fixture(scope="module")
async def live(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """The app behind a real HTTP server (uvicorn), for bodies the in-process client cannot stream."""
    settings = make_settings(database_url, tmp_path_factory.mktemp("charter-archives-live"), archive_max_bytes=CAP)
    server = uvicorn.Server(server_config(create_app(settings), "127.0.0.1", find_free_port()))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        url = f"http://127.0.0.1:{server.config.port}"
        async with httpx.AsyncClient(base_url=url) as http:
            yield url, {"Authorization": f"Bearer {await admin_token(http)}"}
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="module")
def gib_of_zeros() -> tuple[bytes, int]:
    return zeros_deflated(GiB), zeros_crc(GiB)


async def refused_quickly_and_small(client, content: bytes) -> dict:
    """Install `content`: 400 naming the archive, within FAST seconds, allocating less than MEMORY."""
    started = time.perf_counter()
    response = await install(client, content)
    elapsed = time.perf_counter() - started
    tracemalloc.start()
    try:
        again = await install(client, content)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    error = assert_error(response, 400, "MANIFEST_INVALID")
    assert error["details"]["field"].startswith("archive"), error
    assert again.json()["error"]["code"] == "MANIFEST_INVALID"
    assert elapsed < FAST, f"took {elapsed:.2f}s"
    assert peak < MEMORY, f"allocated {peak / MiB:.0f} MiB"
    return error


async def stored(database_url: str, content: bytes) -> bool:
    conn = await asyncpg.connect(database_url)
    try:
        digest = hashlib.sha256(content).hexdigest()
        return await conn.fetchval("SELECT count(*) FROM plugin_archives WHERE sha256 = $1", digest) > 0
    finally:
        await conn.close()


# -- bombs -------------------------------------------------------------------------------------------


class TestZipBombs:
    async def test_refuses_an_entry_declaring_a_gib(self, client, database_url, gib_of_zeros) -> None:
        data, crc = gib_of_zeros
        content = raw_zip([manifest_entry(unique_id()), Entry("zeros.bin", data, GiB, crc)])

        error = await refused_quickly_and_small(client, content)

        assert "inflates to more than" in error["message"]
        assert not await stored(database_url, content)

    async def test_refuses_a_lying_header_at_the_first_byte_past_what_it_declares(self, client, gib_of_zeros) -> None:
        data, _ = gib_of_zeros
        content = raw_zip([manifest_entry(unique_id()), Entry("small.txt", data, 1000)])

        error = await refused_quickly_and_small(client, content)

        assert "past its declared size" in error["message"]

    async def test_refuses_a_lying_header_within_every_declared_limit(self, client, gib_of_zeros) -> None:
        """Declared 16 MiB from 1 MiB passes the size and ratio checks; inflating stops within a chunk past 16 MiB."""
        data, _ = gib_of_zeros
        content = raw_zip([manifest_entry(unique_id()), Entry("zeros.bin", data, 16 * MiB)])

        error = await refused_quickly_and_small(client, content)

        assert "past its declared size" in error["message"]

    async def test_refuses_overlapping_entries(self, client) -> None:
        content = overlapping_bomb(unique_id(), files=250, kernel_size=64 * MiB)  # 16 GiB from ~80 KiB

        await refused_quickly_and_small(client, content)

    def test_overlap_is_refused_even_where_sizes_and_ratio_would_pass(self) -> None:
        content = overlapping_bomb("overlap", files=20, kernel_size=MiB)
        permissive = ArchiveLimits(max_ratio=10**6, max_total_bytes=GiB)

        with pytest.raises(ManifestInvalid, match="overlap"):
            manifest_from_archive(content, permissive)

    async def test_refuses_a_high_ratio_below_the_size_limits(self, client) -> None:
        content = raw_zip([manifest_entry(unique_id()), Entry("zeros.bin", zeros_deflated(8 * MiB), 8 * MiB, zeros_crc(8 * MiB))])

        error = await refused_quickly_and_small(client, content)

        assert "100:1" in error["message"]

    async def test_archives_inside_the_archive_are_not_opened(self, client, gib_of_zeros) -> None:
        """A nested bomb is data: stored as uploaded, never inflated by Charter."""
        data, crc = gib_of_zeros
        inner = raw_zip([Entry("zeros.bin", data, GiB, crc)])
        pid = unique_id()
        content = zip_of({"charter-plugin.json": json.dumps(manifest(pid)).encode(), "inner.zip": inner})

        started = time.perf_counter()
        response = await install(client, content)

        assert response.status_code == 201, response.text
        assert time.perf_counter() - started < FAST


class TestEntryCount:
    async def test_refuses_more_entries_than_the_limit(self, client) -> None:
        files = {f"f{i}.txt": "x" for i in range(1000)}
        content = archive(manifest(unique_id()), **files)

        error = await refused_quickly_and_small(client, content)

        assert "more than 1000 entries" in error["message"]

    def test_counts_the_central_directory_before_zipfile_reads_it_whatever_the_end_record_says(self, monkeypatch) -> None:
        content = bytearray(archive(manifest("many"), **{f"f{i}.txt": "x" for i in range(1000)}))
        end = content.rfind(b"PK\x05\x06")
        struct.pack_into("<2H", content, end + 8, 1, 1)  # the end record claims one entry

        def not_reached(*args, **kwargs):
            raise AssertionError("zipfile parsed a central directory with too many entries")

        monkeypatch.setattr(archives.zipfile, "ZipFile", not_reached)
        with pytest.raises(ManifestInvalid, match="more than 1000 entries"):
            manifest_from_archive(bytes(content))


# -- names, kinds, methods ----------------------------------------------------------------------------


def with_entry(entry: Entry) -> bytes:
    return raw_zip([manifest_entry(unique_id()), entry])


def text_entry(name: str, text: bytes = b"hello", **fields) -> Entry:
    return Entry(name, text, len(text), zlib.crc32(text), method=zipfile.ZIP_STORED, **fields)


class TestEntryNamesAndKinds:
    @pytest.mark.parametrize(
        "name",
        [
            "/etc/passwd",
            "../outside.txt",
            "lib/../../outside.txt",
            "lib\\..\\..\\outside.txt",
            "..\\outside.txt",
            "C:/Windows/evil.dll",
            "C:evil.dll",
            "lib//twice.txt",
            "./here.txt",
            "file.txt:stream",
            "nul\x00byte.txt",
            "line\nbreak.txt",
        ],
    )
    async def test_refuses_a_path_that_is_not_plain_and_relative(self, client, database_url, name: str) -> None:
        content = with_entry(text_entry(name))

        error = assert_error(await install(client, content), 400, "MANIFEST_INVALID", field="archive")

        assert "not a plain relative path" in error["message"]
        assert not await stored(database_url, content)

    @pytest.mark.parametrize(
        "mode", [stat.S_IFLNK | 0o777, stat.S_IFIFO | 0o644, stat.S_IFCHR | 0o644, stat.S_IFBLK | 0o644, stat.S_IFSOCK | 0o644]
    )
    async def test_refuses_links_devices_fifos_and_sockets(self, client, mode: int) -> None:
        content = with_entry(text_entry("lib/target", b"/etc/shadow", mode=mode))

        error = assert_error(await install(client, content), 400, "MANIFEST_INVALID", field="archive")

        assert "link or a device" in error["message"]

    async def test_refuses_encrypted_entries(self, client) -> None:
        content = with_entry(text_entry("secret.txt", flags=0x801))

        assert "encrypted" in assert_error(await install(client, content), 400, "MANIFEST_INVALID", field="archive")["message"]

    async def test_refuses_compression_other_than_stored_or_deflate(self, client) -> None:
        """bzip2 and lzma hand back all they inflate from one read, so their output cannot be bounded."""
        text = b"x" * 1000
        content = with_entry(Entry("big.txt", zlib.compress(text), len(text), zlib.crc32(text), method=zipfile.ZIP_BZIP2))

        assert "compression method 12" in assert_error(await install(client, content), 400, "MANIFEST_INVALID", field="archive")["message"]

    async def test_refuses_a_name_held_twice(self, client) -> None:
        """Two manifests, or two files of one name, would let two readers see two different plugins."""
        pid = unique_id()
        content = raw_zip([manifest_entry(pid), manifest_entry(unique_id())])

        assert "twice" in assert_error(await install(client, content), 400, "MANIFEST_INVALID", field="archive")["message"]

    async def test_accepts_folders_and_plain_nested_files(self, client) -> None:
        pid = unique_id()
        content = raw_zip([manifest_entry(pid), text_entry("lib/", b"", mode=stat.S_IFDIR | 0o755), text_entry("lib/a.py")])

        assert (await install(client, content)).status_code == 201


# -- the manifest ---------------------------------------------------------------------------------------


class TestManifestBound:
    async def test_refuses_a_manifest_over_its_limit_before_decoding_it(self, client) -> None:
        text = json.dumps(manifest(unique_id(), description=os.urandom(MiB // 2).hex())).encode()
        content = raw_zip([Entry("charter-plugin.json", zlib.compress(text)[2:-4], len(text), zlib.crc32(text))])

        assert_error(await install(client, content), 400, "MANIFEST_INVALID", field="archive.manifest")

    async def test_refuses_a_manifest_inflating_past_its_declared_size(self, client) -> None:
        text = json.dumps(manifest(unique_id(), description="x" * (4 * MiB))).encode()
        lying = Entry("charter-plugin.json", zlib.compress(text)[2:-4], 200, zlib.crc32(text[:200]))

        error = assert_error(await install(client, raw_zip([lying])), 400, "MANIFEST_INVALID", field="archive")

        assert "past its declared size" in error["message"]


# -- the upload ----------------------------------------------------------------------------------------


class TestUploadCap:
    async def test_an_archive_over_the_cap_answers_413(self, client, database_url) -> None:
        content = b"PK" + bytes(CAP)  # within the request limit (the cap plus the form's allowance)

        error = assert_error(await install(client, content), 413, "PAYLOAD_TOO_LARGE", field="archive")

        assert str(CAP) in error["message"]
        assert not await stored(database_url, content)

    async def test_a_request_over_the_body_limit_answers_413_before_it_is_read(self, client) -> None:
        response = await install(client, bytes(CAP + 2 * MiB))

        assert_error(response, 413, "PAYLOAD_TOO_LARGE")

    async def test_a_chunked_request_over_the_body_limit_answers_413(self, live: tuple[str, dict[str, str]]) -> None:
        """No Content-Length to refuse up front: the body is counted as it streams in."""
        url, headers = live
        boundary = uuid.uuid4().hex

        async def chunks() -> AsyncIterator[bytes]:
            yield (
                f'--{boundary}\r\nContent-Disposition: form-data; name="archive"; filename="p.zip"\r\n'
                "Content-Type: application/zip\r\n\r\n"
            ).encode()
            for _ in range(CAP // MiB + 2):
                yield bytes(MiB)
            yield f"\r\n--{boundary}--\r\n".encode()

        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
            response = await http.post(
                f"{PLUGINS}/install", content=chunks(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
            )

        assert response.request.headers.get("transfer-encoding") == "chunked"
        assert_error(response, 413, "PAYLOAD_TOO_LARGE")

    async def test_an_update_over_the_cap_answers_413(self, client) -> None:
        response = await client.put(f"{PLUGINS}/{unique_id()}", files=upload(b"PK" + bytes(CAP)))

        assert_error(response, 413, "PAYLOAD_TOO_LARGE", field="archive")

    def test_the_limits_come_from_settings_with_safe_defaults(self) -> None:
        defaults = ArchiveLimits.of(Settings())
        configured = ArchiveLimits.of(
            Settings.from_env({"CHARTER_ARCHIVE_MAX_BYTES": "1048576", "CHARTER_ARCHIVE_MAX_RATIO": "10"})
        )

        assert (defaults.max_bytes, defaults.max_entries, defaults.max_ratio) == (20 * MiB, 1000, 100)
        assert defaults.max_manifest_bytes == MiB
        assert (configured.max_bytes, configured.max_ratio) == (MiB, 10)
