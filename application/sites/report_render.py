"""The compliance report as bytes: JSON, CSV or HTML, each carrying its own SHA-256.

The digest rule, the same for every format: the `sha256` a report names is the SHA-256 (lowercase hex)
of the report's bytes with those 64 hex digits taken out, i.e. of the document exactly as rendered with an
empty digest. To check one: remove the digest's one occurrence from the file and hash what is left
(`digest_holds`). Nothing in a report depends on when it is rendered, so the same report renders to the
same bytes every time.

- JSON: canonical (keys sorted, no whitespace, UTF-8; domain/sites/config_hash.canonical) and a newline;
  the digest is the top-level `sha256`.
- CSV (RFC 4180: a header row, CRLF line ends, fields quoted when they hold a comma, a quote or a line
  break; UTF-8 with a byte-order mark so spreadsheets read names right): one row per fact, its kind in
  `record` (report, extension, signoff, pending, change), the digest in the last row (`sha256`). A cell
  that a spreadsheet would run as a formula (starting with = + - @, a tab or a carriage return) is
  prefixed with `'`.
- HTML: report_html.py.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from application.sites.report_html import render_html
from domain.sites.config_hash import canonical

FORMATS = ("json", "csv", "html")
MEDIA_TYPES = {"json": "application/json", "csv": "text/csv; charset=utf-8; header=present",
               "html": "text/html; charset=utf-8"}
CSV_COLUMNS = ("record", "site_id", "plugin_id", "version", "configuration_hash", "aspect", "name", "role",
               "meaning", "at", "by", "position", "detail")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
HEX64 = re.compile(rb"[0-9a-f]{64}")


def digest(document: bytes) -> str:
    return hashlib.sha256(document).hexdigest()


@dataclass(frozen=True)
class Rendered:
    document: bytes
    sha256: str


def sealed(render: Callable[[str], bytes]) -> Rendered:
    """Render with an empty digest, hash that, render again with the digest in its place."""
    sha256 = digest(render(""))
    return Rendered(render(sha256), sha256)


def digest_holds(document: bytes, named: str) -> bool:
    """Does `document` name `named` as its digest, and is it the SHA-256 of the document without it?"""
    head, found, tail = document.partition(named.encode())
    return bool(found) and HEX64.fullmatch(found) is not None and digest(head + tail) == named


def render(report: dict[str, Any], fmt: str) -> Rendered:
    if fmt == "json":
        return sealed(lambda d: canonical({**report, "sha256": d}) + b"\n")
    if fmt == "csv":
        return sealed(lambda d: render_csv(report, d))
    if fmt == "html":
        return sealed(lambda d: render_html(report, d))
    raise ValueError(f"unknown report format {fmt!r}")


def cell(value: Any) -> str:
    """A CSV cell: text, never a formula."""
    if isinstance(value, bool):
        text = "yes" if value else "no"
    else:
        text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def csv_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    site = report["site"]
    sid = site["site_id"]
    rows = [{"record": "report", "site_id": sid, "name": site["name"], "at": report["as_of"],
             "position": report["position"],
             "detail": f"compliance report v{report['report_version']}; time zone {site['timezone']};"
                       f" retired: {'yes' if site['retired'] else 'no'}; changes since: {report['since'] or 'the start'}"}]
    for ext in report["extensions"]:
        key = {"site_id": sid, "plugin_id": ext["plugin_id"], "version": ext["version"],
               "configuration_hash": ext["configuration_hash"]}
        activated, configured = ext["activated"], ext["configured"]
        rows.append({"record": "extension", **key, "name": activated["by_name"], "at": activated["at"],
                     "by": activated["by"], "position": activated["position"],
                     "detail": ("fully signed" if ext["fully_signed"] else "signoffs pending")
                               + f"; configured {configured['at']} by {configured['by_name']}"})
        for s in ext["signoffs"]:
            rows.append({"record": "signoff", **key, "aspect": s["aspect"], "name": s["signer_name"], "role": s["role"],
                         "meaning": s["meaning"], "at": s["signed_at"], "by": s["signer_id"], "detail": s["notes"]})
        for p in ext["pending_aspects"]:
            rows.append({"record": "pending", **key, "aspect": p["aspect"], "role": p["role"], "meaning": p["meaning"]})
    for c in report["changes"]:
        rows.append({"record": "change", "site_id": sid, "plugin_id": c["plugin_id"], "name": c["event"],
                     "at": c["recorded_at"], "by": c["by"], "position": c["position"], "detail": c["detail"]})
    return rows


def render_csv(report: dict[str, Any], sha256: str) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(CSV_COLUMNS)
    for row in [*csv_rows(report), {"record": "sha256", "detail": sha256}]:
        writer.writerow([cell(row.get(column)) for column in CSV_COLUMNS])
    return ("\ufeff" + out.getvalue()).encode("utf-8")
