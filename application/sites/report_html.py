"""The compliance report as a printable HTML page a person reads and signs: one file, no script, no
external asset (its style is inline, its Content-Security-Policy forbids anything else), every value
escaped, a signature block at the end. The digest rule is report_render.py's."""

from __future__ import annotations

from html import escape
from typing import Any

STYLE = """
body{font:11pt/1.4 Georgia,'Times New Roman',serif;color:#111;margin:2em auto;max-width:60em;padding:0 1em}
h1{font-size:18pt;margin:0 0 .2em}h2{font-size:14pt;border-bottom:1px solid #444;margin-top:1.6em}
h3{font-size:12pt;margin:1.2em 0 .3em}table{border-collapse:collapse;width:100%;margin:.4em 0}
th,td{border:1px solid #999;padding:.25em .4em;text-align:left;vertical-align:top;font-size:9.5pt}
th{background:#eee}code{font:9pt Menlo,Consolas,monospace;word-break:break-all}
.ok{color:#060}.pending{color:#a00}.sign td{height:2.6em}.muted{color:#555;font-size:9pt}
@media print{body{margin:0;max-width:none}section{break-inside:avoid}a{color:inherit}}
"""
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; form-action 'none'; base-uri 'none'"


def e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def table(headers: list[str], rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    attribute = f' class="{cls}"' if cls else ""
    return f"<table{attribute}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def extension_section(ext: dict[str, Any]) -> str:
    activated, configured = ext["activated"], ext["configured"]
    status = '<span class="ok">fully signed</span>' if ext["fully_signed"] else '<span class="pending">signoffs pending</span>'
    facts = table(["version", "configuration hash", "activated", "configuration set", "status"], [[
        e(ext["version"]), f"<code>{e(ext['configuration_hash'])}</code>",
        f"{e(activated['at'])}<br>by {e(activated['by_name'])} <span class=\"muted\">({e(activated['by'])})</span>",
        f"{e(configured['at'])}<br>by {e(configured['by_name'])}", status,
    ]])
    signoffs = table(
        ["aspect", "signed by", "role", "meaning", "signed at", "notes"],
        [[e(s["aspect"]), f"{e(s['signer_name'])} <span class=\"muted\">({e(s['signer_id'])})</span>", e(s["role"]),
          e(s["meaning"]), e(s["signed_at"]), e(s["notes"])] for s in ext["signoffs"]],
    ) if ext["signoffs"] else "<p>No signoff covers this configuration.</p>"
    pending = table(["pending aspect", "role that signs", "meaning"],
                    [[e(p["aspect"]), e(p["role"]), e(p["meaning"])] for p in ext["pending_aspects"]], "pending")
    return (f"<section><h3>{e(ext['plugin_id'])}</h3>{facts}<h4>Signoffs of this configuration</h4>{signoffs}"
            + (pending if ext["pending_aspects"] else "") + "</section>")


def signature_block() -> str:
    rows = [["", "", "", ""] for _ in range(3)]
    return ("<h2>Review and signatures</h2><p>By signing below I confirm that I reviewed this report, identified by"
            " the SHA-256 printed at its end.</p>" + table(["printed name", "role", "signature", "date"], rows, "sign"))


def render_html(report: dict[str, Any], sha256: str) -> bytes:
    site = report["site"]
    title = f"Compliance report: site {site['site_id']} as of {report['as_of']}"
    meta = table(["site", "name", "time zone", "as of", "changes since", "last position covered"], [[
        e(site["site_id"]), e(site["name"]) + (" (retired)" if site["retired"] else ""), e(site["timezone"]),
        e(report["as_of"]), e(report["since"] or "the start"), e(report["position"]),
    ]])
    extensions = "".join(extension_section(x) for x in report["extensions"]) or "<p>No extension was active.</p>"
    changes = table(
        ["position", "recorded at", "event", "extension", "by", "what changed"],
        [[e(c["position"]), e(c["recorded_at"]), e(c["event"]), e(c["plugin_id"]), e(c["by_name"]), e(c["detail"])]
         for c in report["changes"]],
    ) if report["changes"] else "<p>No change in this window.</p>"
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"
        f"<title>{e(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>Compliance report</h1><p class=\"muted\">Rebuilt from the event log (report version"
        f" {e(report['report_version'])}).</p>{meta}"
        f"<h2>Extensions active as of {e(report['as_of'])}</h2>{extensions}"
        f"<h2>Changes</h2>{changes}{signature_block()}"
        f"<footer><p class=\"muted\">SHA-256 of this document without these 64 digits: <code>{sha256}</code></p></footer>"
        "</body></html>\n"
    )
    return page.encode("utf-8")
