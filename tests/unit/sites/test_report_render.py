"""Rendering the compliance report (no I/O): the digest each format carries, CSV a spreadsheet opens
without running anything, HTML with no script that escapes every value, and `as_of` parsing."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from html.parser import HTMLParser
from datetime import datetime, timezone
from typing import Any

import pytest

from application.as_of import AsOf, AsOfInvalid, check_window, parse_as_of
from application.sites.report_render import FORMATS, cell, digest_holds, render

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def report(name: str = "Plant & Co", notes: str = "ok") -> dict[str, Any]:
    who = {"at": "2025-01-02T03:04:05.000006Z", "by": "u-1", "by_name": "Bob <b>Admin</b>", "position": 7}
    return {
        "report": "compliance", "report_version": 1,
        "site": {"site_id": "plant-1", "name": name, "timezone": "UTC", "retired": False},
        "as_of": "position:12", "since": "", "position": 12,
        "extensions": [{
            "plugin_id": "erp", "version": "1.0", "configuration_hash": "sha256:" + "a" * 64,
            "activated": who, "configured": who, "fully_signed": False,
            "signoffs": [{"aspect": "esig", "signer_name": name, "signer_id": "u-2", "role": "quality-focal",
                          "meaning": "Approved", "signed_at": "2025-01-02T03:00:00.000000Z", "notes": notes}],
            "pending_aspects": [{"aspect": "audit", "role": "compliance-officer", "meaning": "Reviewed"}],
        }],
        "changes": [{"position": 7, "recorded_at": "2025-01-02T03:04:05.000006Z", "event": "ExtensionActivated",
                     "plugin_id": "erp", "by": "u-1", "by_name": name, "detail": f"activated; reason: {notes}"}],
    }  # fmt: skip


class TestDigest:
    @pytest.mark.parametrize("fmt", FORMATS)
    def test_each_format_names_the_sha256_of_itself_without_the_digest(self, fmt: str) -> None:
        rendered = render(report(), fmt)

        assert rendered.document.count(rendered.sha256.encode()) == 1
        without = rendered.document.replace(rendered.sha256.encode(), b"")
        assert hashlib.sha256(without).hexdigest() == rendered.sha256
        assert digest_holds(rendered.document, rendered.sha256)

    @pytest.mark.parametrize("fmt", FORMATS)
    def test_an_edited_report_no_longer_matches_its_digest(self, fmt: str) -> None:
        rendered = render(report(), fmt)
        edited = rendered.document.replace(b"Approved", b"Rejected")

        assert not digest_holds(edited, rendered.sha256)

    @pytest.mark.parametrize("fmt", FORMATS)
    def test_the_same_report_renders_to_the_same_bytes(self, fmt: str) -> None:
        assert render(report(), fmt).document == render(report(), fmt).document

    def test_json_is_canonical_and_names_its_digest(self) -> None:
        rendered = render(report(), "json")
        body = json.loads(rendered.document)

        assert body["sha256"] == rendered.sha256
        assert rendered.document == json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


class TestCsv:
    @pytest.mark.parametrize("value", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", '=HYPERLINK("http://evil")'])
    def test_a_cell_a_spreadsheet_would_run_is_kept_as_text(self, value: str) -> None:
        assert cell(value) == "'" + value

    @pytest.mark.parametrize("value", ["plant-1", "sha256:abc", "2025-01-02T03:04:05Z", "a=b", ""])
    def test_other_cells_are_kept_as_they_are(self, value: str) -> None:
        assert cell(value) == value

    def test_rows_follow_rfc_4180_with_formulas_guarded(self) -> None:
        document = render(report(name='Plant, "North"\nHall', notes="=cmd|' /C calc'!A0"), "csv").document
        text = document.decode("utf-8")

        assert text.startswith("\ufeffrecord,site_id,plugin_id,version,configuration_hash,aspect,name,role,")
        assert text.endswith("\r\n") and '"Plant, ""North""\nHall"' in text
        rows = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline="")))
        assert len({len(r) for r in rows}) == 1
        signoff = next(r for r in rows if r[0] == "signoff")
        assert signoff[-1] == "'=cmd|' /C calc'!A0"
        assert [r[0] for r in rows] == ["record", "report", "extension", "signoff", "pending", "change", "sha256"]


PAGE_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "h4", "p", "table", "thead", "tbody",
             "tr", "th", "td", "code", "span", "br", "section", "footer"}


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()
        self.attributes: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.names.add(tag)
        self.attributes |= {name for name, _ in attrs}


class TestHtml:
    def test_a_printable_page_with_no_script_and_every_value_escaped(self) -> None:
        page = render(report(name=HOSTILE, notes=HOSTILE), "html").document.decode()

        tags = Tags()
        tags.feed(page)

        assert "script" not in tags.names and "img" not in tags.names and "b" not in tags.names
        assert tags.names <= PAGE_TAGS
        assert not [a for a in tags.attributes if a.startswith("on") or a in ("src", "href")]  # no handler, no asset
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in page
        assert "Bob &lt;b&gt;Admin&lt;/b&gt;" in page
        assert "default-src 'none'" in page and "printed name" in page and "signature" in page


class TestAsOf:
    @pytest.mark.parametrize("raw, expected", [
        ("position:42", AsOf(position=42)),
        ("2025-01-31T12:00:00Z", AsOf(instant=datetime(2025, 1, 31, 12, tzinfo=timezone.utc))),
        ("2025-01-31T13:00:00+01:00", AsOf(instant=datetime(2025, 1, 31, 12, tzinfo=timezone.utc))),
    ])  # fmt: skip
    def test_an_instant_or_a_position(self, raw: str, expected: AsOf) -> None:
        assert parse_as_of(raw) == expected

    @pytest.mark.parametrize("raw", ["", "yesterday", "2025-01-31T12:00:00", "position:-1", "position:" + "9" * 19,
                                     "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "x" * 65, "position:1e3"])
    def test_anything_else_is_refused_naming_the_field(self, raw: str) -> None:
        with pytest.raises(AsOfInvalid) as refused:
            parse_as_of(raw, "since")
        assert refused.value.details["field"] == "since"

    def test_a_window_starting_after_its_end_is_refused(self) -> None:
        now = datetime(2025, 6, 1, tzinfo=timezone.utc)
        with pytest.raises(AsOfInvalid):
            check_window(AsOf(position=5), AsOf(position=6), now)
        with pytest.raises(AsOfInvalid):
            check_window(AsOf(position=5), AsOf(instant=datetime(2030, 1, 1, tzinfo=timezone.utc)), now)
        check_window(AsOf(position=5), AsOf(position=5), now)
