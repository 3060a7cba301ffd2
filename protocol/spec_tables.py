"""Markdown tables of docs/protocol.md, rendered from the schemas and code tables.

The document keeps hand-written prose between generated blocks:

    <!-- generated:NAME -->
    ...rendered here...
    <!-- end generated:NAME -->

`update_document(text, vectors)` re-renders every block; `python -m lmg.protocol.spec_tables
docs/protocol.md` rewrites the file, and tests/protocol/test_doc.py fails when the
document is not what this module renders, so the doc cannot drift from the code.
"""

from __future__ import annotations

import json
import re
import sys
import zlib
from typing import Any

from construct import Bytes, Const, Construct, FormatField, Rebuild, Struct

from lmg.protocol.auth import auth_mac, auth_message
from lmg.protocol.codes import MESSAGE_DESCRIPTIONS, RESULT_DESCRIPTIONS, MessageType, ResultCode
from lmg.protocol.messages import BODY_SCHEMAS, MESSAGE_CLASSES, PUNCH_RECORD
from lmg.protocol.schema import (
    FRAME_HEADER,
    FRAME_OVERHEAD,
    HEADER_SIZE,
    MAX_FRAME_SIZE,
    Blob,
    FixedText,
    Row,
    Text,
    row_of_array,
    unwrap,
)

_INT_NAMES = {"B": "u8", "H": "u16", "I": "u32", "L": "u32", "Q": "u64", "h": "i16", "i": "i32"}


def _type_and_size(subcon: Construct) -> tuple[str, int | None, str]:
    """(type name, size in bytes or None when variable, size text)."""
    inner = unwrap(subcon)
    if isinstance(inner, Rebuild):
        inner = unwrap(inner.subcon)
    if isinstance(inner, Const):
        return f"bytes[{len(inner.value)}]", len(inner.value), str(len(inner.value))
    if isinstance(inner, FormatField):
        size = inner.sizeof()
        return _INT_NAMES[inner.fmtstr[1:]], size, str(size)
    if isinstance(inner, FixedText):
        return f"char[{inner.length}]", inner.length, str(inner.length)
    if type(inner) is Bytes and isinstance(inner.length, int):
        return f"bytes[{inner.length}]", inner.length, str(inner.length)
    if isinstance(inner, Text):
        prefix = inner.prefix_size
        return f"str{8 * prefix}", None, f"{prefix}+n"
    if isinstance(inner, Blob):
        return "bytes16", None, "2+n"
    if isinstance(inner, Row):
        size = inner.sizeof()
        return f"{inner.row_class.__name__}", size, str(size)
    row = row_of_array(inner)
    if row is not None:
        return f"{row.row_class.__name__}[]", None, "count × row"
    raise TypeError(f"no documentation type for {type(inner).__name__}")


def _docs_of(subcon: Construct) -> str:
    while subcon is not None:
        docs: str = getattr(subcon, "docs", "")
        if docs:
            return docs
        subcon = getattr(subcon, "subcon", None)
    return ""


def field_table(schema: Struct, *, base_offset: int = 0) -> str:
    """| offset | field | type | size | meaning | for a Struct; offsets stop being fixed after a variable field."""
    lines = ["| offset | field | type | size (bytes) | meaning |", "|---:|---|---|---:|---|"]
    offset: int | None = base_offset
    for sc in schema.subcons:
        type_name, size, size_text = _type_and_size(sc)
        meaning = _docs_of(sc)
        if isinstance(unwrap(sc), Rebuild):
            meaning = meaning or "written by the sender from the data that follows"
        at = str(offset) if offset is not None else "…"
        lines.append(f"| {at} | `{sc.name}` | {type_name} | {size_text} | {meaning} |")
        offset = offset + size if (offset is not None and size is not None) else None
    if len(lines) == 2:
        lines.append("| — | — | — | 0 | empty body |")
    return "\n".join(lines)


def frame_header_table() -> str:
    table = field_table(FRAME_HEADER)
    body_row = f"| {HEADER_SIZE} | `body` | bytes | body_len | the message body (per-message tables below) |"
    crc_row = "| 14 + body_len | `checksum` | u32 | 4 | CRC-32 of bytes 0 … 13 + body_len (header and body) |"
    return "\n".join([table, body_row, crc_row])


def message_type_table() -> str:
    lines = ["| msg_type | name | direction | purpose |", "|---|---|---|---|"]
    for msg_type in MessageType:
        direction, purpose = MESSAGE_DESCRIPTIONS[msg_type]
        lines.append(f"| `0x{msg_type:04X}` | {msg_type.name} | {direction} | {purpose} |")
    return "\n".join(lines)


def result_code_table() -> str:
    lines = ["| code | name | meaning |", "|---|---|---|"]
    for code in ResultCode:
        lines.append(f"| `0x{code:04X}` | {code.name} | {RESULT_DESCRIPTIONS[code]} |")
    return "\n".join(lines)


def _example_block(vector: dict[str, Any]) -> str:
    frame = bytes.fromhex(vector["hex"])
    grouped = " ".join(vector["hex"][i : i + 2] for i in range(0, len(vector["hex"]), 2))
    wrapped = "\n".join(grouped[i : i + 96].strip() for i in range(0, len(grouped), 96))
    decoded = json.dumps(vector["message"], ensure_ascii=False)
    return (
        f"Example `{vector['name']}` ({vector['description']}; {len(frame)} bytes, "
        f"`tests/vectors/{vector['name']}.json`):\n\n```hex\n{wrapped}\n```\n\n"
        f"Decoded: `{decoded}`"
    )


def message_section(msg_type: MessageType, vectors: dict[str, dict[str, Any]]) -> str:
    cls = MESSAGE_CLASSES[int(msg_type)]
    schema = BODY_SCHEMAS[cls]
    direction, purpose = MESSAGE_DESCRIPTIONS[msg_type]
    parts = [f"#### `0x{msg_type:04X}` {msg_type.name} ({direction})", "", purpose[0].upper() + purpose[1:] + ".", ""]
    parts.append(field_table(schema))
    for sc in schema.subcons:
        row = row_of_array(sc)
        if row is not None and row is not PUNCH_RECORD:
            parts += ["", f"Each `{row.row_class.__name__}` row:", "", field_table(row.subcon)]
    examples = [v for v in vectors.values() if v["message"]["type"] == msg_type.name]
    for vector in sorted(examples, key=lambda v: v["name"]):
        parts += ["", _example_block(vector)]
    return "\n".join(parts)


def punch_record_table() -> str:
    return field_table(PUNCH_RECORD.subcon) + f"\n\nA punch record is {PUNCH_RECORD.sizeof()} bytes in V1."


def checksum_example(vectors: dict[str, dict[str, Any]]) -> str:
    frame = bytes.fromhex(vectors["heartbeat"]["hex"])
    covered = frame[:-4]
    crc = zlib.crc32(covered)
    check = zlib.crc32(b"123456789")
    return (
        "CRC-32 with the parameters of zlib, PNG and Ethernet (CRC-32/ISO-HDLC): polynomial "
        "`0x04C11DB7` (reflected `0xEDB88320`), initial value `0xFFFFFFFF`, input and output "
        f"reflected, final XOR `0xFFFFFFFF`; the check value of ASCII `123456789` is `0x{check:08X}`.\n\n"
        f"Worked example, the `heartbeat` frame: the checksum covers its first {len(covered)} bytes\n\n"
        f"```hex\n{' '.join(f'{b:02x}' for b in covered)}\n```\n\n"
        f"whose CRC-32 is `0x{crc:08X}`, sent big-endian as the last four bytes `{frame[-4:].hex(' ')}`."
    )


def auth_example(vectors: dict[str, dict[str, Any]]) -> str:
    from lmg.protocol.jsonform import from_jsonable

    hello = from_jsonable(vectors["hello"]["message"])
    challenge = from_jsonable(vectors["challenge"]["message"])
    auth = from_jsonable(vectors["auth"]["message"])
    secret = _EXAMPLE_SECRET
    message = auth_message(challenge.nonce, hello.serial, hello.firmware, hello.protocol_version)
    mac = auth_mac(secret, challenge.nonce, hello.serial, hello.firmware, hello.protocol_version)
    assert mac == auth.mac, "the auth vector was not signed with the documented example secret"
    return "\n".join(
        [
            f"- secret (32 bytes, given to the vendor as hex): `{secret.hex()}`",
            f"- nonce from CHALLENGE: `{challenge.nonce.hex()}`",
            f"- serial `{hello.serial}`, firmware `{hello.firmware}`, protocol_version {hello.protocol_version} (from HELLO)",
            f"- signed message ({len(message)} bytes): `{message.hex()}`",
            f"- mac = HMAC-SHA256(secret, message) = `{mac.hex()}` (the AUTH body)",
        ]
    )


_EXAMPLE_SECRET = bytes.fromhex("8f1e5b2c9a7d3e6f0b4a1c8d2e5f7a9b3c6d0e1f2a4b5c7d8e9f0a1b2c3d4e5f")


def constants_table() -> str:
    return "\n".join(
        [
            "| constant | value |",
            "|---|---|",
            f"| header size | {HEADER_SIZE} bytes |",
            f"| frame overhead (header + checksum) | {FRAME_OVERHEAD} bytes |",
            f"| maximum frame size (V1) | {MAX_FRAME_SIZE} bytes, so body_len ≤ {MAX_FRAME_SIZE - FRAME_OVERHEAD} |",
            f"| punch record size (V1) | {PUNCH_RECORD.sizeof()} bytes |",
        ]
    )


def render(name: str, vectors: dict[str, dict[str, Any]]) -> str:
    if name == "frame-header":
        return frame_header_table()
    if name == "constants":
        return constants_table()
    if name == "message-types":
        return message_type_table()
    if name == "result-codes":
        return result_code_table()
    if name == "punch-record":
        return punch_record_table()
    if name == "checksum-example":
        return checksum_example(vectors)
    if name == "auth-example":
        return auth_example(vectors)
    if name.startswith("message:"):
        return message_section(MessageType[name.split(":", 1)[1]], vectors)
    raise KeyError(f"unknown generated block {name!r}")


_BLOCK = re.compile(r"(<!-- generated:(?P<name>[\w:-]+) -->\n)(?P<body>.*?)(<!-- end generated:(?P=name) -->)", re.S)


def update_document(text: str, vectors: dict[str, dict[str, Any]]) -> str:
    """`text` with every generated block re-rendered."""
    return _BLOCK.sub(lambda m: m.group(1) + render(m.group("name"), vectors) + "\n" + m.group(4), text)


def generated_block_names(text: str) -> list[str]:
    return [m.group("name") for m in _BLOCK.finditer(text)]


def main(argv: list[str]) -> int:
    import pathlib

    doc = pathlib.Path(argv[0] if argv else "docs/protocol.md")
    vectors_dir = pathlib.Path(argv[1] if len(argv) > 1 else "tests/vectors")
    vectors = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(vectors_dir.glob("*.json"))}
    text = doc.read_text(encoding="utf-8")
    new = update_document(text, vectors)
    if new != text:
        doc.write_text(new, encoding="utf-8")
        print(f"updated {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
