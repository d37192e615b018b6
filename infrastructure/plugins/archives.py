"""Reading an untrusted zip within fixed bounds: no bomb, no lying header, no path trick, no link or device.

Every entry is checked from the central directory first (name, type, method, declared sizes, ratio,
overlap), then inflated in chunks with a counter, so nothing is read that the limits did not allow and no
entry can produce more than it declares. Archives inside the archive are data; they are never opened.
"""

from __future__ import annotations

import copy
import io
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any

from domain.plugins.errors import ManifestInvalid

MiB = 1024 * 1024
CHUNK = 64 * 1024
RATIO_FLOOR = MiB  # below this much output, any ratio passes (small text files compress far past 100:1)
METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}  # bzip2/lzma inflate unbounded per read
END_RECORD = struct.Struct("<4s4H2LH")
END_SIGNATURE, CENTRAL_SIGNATURE = b"PK\x05\x06", b"PK\x01\x02"
LOCAL_HEADER_SIZE = 30
ZIP64_END_RECORDS = 56 + 20  # zip64 end record and its locator, between the central directory and the end record
MAX_NAME = 1024
# What reading a zip can raise on a malformed or hostile archive.
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError, struct.error)


@dataclass(frozen=True)
class ArchiveLimits:
    """How much an uploaded archive may hold (see the `archive_*` and `manifest_max_bytes` settings)."""

    max_bytes: int = 20 * MiB
    max_entries: int = 1000
    max_entry_bytes: int = 50 * MiB
    max_total_bytes: int = 200 * MiB
    max_ratio: int = 100
    max_manifest_bytes: int = MiB

    @classmethod
    def of(cls, settings: Any) -> "ArchiveLimits":
        return cls(
            max_bytes=settings.archive_max_bytes,
            max_entries=settings.archive_max_entries,
            max_entry_bytes=settings.archive_max_entry_bytes,
            max_total_bytes=settings.archive_max_total_bytes,
            max_ratio=settings.archive_max_ratio,
            max_manifest_bytes=settings.manifest_max_bytes,
        )


def invalid(message: str, **details: Any) -> ManifestInvalid:
    """The archive holds no manifest Charter will read: 400 MANIFEST_INVALID naming the field `archive`."""
    return ManifestInvalid(message, field="archive", **details)


def open_archive(content: bytes, limits: ArchiveLimits) -> zipfile.ZipFile:
    """The zip, once its central directory passes every check (nothing inflated yet: see `verify_entries`)."""
    if len(content) > limits.max_bytes:
        raise invalid(f"archive is larger than {limits.max_bytes} bytes", limit=limits.max_bytes)
    check_entry_count(content, limits.max_entries)
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except ZIP_ERRORS as exc:
        raise invalid(f"archive is not a readable zip file: {exc}") from None
    try:
        check_directory(archive, len(content), limits)
    except BaseException:
        archive.close()
        raise
    return archive


def verify_entries(archive: zipfile.ZipFile) -> None:
    """Inflate every entry, counting: each yields exactly what it declares, with a matching CRC."""
    for info in archive.infolist():
        read_entry(archive, info, info.file_size)


def check_entry_count(content: bytes, max_entries: int) -> None:
    """Refuse too many entries before zipfile builds one object per entry: count the central directory
    records in the span zipfile reads (found as zipfile finds it), whatever the end record claims."""
    end = len(content) - END_RECORD.size
    if not (end >= 0 and content.startswith(END_SIGNATURE, end) and content.endswith(b"\0\0")):
        end = content.rfind(END_SIGNATURE, max(0, len(content) - END_RECORD.size - 0xFFFF))
    if end < 0 or end + END_RECORD.size > len(content):
        raise invalid("archive is not a zip file (no end of central directory)")
    declared, directory_size = END_RECORD.unpack_from(content, end)[4:6]
    start = max(0, end - directory_size - ZIP64_END_RECORDS)
    records = content.count(CENTRAL_SIGNATURE, start, end)
    if (declared != 0xFFFF and declared > max_entries) or records > max_entries:
        raise invalid(f"archive has more than {max_entries} entries", limit=max_entries)


def check_directory(archive: zipfile.ZipFile, archive_size: int, limits: ArchiveLimits) -> None:
    infos = archive.infolist()
    if len(infos) > limits.max_entries:
        raise invalid(f"archive has more than {limits.max_entries} entries", limit=limits.max_entries)
    seen: set[str] = set()
    total = 0
    for info in infos:
        check_name(info.orig_filename)
        if info.filename in seen:
            raise invalid(f"archive holds {info.filename!r} twice", entry=info.filename)
        seen.add(info.filename)
        check_kind(info)
        check_size(info, limits)
        total += info.file_size
    if total > limits.max_total_bytes:
        raise invalid(f"archive inflates to more than {limits.max_total_bytes} bytes", limit=limits.max_total_bytes)
    if total > max(RATIO_FLOOR, limits.max_ratio * archive_size):
        raise invalid(f"archive inflates more than {limits.max_ratio}:1", limit=limits.max_ratio)
    check_overlap(infos)


def check_name(name: str) -> None:
    """Relative, forward-slash paths without `.`/`..`/empty segments, drives, streams or control characters."""
    parts = name.rstrip("/").split("/")
    if (
        not name
        or len(name) > MAX_NAME
        or name.startswith("/")
        or "\\" in name
        or ":" in name
        or any(part in ("", ".", "..") for part in parts)
        or any(ord(ch) < 32 or ch == "\x7f" for ch in name)
    ):
        raise invalid(f"archive entry name {name[:100]!r} is not a plain relative path", entry=name[:MAX_NAME])


def check_kind(info: zipfile.ZipInfo) -> None:
    mode = info.external_attr >> 16
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise invalid(f"archive entry {info.filename!r} is a link or a device, not a file", entry=info.filename)
    if info.flag_bits & 0x1:
        raise invalid(f"archive entry {info.filename!r} is encrypted", entry=info.filename)
    if info.compress_type not in METHODS:
        raise invalid(
            f"archive entry {info.filename!r} uses compression method {info.compress_type}; use stored or deflate",
            entry=info.filename,
        )


def check_size(info: zipfile.ZipInfo, limits: ArchiveLimits) -> None:
    if info.file_size > limits.max_entry_bytes:
        raise invalid(
            f"archive entry {info.filename!r} inflates to more than {limits.max_entry_bytes} bytes",
            entry=info.filename, limit=limits.max_entry_bytes,
        )
    if info.file_size > max(RATIO_FLOOR, limits.max_ratio * info.compress_size):
        raise invalid(
            f"archive entry {info.filename!r} inflates more than {limits.max_ratio}:1", entry=info.filename, limit=limits.max_ratio
        )


def check_overlap(infos: list[zipfile.ZipInfo]) -> None:
    """Each entry's local header and data end before the next one starts (overlapping entries re-inflate
    the same bytes: a zip bomb without nesting)."""
    ordered = sorted(infos, key=lambda info: info.header_offset)
    for info, following in zip(ordered, ordered[1:]):
        end = info.header_offset + LOCAL_HEADER_SIZE + len(info.orig_filename.encode()) + info.compress_size
        if following.header_offset < end:
            raise invalid(f"archive entries {info.filename!r} and {following.filename!r} overlap", entry=following.filename)


def read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, keep: bool = False) -> bytes:
    """Inflate an entry in chunks, counting; stop as soon as it yields more than it declares or than `limit`."""
    if info.file_size > limit:
        raise invalid(f"archive entry {info.filename!r} is larger than {limit} bytes", entry=info.filename, limit=limit)
    # zipfile stops (and checks the CRC) where it is told the entry ends. Told two chunks past the declared
    # size, it hands over the chunk that crosses it, and the counter below sees the entry lie.
    bounded = copy.copy(info)
    bounded.file_size = info.file_size + 2 * CHUNK
    kept = bytearray()
    count = 0
    try:
        with archive.open(bounded) as stream:
            while chunk := stream.read(CHUNK):
                count += len(chunk)
                if count > info.file_size:
                    raise invalid(f"archive entry {info.filename!r} inflates past its declared size", entry=info.filename)
                if keep:
                    kept += chunk
    except ZIP_ERRORS as exc:
        raise invalid(f"archive entry {info.filename!r} cannot be read: {exc}", entry=info.filename) from None
    if count != info.file_size:
        raise invalid(f"archive entry {info.filename!r} is shorter than it declares", entry=info.filename)
    return bytes(kept)
