"""The kit's report: `report.json` for machines, `report.html` for a vendor's engineer.

`report.json` is the examiner's report as is: `{"items": [{"id", "section", "level",
"verdict", "detail", "checks", "wirelog"}], "summary": {"pass", "non-strict", "fail",
"informational", "not run", "device", "started", "ended", "verdict", "not_reached"}}`;
`REPORT_SCHEMA` below is its JSON Schema (tests validate against it). `report.html` is one
static page with no external assets (it opens from a mail attachment, offline): the
summary, a table of every item, then per item its detail and the frames that decided it,
in hex and decoded. Every text from the device is escaped (a serial or a config value is
the device's bytes, not markup).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import orjson

from lmg.server.conformance.catalogue import Level, Verdict

_VERDICTS = [v.value for v in Verdict]
_STR = {"type": "string"}
_COUNT = {"type": "integer", "minimum": 0}

#: JSON Schema (draft 2020-12) of report.json.
REPORT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["items", "summary"],
    "properties": {
        "items": {"type": "array", "items": {
            "type": "object",
            "required": ["id", "section", "level", "verdict", "detail", "wirelog"],
            "properties": {
                "id": {"type": "string", "pattern": r"^[a-z_]+(\.[a-z_]+)+$"},
                "section": {"type": "string", "pattern": "^§"},
                "level": {"enum": [level.value for level in Level]},
                "verdict": {"enum": _VERDICTS},
                "detail": _STR,
                "checks": _STR,
                "wirelog": {"type": "array", "items": {
                    "type": "object",
                    "required": ["conn", "from", "at_ms", "hex", "type"],
                    "properties": {"conn": _COUNT, "from": {"enum": ["device", "kit"]}, "at_ms": _COUNT,
                                   "hex": {"type": "string", "pattern": r"^[0-9a-f* ]*( … \(\d+ bytes\))?$"},
                                   "type": _STR, "seq": _COUNT, "fields": {"type": "object"}, "error": _STR,
                                   "flags": _COUNT},
                }},
            },
        }},
        "summary": {
            "type": "object",
            "required": [*_VERDICTS, "device", "started", "ended", "verdict"],
            "properties": {**{v: _COUNT for v in _VERDICTS}, "device": _STR, "started": _STR, "ended": _STR,
                           "verdict": {"enum": ["conforms", "does not conform"]},
                           "not_reached": {"type": "array", "items": _STR}},
        },
    },
}


def write_report(report: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    """Write report.json and report.html into `directory` (created if missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, html_path = directory / "report.json", directory / "report.html"
    json_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    html_path.write_text(render_html(report), encoding="utf-8")
    return json_path, html_path


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The summary as a few console lines."""
    s = report["summary"]
    lines = [f"device {s['device'] or '?'}: {s['verdict']}",
             "  " + ", ".join(f"{s[v]} {v}" for v in _VERDICTS)]
    bad = [i for i in report["items"] if i["verdict"] in ("fail", "non-strict")
           or (i["verdict"] == "not run" and i["level"] == "MUST")]
    lines += [f"  {i['verdict']:>10}  {i['id']} ({i['section']}, {i['level']}): {i['detail']}" for i in bad]
    return lines


_STYLE = """
body{font:14px/1.45 system-ui,"Noto Sans CJK SC",sans-serif;margin:2em;color:#222;max-width:80em}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;
vertical-align:top}th{background:#f3f3f3}.pass{background:#e4f6e4}.fail{background:#fbe1e1}
.non-strict{background:#fff3d6}.not-run{background:#eee}.informational{background:#e3eefb}
pre{background:#f7f7f7;padding:.5em;white-space:pre-wrap;word-break:break-all;font-size:12px;margin:.2em 0}
h2{margin-top:2em}.frame{border-left:3px solid #bbb;padding-left:.6em;margin:.6em 0}.kit{border-color:#7aa7d8}
.device{border-color:#d8a77a}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _css(verdict: str) -> str:
    return verdict.replace(" ", "-")


def render_html(report: dict[str, Any]) -> str:
    s = report["summary"]
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>Conformance report: {_e(s['device'])}</title><style>{_STYLE}</style></head><body>",
           f"<h1>Conformance report for terminal {_e(s['device'] or '?')}</h1>",
           f"<p>Verdict: <strong>{_e(s['verdict'])}</strong> (a terminal conforms when no MUST item fails or is "
           f"not run). Run from {_e(s['started'])} to {_e(s['ended'])}. The items are those of docs/conformance.md; "
           "sections refer to docs/protocol.md. Resident ID numbers are masked and photo data cut short.</p>",
           "<table><tr>" + "".join(f"<th>{_e(v)}</th>" for v in _VERDICTS) + "</tr><tr>"
           + "".join(f'<td class="{_css(v)}">{_e(s[v])}</td>' for v in _VERDICTS) + "</tr></table>"]
    if s.get("not_reached"):
        out.append("<p>Never reached: " + ", ".join(f"<code>{_e(i)}</code>" for i in s["not_reached"]) + "</p>")
    out.append("<table><tr><th>item</th><th>section</th><th>level</th><th>verdict</th><th>detail</th></tr>")
    for item in report["items"]:
        out.append(f'<tr class="{_css(item["verdict"])}"><td><a href="#{_e(item["id"])}">{_e(item["id"])}</a></td>'
                   f"<td>{_e(item['section'])}</td><td>{_e(item['level'])}</td><td>{_e(item['verdict'])}</td>"
                   f"<td>{_e(item['detail'])}</td></tr>")
    out.append("</table>")
    for item in report["items"]:
        out.append(f'<h2 id="{_e(item["id"])}">{_e(item["id"])} <small>({_e(item["section"])}, '
                   f'{_e(item["level"])}): <span class="{_css(item["verdict"])}">{_e(item["verdict"])}</span>'
                   "</small></h2>")
        if item.get("checks"):
            out.append(f"<p><em>Checks:</em> {_e(item['checks'])}</p>")
        out.append(f"<p>{_e(item['detail'])}</p>")
        if not item["wirelog"]:
            out.append("<p>No frames recorded.</p>")
        for entry in item["wirelog"]:
            decoded = {k: entry[k] for k in ("seq", "fields", "error", "flags") if k in entry}
            out.append(f'<div class="frame {_e(entry["from"])}"><strong>{_e(entry["from"])}</strong> '
                       f"{_e(entry['type'])}, connection {_e(entry['conn'])}, at {entry['at_ms'] / 1000:.3f} s"
                       f"<pre>{_e(entry['hex'])}</pre><pre>{_e(json.dumps(decoded, ensure_ascii=False))}</pre></div>")
    out.append("</body></html>")
    return "\n".join(out)


def schema_errors(instance: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """Where `instance` breaks `schema`: the subset of JSON Schema REPORT_SCHEMA uses (type,
    required, properties, items, enum, pattern, minimum). Empty when it conforms."""
    import re

    kinds = {"object": dict, "array": list, "string": str, "integer": int}
    errors: list[str] = []
    kind = schema.get("type")
    wrong_type = kind is not None and not isinstance(instance, kinds[kind])
    if wrong_type or (kind == "integer" and isinstance(instance, bool)):
        return [f"{where}: {type(instance).__name__}, expected {kind}"]
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{where}: {instance!r} not one of {schema['enum']}")
    if "pattern" in schema and isinstance(instance, str) and not re.search(schema["pattern"], instance):
        errors.append(f"{where}: {instance[:60]!r} does not match {schema['pattern']}")
    if "minimum" in schema and isinstance(instance, int) and instance < schema["minimum"]:
        errors.append(f"{where}: {instance} below {schema['minimum']}")
    if isinstance(instance, dict):
        errors += [f"{where}: missing {name!r}" for name in schema.get("required", ()) if name not in instance]
        for name, sub in schema.get("properties", {}).items():
            if name in instance:
                errors += schema_errors(instance[name], sub, f"{where}.{name}")
    if isinstance(instance, list) and "items" in schema:
        for index, element in enumerate(instance):
            errors += schema_errors(element, schema["items"], f"{where}[{index}]")
    return errors
