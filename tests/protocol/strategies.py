"""Hypothesis strategies for every message, derived from the construct schemas.

Walking the schema (not a hand-written list) means a new message or field is covered by
the round-trip and parity tests the moment it is added.
"""

from __future__ import annotations

import struct

from construct import Bytes, FormatField, Rebuild
from hypothesis import strategies as st

from lmg.protocol.messages import BODY_SCHEMAS, MESSAGE_CLASSES, data_field_names
from lmg.protocol.schema import Blob, FixedText, Row, Text, row_of_array, unwrap

MAX_ROWS = 12  # enough to cover counts of 0, 1 and many without slow examples


def _int_range(fmt: str) -> tuple[int, int]:
    bits = struct.calcsize(">" + fmt) * 8
    if fmt[-1].islower():  # signed
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _text(max_bytes: int):
    return st.text(max_size=max_bytes // 4)  # 4 bytes per char at most in UTF-8


def field_strategy(subcon):
    inner = unwrap(subcon)
    if isinstance(inner, FormatField):
        lo, hi = _int_range(inner.fmtstr[1:])
        return st.integers(lo, hi)
    if isinstance(inner, FixedText):
        return st.text(alphabet=st.characters(max_codepoint=255), min_size=inner.length, max_size=inner.length)
    if isinstance(inner, Text):
        return _text(255 if inner.prefix_size == 1 else 2000)
    if isinstance(inner, Blob):
        return st.binary(max_size=600)
    if type(inner) is Bytes:
        return st.binary(min_size=inner.length, max_size=inner.length)
    if isinstance(inner, Row):
        return row_strategy(inner)
    row = row_of_array(inner)
    if row is not None:
        return st.lists(row_strategy(row), max_size=MAX_ROWS).map(tuple)
    raise TypeError(f"no strategy for {type(inner).__name__}")


def row_strategy(row: Row):
    return st.builds(row.row_class, *[field_strategy(sc) for sc in row.subcon.subcons])


def message_strategy(cls):
    schema = BODY_SCHEMAS[cls]
    fields = [field_strategy(sc) for sc in schema.subcons if not isinstance(unwrap(sc), Rebuild)]
    assert len(fields) == len(data_field_names(schema))
    return st.builds(cls, *fields, st.integers(0, 0xFFFFFFFF))


any_message = st.one_of([message_strategy(cls) for cls in MESSAGE_CLASSES.values()])
