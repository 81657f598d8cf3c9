"""Hypothesis strategies for fuzzing the wire protocol, built from the schema table.

``valid_header(table, limits)`` draws a header that the schema accepts, for any message type of
the table, with random field values (odd unicode included: bidi overrides, zero-width and lone
surrogates where the field allows them). The strategies are derived from the validators in
``chatscreen.protocol.schema``; a validator this module does not know is a LookupError, so a new
kind of field shows up here instead of silently not being fuzzed.

``bad_frame(table, limits)`` draws the bytes of one frame that is probably wrong: a mutated
valid header (missing / extra / wrong-typed fields, huge ints, NaN, control characters), raw
JSON oddities, invalid UTF-8, broken length fields, truncated or bit-flipped frames.
"""

from __future__ import annotations

import inspect
import itertools
import json
import math
import struct
import unicodedata
from collections.abc import Mapping
from typing import Any

from hypothesis import strategies as st

from chatscreen.protocol import Limits, encode_frame, schema
from chatscreen.protocol.schema import Spec, Validator

Header = dict[str, Any]

# Characters that make trouble: bidi overrides and isolates, zero-width, BOM, line/paragraph
# separators, a lone surrogate of each kind, non-characters, combining marks, astral plane.
ODD_CHARS = ("\u202e\u202d\u2066\u2067\u2068\u2069\u200b\u200d\u200e\ufeff\u2028\u2029"
             "\ud800\udfff\ufffe\uffff\u0301\U0001f600\U000e0001\u00a0\u3000")
CONTROL_CHARS = "\x00\x01\x07\x08\x1b\x7f\x85\x9f\r\n\t"

_printable = st.characters(exclude_categories=("Cc", "Cs"))
_odd = st.sampled_from(ODD_CHARS)

NASTY_INTS = (-1, 0, 1, 2**31, 2**32, 2**53 - 1, 2**53, 2**63, 2**64, -(2**63), 10**30)
NASTY_STRINGS = ("", " ", "\n", "general", "a" * 33, "a" * 5000, "\u202egeneral", "gen\x00eral",
                 "\ud800", "@all", "#x", "a/b", "NaN", "1", "null", "\U0001f600" * 40)
json_values: st.SearchStrategy[Any] = st.one_of(  # what standard JSON can carry
    st.none(),
    st.booleans(),
    st.sampled_from(NASTY_INTS),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(NASTY_STRINGS),
    st.text(st.sampled_from(ODD_CHARS + CONTROL_CHARS) | _printable, max_size=40),
    st.lists(st.none() | st.integers() | st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.none() | st.integers(), max_size=3),
    st.integers(0, 200).map(lambda n: json.loads("[" * n + "]" * n) if n else []),
)
# ... and NaN / Infinity, which the encoder writes (allow_nan) but receivers must refuse
nasty_values = json_values | st.floats(allow_nan=True, allow_infinity=True)


def _names() -> st.SearchStrategy[str]:
    # Names in their NFKC form (the schema normalises them): the parsed field is the value.
    chars = st.characters(exclude_categories=("C", "Z"), exclude_characters="@#:,/\\")
    return st.text(chars, min_size=1, max_size=schema.MAX_NAME).filter(
        lambda s: unicodedata.normalize("NFKC", s) == s and schema.is_valid_name(s))


def _texts(max_text: int) -> st.SearchStrategy[str]:
    chars = _printable | st.sampled_from("\n\t\u202e\u2066\u200b\ufeff\U0001f600")
    short = st.text(chars, min_size=1, max_size=min(max_text, 60)).filter(lambda s: bool(s.strip()))
    return short | st.builds(lambda c: c * max_text, st.sampled_from("x\u00e9\U0001f600"))


def _short_strs(max_len: int) -> st.SearchStrategy[str]:
    # The schema refuses control characters and lone surrogates here; bidi and format
    # characters are allowed.
    chars = _printable | _odd.filter(lambda c: unicodedata.category(c) != "Cs")
    return st.text(chars, max_size=min(max_len, 24)) | st.builds(
        lambda c: c * max_len, st.sampled_from("a\u00e9\U0001f600"))


_TOKEN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


def value_strategy(check: Validator, limits: Limits) -> st.SearchStrategy[Any]:
    """Values the validator accepts."""
    if check is schema.name:
        return _names()
    if check is schema.text:
        return _texts(limits.max_text)
    if check is schema.boolean:
        return st.booleans()
    if check is schema.encoding:
        return st.sampled_from(schema.ENCODINGS)
    if check is schema.file_name:  # display text: no control characters, not blank
        return _short_strs(schema.MAX_FILE_NAME).filter(lambda s: bool(s.strip()))
    if check is schema.token_id:
        return st.text(st.sampled_from(_TOKEN_CHARS), min_size=16, max_size=32)
    if check is schema.sha256_hex:
        return st.text(st.sampled_from("0123456789abcdef"), min_size=64, max_size=64)
    kind = check.__qualname__.split(".")[0]
    env = inspect.getclosurevars(check).nonlocals
    if kind == "integer":
        lo, hi = env["lo"], env["hi"]
        return st.sampled_from((lo, hi)) | st.integers(lo, hi)
    if kind == "number":
        lo, hi = env["lo"], env["hi"]
        return (st.floats(lo, hi, allow_nan=False, allow_infinity=False)
                | st.integers(math.ceil(lo), math.floor(hi)))
    if kind == "one_of_str":
        return st.sampled_from(env["choices"])
    if kind == "short_str":
        return _short_strs(env["max_len"])
    if kind == "list_of":
        return st.lists(value_strategy(env["item"], limits), max_size=min(env["max_items"], 4))
    if kind == "obj":
        required: Mapping[str, Validator] = env["required"]
        optional: Mapping[str, Validator] = env["optional"] or {}
        return st.fixed_dictionaries(
            {k: value_strategy(v, limits) for k, v in required.items()},
            optional={k: value_strategy(v, limits) | st.none() for k, v in optional.items()},
        )
    raise LookupError(f"tests/helpers/fuzz.py has no strategy for the validator {check!r}")


@st.composite
def _screen_frame(draw: st.DrawFn) -> tuple[Header, bytes]:
    """``frame`` fields (seq, w, h, key, rects) and a payload that agree with each other."""
    w = draw(st.sampled_from((1, schema.MAX_DIM)) | st.integers(1, schema.MAX_DIM))
    h = draw(st.sampled_from((1, schema.MAX_DIM)) | st.integers(1, schema.MAX_DIM))
    rects: list[dict[str, Any]] = []
    parts: list[bytes] = []
    for _ in range(draw(st.integers(1, 5))):
        x = draw(st.integers(0, w - 1))
        y = draw(st.integers(0, h - 1))
        rects.append({"x": x, "y": y, "w": draw(st.integers(1, w - x)),
                      "h": draw(st.integers(1, h - y)),
                      "enc": draw(st.sampled_from(schema.ENCODINGS)),
                      "len": draw(st.integers(0, 16))})
        r = rects[-1]
        if r["enc"] == "copy":  # its data: a source inside the screen, 2 x uint32 BE
            r["len"] = schema.COPY_LEN
            parts.append(struct.pack(">II", draw(st.integers(0, w - r["w"])),
                                     draw(st.integers(0, h - r["h"]))))
        else:
            parts.append(draw(st.binary(min_size=r["len"], max_size=r["len"])))
    payload = b"".join(parts)
    fields = {"seq": draw(st.integers(0, schema.MAX_INT)), "w": w, "h": h,
              "key": draw(st.booleans()), "rects": rects}
    return fields, payload


@st.composite
def message_of(draw: st.DrawFn, kind: str, spec: Spec, limits: Limits) -> tuple[Header, bytes]:
    """A valid message of one type: (header, payload)."""
    header: Header = {"type": kind}
    payload = b""
    required = dict(spec.required)
    if "rects" in required:
        fields, payload = draw(_screen_frame())
        header.update(fields)
        required = {k: v for k, v in required.items() if k not in fields}
    if kind == "cursor":  # w and h together, with the picture as payload, or neither
        for key, check in required.items():
            header[key] = draw(value_strategy(check, limits))
        if draw(st.booleans()):
            header["w"] = draw(value_strategy(spec.optional["w"], limits))
            header["h"] = draw(value_strategy(spec.optional["h"], limits))
            payload = draw(st.binary(min_size=1, max_size=64))
        return header, payload
    for key, check in required.items():
        header[key] = draw(value_strategy(check, limits))
    if kind == "chunk":  # 1 or more bytes
        payload = draw(st.binary(min_size=1, max_size=64))
    elif spec.payload and "rects" not in spec.required:
        payload = draw(st.binary(max_size=64))
    chosen = draw(st.sampled_from(spec.one_of)) if spec.one_of else None
    for key, check in spec.optional.items():
        present = key == chosen if key in spec.one_of else draw(st.booleans())
        if present:
            header[key] = draw(value_strategy(check, limits))
        elif draw(st.booleans()):
            header[key] = None  # a null optional field counts as absent
    known = {"type", *spec.required, *spec.optional}
    extra = draw(st.dictionaries(st.text(max_size=8).filter(lambda k: k not in known),
                                 json_values, max_size=2))
    header.update(extra)  # unknown fields are ignored
    return header, payload


def valid_message(table: Mapping[str, Spec], limits: Limits,
                  kinds: tuple[str, ...] | None = None) -> st.SearchStrategy[tuple[Header, bytes]]:
    names = sorted(kinds if kinds is not None else table)
    return st.sampled_from(names).flatmap(lambda k: message_of(k, table[k], limits))


def expected_keys(header: Header, spec: Spec) -> set[str]:
    """The fields a parsed valid header keeps: known ones that are not null."""
    return {k for k in (*spec.required, *spec.optional) if header.get(k) is not None}


# -- wrong frames ----------------------------------------------------------------------------


def _frame_bytes(raw_header: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">II", 4 + len(raw_header) + len(payload), len(raw_header)) + raw_header \
        + payload


def _set_path(value: Any, path: list[Any], new: Any) -> None:
    for step in path[:-1]:
        value = value[step]
    value[path[-1]] = new


def _paths(value: Any, prefix: list[Any]) -> list[list[Any]]:
    out: list[list[Any]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            out.append([*prefix, k])
            out.extend(_paths(v, [*prefix, k]))
    elif isinstance(value, list):
        for i, v in enumerate(value[:3]):
            out.append([*prefix, i])
            out.extend(_paths(v, [*prefix, i]))
    return out


@st.composite
def mutated_header(draw: st.DrawFn, table: Mapping[str, Spec], limits: Limits,
                   other: Mapping[str, Spec]) -> tuple[Header, bytes]:
    header, payload = draw(valid_message(table, limits))
    header = json.loads(json.dumps(header))  # a deep copy
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(("drop", "retype", "nested", "type", "extra", "payload")))
        keys = sorted(header)
        if op == "drop" and keys:
            del header[draw(st.sampled_from(keys))]
        elif op == "retype" and keys:
            header[draw(st.sampled_from(keys))] = draw(nasty_values)
        elif op == "nested":
            paths = _paths(header, [])
            if paths:
                _set_path(header, draw(st.sampled_from(paths)), draw(nasty_values))
        elif op == "type":
            header["type"] = draw(st.sampled_from(sorted(other)) | nasty_values)
        elif op == "extra":
            header[draw(st.text(max_size=6))] = draw(nasty_values)
        else:
            payload = draw(st.binary(max_size=32))
    return header, payload


RAW_HEADERS = (
    b"", b"{", b"}", b"null", b"[]", b"[1]", b'"hello"', b"1", b"true",
    b'{"type":"hello","v":NaN}', b'{"type":"hello","v":Infinity,"user":"a"}',
    b'{"type":"hello","v":-Infinity}', b'{"type":"hello","v":1e999,"user":"a"}',
    b'{"type":"hello","v":1' + b"0" * 5000 + b',"user":"a"}',  # over int()'s digit limit
    b'{"type":"hello","v":1,"user":"a","user":"b"}',  # duplicate keys: the last wins
    b'{"type":"hello","type":"say","v":1}',
    b'\xef\xbb\xbf{"type":"ping"}',  # UTF-8 BOM
    b'{"type":"ping"} trailing',
    b'{"type":"ping"}{"type":"ping"}',
    b'{"type":"hello","v":1,"user":"\xc0\x80"}',  # overlong UTF-8
    b'{"type":"hello","v":1,"user":"\xed\xa0\x80"}',  # an encoded surrogate (CESU)
    b'{"type":"hello","v":1,"user":"\\ud800"}',  # an escaped lone surrogate: valid JSON
    b'{"type":"say","room":"general","text":"\\udfff"}',
    b'{"type":"ping","n":-0}', b'{"type":"ping","n":1.0}', b'{"type":"ping","n":1E2}',
    b'{"type":"\\u0000"}', b'{"type":"hello\\u0000"}',
    '{"type":"ping"}'.encode("utf-16"),
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 5000 + b"1" + b"}" * 5000,
)


@st.composite
def bad_frame(draw: st.DrawFn, table: Mapping[str, Spec], limits: Limits,
              other: Mapping[str, Spec]) -> bytes:
    """The bytes of (usually) one broken frame; may leave the stream cut in mid-frame."""
    kind = draw(st.sampled_from(("mutated", "raw", "lengths", "bytes", "truncated", "flipped")))
    if kind == "mutated":
        header, payload = draw(mutated_header(table, limits, other))
        text = json.dumps(header, ensure_ascii=draw(st.booleans()), allow_nan=True)
        return _frame_bytes(text.encode("utf-8", "surrogatepass"), payload)
    if kind == "raw":
        return _frame_bytes(draw(st.sampled_from(RAW_HEADERS)), draw(st.binary(max_size=8)))
    if kind == "lengths":
        body = draw(st.sampled_from((0, 1, 3, 4, 5, limits.max_frame, limits.max_frame + 1,
                                     2**31, 2**32 - 1)) | st.integers(0, 2**32 - 1))
        hlen = draw(st.sampled_from((0, 1, limits.max_header, limits.max_header + 1,
                                     2**32 - 1)) | st.integers(0, 2**32 - 1))
        return struct.pack(">II", body, hlen) + draw(st.binary(max_size=32))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    header, payload = draw(valid_message(table, limits))
    wire = encode_frame(header, payload)
    if kind == "truncated":
        return wire[: draw(st.integers(0, len(wire) - 1))]
    flips = draw(st.lists(st.integers(0, len(wire) * 8 - 1), min_size=1, max_size=4))
    data = bytearray(wire)
    for bit in flips:
        data[bit // 8] ^= 1 << (bit % 8)
    return bytes(data)


def chunks_of(data: bytes) -> st.SearchStrategy[list[bytes]]:
    """The same bytes, cut into random pieces."""
    def cut(points: list[int]) -> list[bytes]:
        edges = [0, *sorted(set(points)), len(data)]
        return [data[a:b] for a, b in itertools.pairwise(edges)]

    return st.lists(st.integers(0, len(data)), max_size=8).map(cut)

