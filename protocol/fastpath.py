"""Fast body codecs generated from the construct schemas.

construct interprets a schema field by field, about 40 us for a punch frame here; the hot
messages (heartbeat, punch, punch batch, ack) arrive tens of thousands of times a second,
so for them this module reads the *same* schema objects and generates Python source that
does the work with precompiled `struct.Struct`s. Nothing here restates the wire format:
field order, sizes, integer formats and nested rows all come from the schema, and the
generator refuses any construct it does not understand (so a schema change cannot
silently leave a stale fast path).

Strictness contract (checked by tests/protocol/test_fastpath.py with hypothesis): for any
body bytes, a fast decoder returns exactly what the reference construct parser returns,
and raises `MalformedBody` exactly when construct fails. `struct` alone would not: it
pads or truncates `s` fields and construct's own compiled parsers skip length checks, so
the generated code checks every length explicitly. Trailing bytes after the known
fields are ignored by both (that is how older peers skip newer fields).

Length-prefixed text (`Text`: u8 or u16 length, then UTF-8) is translated too, for the
handshake (HELLO); a body with text fields is read field run by field run, each run of
fixed fields with one struct call whose last field is the next text's length. Such a body
may not also end in an array of rows (no message needs both; the generator refuses it).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from construct import (Array, Bytes, Const, Construct, FixedSized, FormatField, GreedyBytes, Prefixed, Rebuild,
                       Renamed, Struct)

from lmg.protocol.errors import EncodeError, MalformedBody
from lmg.protocol.schema import FixedText, Row, Text, unwrap as _unwrap

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeAlias

    from lmg.protocol.messages import Message

    #: What a body decoder reads from: a whole frame's bytes, or the TCP decoder's buffer.
    Buffer: TypeAlias = bytes | bytearray | memoryview
    #: `decode(buf, start, end, seq)`: the message whose body is buf[start:end]; raises
    #: MalformedBody.
    BodyDecoder: TypeAlias = Callable[[Buffer, int, int, int], Message]
    #: `encode(message)`: the body bytes; raises EncodeError.
    BodyEncoder: TypeAlias = Callable[[Message], bytes]


class NotFastPathable(TypeError):
    """The schema uses a construct the generator does not translate."""


@dataclass
class _Leaf:
    name: str  # local variable name in generated code
    fmt: str  # struct format character(s), without byte order
    kind: str  # "int", "bytes" or "text"
    size: int


@dataclass
class _Group:
    """A run of fixed fields read by one struct call, with how to build the result."""

    leaves: list[_Leaf] = field(default_factory=list)

    @property
    def fmt(self) -> str:
        return ">" + "".join(leaf.fmt for leaf in self.leaves)


def _leaf(subcon: Construct, name: str) -> _Leaf:
    subcon = _unwrap(subcon)
    if isinstance(subcon, FormatField):
        if not subcon.fmtstr.startswith(">"):
            raise NotFastPathable(f"{name}: only big-endian integers are on the wire")
        return _Leaf(name, subcon.fmtstr[1:], "int", subcon.sizeof())
    if isinstance(subcon, FixedText):
        return _Leaf(name, f"{subcon.length}s", "text", subcon.length)
    if type(subcon) is Bytes and isinstance(subcon.length, int):
        return _Leaf(name, f"{subcon.length}s", "bytes", subcon.length)
    raise NotFastPathable(f"{name}: {type(subcon).__name__} has no fast translation")


def _text_prefix(subcon: Construct) -> str | None:
    """The struct format of a `Text` field's length prefix, or None if `subcon` is no Text."""
    subcon = _unwrap(subcon)
    if not isinstance(subcon, Text):
        return None
    prefixed = subcon.subcon
    if not (isinstance(prefixed, Prefixed) and isinstance(prefixed.lengthfield, FormatField)
            and prefixed.subcon is GreedyBytes and prefixed.lengthfield.fmtstr.startswith(">")):
        raise NotFastPathable("Text must be a big-endian length prefix followed by the bytes")
    fmt: str = prefixed.lengthfield.fmtstr
    return fmt[1:]


def fixed_format(schema: Struct) -> str:
    """struct format of a schema made only of fixed fields and constants (the frame header)."""
    parts = []
    for sc in schema.subcons:
        inner = _unwrap(sc)
        if isinstance(inner, Const):
            parts.append(f"{len(inner.value)}s")
        else:
            parts.append(_leaf(inner, sc.name).fmt)
    return ">" + "".join(parts)


def _flatten_row(row: Row, prefix: str, group: _Group) -> str:
    """Add the row's fields to `group`; return the expression building the row."""
    parts = []
    for sc in row.subcon.subcons:
        if not isinstance(sc, Renamed):
            raise NotFastPathable(f"unnamed field in row {row.row_class.__name__}")
        leaf = _leaf(sc, f"{prefix}{len(group.leaves)}")
        group.leaves.append(leaf)
        parts.append(_decode_expr(leaf))
    return f"_new({row.row_class.__name__}, ({', '.join(parts)},))"


def _decode_expr(leaf: _Leaf) -> str:
    return f"{leaf.name}.decode('latin-1')" if leaf.kind == "text" else leaf.name


def _field_name_of(path: Construct, names: list[str]) -> str:
    """Which earlier field a construct `this[...]` expression refers to."""
    found: str = path({n: n for n in names})  # evaluated where every name stands for itself
    if found not in names:
        raise NotFastPathable(f"array count/size must be an earlier field, got {path!r}")
    return found


@dataclass
class _Plan:
    head: _Group
    head_exprs: list[str]  # one per message field before the tail
    rebuilt: dict[str, str]  # count/size field name -> local variable holding it
    # bodies with text: fixed runs, each followed by the text whose length ends it (None last)
    segments: list[tuple[_Group, str | None]] = field(default_factory=list)
    tail_name: str | None = None
    tail_row: Row | None = None
    tail_count: str | None = None
    tail_size: str | None = None  # None: rows are exactly row size


def _plan(schema: Struct) -> _Plan:
    plan = _Plan(_Group(), [], {})
    subcons = list(schema.subcons)
    names_so_far: list[str] = []
    for index, sc in enumerate(subcons):
        if not isinstance(sc, Renamed):
            raise NotFastPathable("unnamed top-level field")
        inner = _unwrap(sc)
        if isinstance(inner, Array):
            if index != len(subcons) - 1:
                raise NotFastPathable(f"{sc.name}: an array must be the last field")
            element = _unwrap(inner.subcon)
            plan.tail_name = sc.name
            plan.tail_count = plan.rebuilt[_field_name_of(inner.count, names_so_far)]
            if isinstance(element, FixedSized):
                plan.tail_size = plan.rebuilt[_field_name_of(element.length, names_so_far)]
                element = _unwrap(element.subcon)
            if not isinstance(element, Row):
                raise NotFastPathable(f"{sc.name}: array elements must be rows")
            plan.tail_row = element
        elif isinstance(inner, Rebuild):
            leaf = _leaf(inner.subcon, f"h{len(plan.head.leaves)}")
            plan.head.leaves.append(leaf)
            plan.rebuilt[sc.name] = leaf.name
        elif (prefix := _text_prefix(inner)) is not None:
            # the length joins the current run; the text itself ends the run
            n = len(plan.head.leaves)
            length = _Leaf(f"n{n}", prefix, "int", struct.calcsize(">" + prefix))
            run = _Group([*_leaves_since_last_text(plan), length])
            plan.head.leaves.append(length)
            text = f"h{n}"
            plan.segments.append((run, text))
            plan.head_exprs.append(text)
        elif isinstance(inner, Row):
            plan.head_exprs.append(_flatten_row(inner, "h", plan.head))
        elif isinstance(inner, Const):
            raise NotFastPathable("constants belong to the frame header, not bodies")
        else:
            leaf = _leaf(inner, f"h{len(plan.head.leaves)}")
            plan.head.leaves.append(leaf)
            plan.head_exprs.append(_decode_expr(leaf))
        names_so_far.append(sc.name)
    if plan.segments:
        if plan.tail_row is not None:
            raise NotFastPathable("a body with text fields cannot end in an array of rows")
        plan.segments.append((_Group(_leaves_since_last_text(plan)), None))
    return plan


def _leaves_since_last_text(plan: _Plan) -> list[_Leaf]:
    """The fixed leaves of the head after the last text length (the run being built)."""
    leaves = plan.head.leaves
    last = max((i for i, leaf in enumerate(leaves) if leaf.name.startswith("n")), default=-1)
    return leaves[last + 1:]


def _row_leaves(row: Row) -> list[_Leaf]:
    group = _Group()
    _flatten_row(row, "r", group)
    return group.leaves


@dataclass(frozen=True)
class FastCodec:
    """Generated decode/encode for one message class, plus the source for inspection."""

    decode: BodyDecoder  # (buf, start, end, seq) -> message; raises MalformedBody
    encode: BodyEncoder  # (message) -> body bytes; raises EncodeError
    source: str


def compile_codec(cls: type[Message], schema: Struct, label: str | None = None) -> FastCodec:
    """Generate the fast codec of message class `cls` from its body `schema`.

    `label` names the message in errors (default: the message type's name).
    """
    label = label or cls.msg_type.name
    plan = _plan(schema)
    if plan.segments:
        return _compile_with_text(cls, schema, plan, label)
    env: dict[str, Any] = {  # the generated code's globals; exec adds decode and encode
        "MalformedBody": MalformedBody,
        "EncodeError": EncodeError,
        "struct_error": struct.error,
        # NamedTuple instances built with tuple.__new__ skip the generated __new__ frame:
        # about 0.14 us instead of 0.34 us per object here, and a batch builds hundreds.
        "_new": tuple.__new__,
        cls.__name__: cls,
    }
    head_fmt = plan.head.fmt
    head_size = struct.calcsize(head_fmt)
    env["_head_unpack"] = struct.Struct(head_fmt).unpack_from
    env["_head_pack"] = struct.Struct(head_fmt).pack
    for expr_owner in [plan.tail_row] + [_unwrap(sc) for sc in schema.subcons if isinstance(_unwrap(sc), Row)]:
        if expr_owner is not None:
            env[expr_owner.row_class.__name__] = expr_owner.row_class

    head_vars = ", ".join(leaf.name for leaf in plan.head.leaves)
    lines = [
        "def decode(buf, start, end, seq):",
        f"    if end - start < {head_size}:",
        f"        raise MalformedBody(f'{label} body is {{end - start}} bytes; its fields need {head_size}')",
    ]
    if plan.head.leaves:
        lines.append(f"    ({head_vars},) = _head_unpack(buf, start)")
    if plan.tail_row is not None:
        row = plan.tail_row
        row_leaves = _row_leaves(row)
        row_fmt = ">" + "".join(leaf.fmt for leaf in row_leaves)
        row_size = struct.calcsize(row_fmt)
        env["_row_unpack"] = struct.Struct(row_fmt).unpack_from
        env["_row_iter"] = struct.Struct(row_fmt).iter_unpack
        env["_row_pack"] = struct.Struct(row_fmt).pack
        row_vars = ", ".join(leaf.name for leaf in row_leaves)
        row_expr = f"_new({row.row_class.__name__}, ({', '.join(_decode_expr(leaf) for leaf in row_leaves)},))"
        plain = all(leaf.kind != "text" for leaf in row_leaves)
        count = plan.tail_count
        stride = plan.tail_size or str(row_size)
        lines += [
            f"    pos = start + {head_size}",
            f"    if {count}:",
        ]
        if plan.tail_size:
            lines += [
                f"        if {stride} < {row_size}:",
                f"            raise MalformedBody(f'{label} rows of {{{stride}}} bytes are shorter than the {row_size} a row needs')",
            ]
        lines += [
            f"        stop = pos + {count} * {stride}",
            "        if stop > end:",
            f"            raise MalformedBody(f'{label} declares {{{count}}} rows but the body ends {{stop - end}} bytes short')",
        ]
        if plain:
            fast_rows = f"tuple(map({row.row_class.__name__}._make, _row_iter(buf[pos:stop])))"
        else:
            fast_rows = f"tuple([{row_expr} for ({row_vars},) in _row_iter(buf[pos:stop])])"
        slow_rows = (
            f"tuple([{row_expr} for ({row_vars},) in "
            f"(_row_unpack(buf, pos + i * {stride}) for i in range({count}))])"
        )
        if plan.tail_size:
            lines += [
                f"        if {stride} == {row_size}:",
                f"            rows = {fast_rows}",
                "        else:",
                f"            rows = {slow_rows}",
            ]
        else:
            lines.append(f"        rows = {fast_rows}")
        lines += ["    else:", "        rows = ()"]
        field_exprs = plan.head_exprs + ["rows"]
    else:
        field_exprs = plan.head_exprs
    lines.append(f"    return _new({cls.__name__}, ({', '.join(field_exprs + ['seq'])},))")

    # --- encoder: the same plan, read the other way ---
    enc = ["def encode(m):", "    try:"]
    args = []
    field_index = 0
    checks: list[str] = []
    for sc in schema.subcons:
        inner = _unwrap(sc)
        if isinstance(inner, Array):
            continue
        if isinstance(inner, Rebuild):
            # a count is the tail's length; a row size is the size this code writes
            if plan.rebuilt[sc.name] == plan.tail_count:
                args.append(f"len(m[{_tail_index(cls, plan)}])")
            elif plan.tail_row is not None:
                args.append(str(plan.tail_row.sizeof()))
            else:
                raise NotFastPathable(f"{sc.name}: rebuilt, but there are no rows to count or size")
            continue
        if isinstance(inner, Row):
            enc.append(f"        r{field_index} = m[{field_index}]")
            for j, rsc in enumerate(inner.subcon.subcons):
                leaf = _leaf(rsc, "x")
                args.append(_encode_expr(leaf, f"r{field_index}[{j}]", checks, label))
        else:
            args.append(_encode_expr(_leaf(inner, "x"), f"m[{field_index}]", checks, label))
        field_index += 1
    enc += [f"        {c}" for c in checks]
    enc.append(f"        body = _head_pack({', '.join(args)})")
    if plan.tail_row is not None:
        row_leaves = _row_leaves(plan.tail_row)
        row_checks: list[str] = []
        row_args = [_encode_expr(leaf, f"r[{j}]", row_checks, label) for j, leaf in enumerate(row_leaves)]
        rows_of = f"m[{_tail_index(cls, plan)}]"
        if row_checks:
            # rows with checked fields get their own small packer
            enc = ["def _pack_checked_row(r):", *[f"    {c}" for c in row_checks],
                   f"    return _row_pack({', '.join(row_args)})", ""] + enc
            enc.append(f"        body += b''.join([_pack_checked_row(r) for r in {rows_of}])")
        else:
            enc.append(f"        body += b''.join([_row_pack({', '.join(row_args)}) for r in {rows_of}])")
    enc += [
        "    except (struct_error, TypeError, AttributeError, UnicodeEncodeError) as exc:",
        f"        raise EncodeError(f'{label}: {{exc}}') from None",
        "    return body",
    ]
    source = "\n".join(lines + [""] + enc) + "\n"
    exec(compile(source, f"<fastpath {label}>", "exec"), env)  # noqa: S102 - generated from our own schema
    return FastCodec(env["decode"], env["encode"], source)


def compile_packer(schema: Struct, label: str) -> BodyEncoder:
    """`pack(values) -> bytes`: what `schema.build` makes of a tuple of its field values in
    schema order, generated like the message codecs; raises EncodeError where build fails.
    For byte strings that are not messages but are written in the wire's vocabulary (the
    message AUTH signs)."""
    # the field names come from the schema, so mypy cannot know them
    fields = NamedTuple("Fields", [(sc.name, object) for sc in schema.subcons])  # type: ignore[misc]
    return compile_codec(fields, schema, label).encode


def _encode_expr(leaf: _Leaf, value: str, checks: list[str], label: str) -> str:
    """Expression for one packed argument; length checks go to `checks` (struct would pad)."""
    if leaf.kind == "int":
        return value
    var = f"t{len(checks)}"
    encoded = f"{value}.encode('latin-1')" if leaf.kind == "text" else value
    checks.append(f"{var} = {encoded}")
    checks.append(
        f"if len({var}) != {leaf.size}: "
        f"raise EncodeError(f'{label}: a field needs exactly {leaf.size} bytes, got {{len({var})}}')"
    )
    return var


def _tail_index(cls: type[NamedTuple], plan: _Plan) -> int:
    return cls._fields.index(plan.tail_name)


def _compile_with_text(cls: type[NamedTuple], schema: Struct, plan: _Plan, label: str) -> FastCodec:
    """Codec of a body with text fields (and no row array): run, text, run, text, ..., run."""
    env: dict[str, Any] = {"MalformedBody": MalformedBody, "EncodeError": EncodeError,
                           "struct_error": struct.error, "_new": tuple.__new__, cls.__name__: cls}
    for sc in schema.subcons:
        if isinstance(_unwrap(sc), Row):
            env[_unwrap(sc).row_class.__name__] = _unwrap(sc).row_class
    dec = ["def decode(buf, start, end, seq):", "    pos = start"]
    enc_checks: list[str] = []
    enc_parts: list[str] = []
    args_of = iter(_encode_args(cls, schema, enc_checks, label))
    for index, (run, text) in enumerate(plan.segments):
        size = struct.calcsize(run.fmt)
        if run.leaves:
            env[f"_unpack{index}"] = struct.Struct(run.fmt).unpack_from
            env[f"_pack{index}"] = struct.Struct(run.fmt).pack
            names = ", ".join(leaf.name for leaf in run.leaves)
            dec += [
                f"    if end - pos < {size}:",
                f"        raise MalformedBody(f'{label} body ends {{{size} - (end - pos)}} bytes short of its fields')",
                f"    ({names},) = _unpack{index}(buf, pos)",
                f"    pos += {size}",
            ]
            values = [next(args_of) for leaf in run.leaves if not leaf.name.startswith("n")]
        else:
            values = []
        if text is None:
            if run.leaves:
                enc_parts.append(f"_pack{index}({', '.join(values)})")
            break
        length = run.leaves[-1].name
        raw = f"r{text}"
        enc_checks.append(f"{raw} = {next(args_of)}.encode('utf-8')")
        enc_parts.append(f"_pack{index}({', '.join(values + [f'len({raw})'])})")
        enc_parts.append(raw)
        dec += [
            f"    if end - pos < {length}:",
            f"        raise MalformedBody(f'{label} text of {{{length}}} bytes runs past the body')",
            "    try:",
            f"        {text} = str(buf[pos:pos + {length}], 'utf-8')",
            "    except UnicodeDecodeError as exc:",
            f"        raise MalformedBody(f'{label} text is not valid UTF-8 ({{exc.reason}})') from None",
            f"    pos += {length}",
        ]
    dec.append(f"    return _new({cls.__name__}, ({', '.join(plan.head_exprs + ['seq'])},))")
    enc = ["def encode(m):", "    try:", *[f"        {c}" for c in enc_checks],
           f"        body = b''.join(({', '.join(enc_parts)},))",
           "    except (struct_error, TypeError, AttributeError, UnicodeEncodeError) as exc:",
           f"        raise EncodeError(f'{label}: {{exc}}') from None",
           "    return body"]
    source = "\n".join(dec + [""] + enc) + "\n"
    exec(compile(source, f"<fastpath {label}>", "exec"), env)  # noqa: S102 - generated from our own schema
    return FastCodec(env["decode"], env["encode"], source)


def _encode_args(cls: type[NamedTuple], schema: Struct, checks: list[str], label: str) -> list[str]:
    """One packing expression per fixed leaf and one value per text field, in wire order."""
    args = []
    for index, sc in enumerate(schema.subcons):
        inner = _unwrap(sc)
        if _text_prefix(inner) is not None:
            args.append(f"m[{index}]")
        elif isinstance(inner, Row):
            checks.append(f"r{index} = m[{index}]")
            for j, rsc in enumerate(inner.subcon.subcons):
                args.append(_encode_expr(_leaf(rsc, "x"), f"r{index}[{j}]", checks, label))
        else:
            args.append(_encode_expr(_leaf(inner, "x"), f"m[{index}]", checks, label))
    return args
