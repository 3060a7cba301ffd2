"""Messages as plain JSON-able dicts: the decoded half of the golden vectors, and logs.

`{"type": "PUNCH", "seq": 3, "fields": {...}}`; bytes become lower-case hex strings,
nested rows become objects, row lists become arrays. `from_jsonable` is the inverse and
is driven by the message classes' type hints, so it needs no table of its own.
"""

from __future__ import annotations

import typing
from typing import Any, NamedTuple

from lmg.protocol.codes import MessageType
from lmg.protocol.messages import BODY_SCHEMAS, MESSAGE_CLASSES, Message
from lmg.protocol.schema import row_of_array


def _to(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {name: _to(item) for name, item in zip(value._fields, value)}
    if isinstance(value, tuple):
        return [_to(item) for item in value]
    return value


def to_jsonable(message: Message) -> dict[str, Any]:
    fields = {name: _to(value) for name, value in zip(message._fields[:-1], message[:-1])}
    return {"type": message.msg_type.name, "seq": message.seq, "fields": fields}


def _row_class_of(cls: type[Message], field: str) -> type[NamedTuple]:
    """The row class of a `tuple` field, read from the schema's Array element."""
    for sc in BODY_SCHEMAS[cls].subcons:
        if sc.name == field:
            row = row_of_array(sc)
            if row is None:
                raise TypeError(f"{cls.__name__}.{field} is a tuple but not an array of rows in the schema")
            return row.row_class
    raise KeyError(field)


def _from(hint: object, value: Any, cls: type[Message], field: str) -> Any:
    if hint is bytes:
        return bytes.fromhex(value)
    if typing.get_origin(hint) is tuple:  # tuple[SomeRow, ...]
        row_class = _row_class_of(cls, field)
        return tuple(_from(row_class, item, cls, field) for item in value)
    if isinstance(hint, type) and issubclass(hint, tuple) and hasattr(hint, "_fields"):
        hints = typing.get_type_hints(hint)
        return hint(*[_from(hints[name], value[name], cls, field) for name in hint._fields])
    return value


def from_jsonable(data: dict[str, Any]) -> Message:
    cls = MESSAGE_CLASSES[int(MessageType[data["type"]])]
    hints = typing.get_type_hints(cls)
    fields = data["fields"]
    values = [_from(hints[name], fields[name], cls, name) for name in cls._fields[:-1]]
    return cls(*values, data.get("seq", 0))
