"""What each message may say: the schema table is the spec (see docs/protocol.md).

Every frame header is a JSON object with a ``type``. :func:`parse_message` checks the type
against the table for the direction it travels in, and every field against its validator:
types, ranges, lengths, no control characters in names. Unknown fields are ignored, so that
newer peers can add optional fields; missing required fields are errors.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chatscreen.errors import ErrorCode, RemoteProtocolError, RequestError
from chatscreen.protocol.framing import Frame, Limits

Validator = Callable[[Any, Limits], Any]

MAX_NAME = 32
MAX_INT = (1 << 53) - 1  # exact in JavaScript too
MAX_RECTS = 1024  # rects in one frame: what the relay does with one frame holds its event loop
#                  (a few ms at this many); a sharer with more splits its update in frames
MAX_DIM = 16384
#: Fields the parser adds to a message (never read from the wire): a frame's tile count.
DERIVED = frozenset({"tiles"})


def _bad(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(ErrorCode.BAD_MESSAGE, message)


_NAME_FORBIDDEN = re.compile(r"[\s@#:,/\\]")
# Unicode's categories Cc (control characters) and Cs (lone surrogates), exactly: one regex
# search in C instead of a category lookup per character (a 4096-character text: ~1 ms)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_TEXT_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")  # \t, \n allowed


# Characters that show as nothing, or as a blank, and are letters or marks by category (all
# of categories C and Z are refused on their own): those of Unicode's
# Default_Ignorable_Code_Point outside C and Z (the combining grapheme joiner, the Hangul
# fillers, the Khmer inherent vowels, the variation selectors), and the symbols drawn as
# blanks (U+2800 BRAILLE PATTERN BLANK, U+1D159 MUSICAL SYMBOL NULL NOTEHEAD).
# "boss\u3164" would look exactly like "boss".
_INVISIBLE = re.compile("[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u2800\u3164"
                        "\ufe00-\ufe0f\uffa0\U0001d159\U000e0100-\U000e01ef]")


def name_problem(value: str) -> str | None:
    """Why ``value`` (NFKC already) is not a valid name, or None if it is."""
    if not 1 <= len(value) <= MAX_NAME:
        return f"use 1-{MAX_NAME} characters"
    if _NAME_FORBIDDEN.search(value):
        return "no spaces and none of @#:,/\\"
    bad = _INVISIBLE.search(value) or next(
        (ch for ch in value if unicodedata.category(ch)[0] in "CZ"), None)
    if bad is not None:
        ch = bad if isinstance(bad, str) else bad.group()
        return (f"U+{ord(ch):04X} ({unicodedata.name(ch, 'unnamed')}) is invisible or a "
                "control character")
    if unicodedata.category(value[0])[0] == "M":
        return "a name cannot start with a combining mark"
    return None


def is_valid_name(value: str) -> bool:
    return name_problem(value) is None


def name(value: Any, _: Limits) -> str:
    """User and room names: 1-32 characters, no spaces, controls or ``@#:,/\\``.

    Names are normalised to NFKC first, so that look-alikes made of compatibility characters
    (full-width letters, ligatures, superscripts) become the name they look like: "ａｌｉｃｅ"
    is "alice", and so is taken when alice is connected. Control, format (bidirectional
    overrides, zero-width joiners), fillers and other invisible characters are refused
    (see _INVISIBLE), and so is a combining mark at the start. Look-alikes that NFKC keeps
    apart ("bоss" with a Cyrillic о) are the server's to refuse: see protocol.lookalike."""
    if not isinstance(value, str):
        raise _bad("name must be a string")
    normal: str = unicodedata.normalize("NFKC", value)
    problem = name_problem(normal)
    if problem is not None:
        raise RemoteProtocolError(
            ErrorCode.INVALID_NAME,
            f"invalid name {normal[:40]!r}: {problem} (a name is 1-{MAX_NAME} letters, digits "
            "or punctuation other than @#:,/\\, with no spaces or invisible characters)",
        )
    return normal


def text(value: Any, limits: Limits) -> str:
    """Chat text: 1..max_text characters, no control characters except newline and tab."""
    if not isinstance(value, str):
        raise _bad("text must be a string")
    if not value.strip():
        raise _bad("text is empty")
    if len(value) > limits.max_text:
        raise _bad(f"message too long: {len(value)} characters, at most {limits.max_text}")
    found = _TEXT_CONTROL.search(value)
    if found is not None:
        raise _bad(f"text contains control character U+{ord(found.group()):04X}")
    return value


def short_str(max_len: int) -> Validator:
    def check(value: Any, _: Limits) -> str:
        if not isinstance(value, str) or len(value) > max_len:
            raise _bad(f"expected a string of at most {max_len} characters")
        if _CONTROL.search(value):
            raise _bad("string contains control characters or lone surrogates")
        return value

    return check


def integer(lo: int = 0, hi: int = MAX_INT) -> Validator:
    def check(value: Any, _: Limits) -> int:
        # bool is a subclass of int in Python, not in the protocol.
        if type(value) is not int or not lo <= value <= hi:
            raise _bad(f"expected an integer from {lo} to {hi}")
        return value

    return check


def number(lo: float, hi: float) -> Validator:
    def check(value: Any, _: Limits) -> float:
        if type(value) not in (int, float) or not lo <= value <= hi:
            raise _bad(f"expected a number from {lo} to {hi}")
        return float(value)

    return check


def boolean(value: Any, _: Limits) -> bool:
    if type(value) is not bool:
        raise _bad("expected true or false")
    return value


ENCODINGS = ("jpeg", "png", "raw", "palette", "zlib", "webp", "h264", "copy", "packed")
COPY_LEN = 8  # a copy rect's data: the source's x and y, uint32 big-endian each
WORK_TILE = 64  # the grid by which a frame's work is counted (the relay's tiles)


def rect_tiles(x: int, y: int, w: int, h: int, enc: str) -> int:
    """The 64x64 tiles a rect touches, twice for a ``copy`` (it reads as many): what storing
    it takes the relay."""
    t = WORK_TILE
    n = ((x + w - 1) // t - x // t + 1) * ((y + h - 1) // t - y // t + 1)
    return 2 * n if enc == "copy" else n


def max_frame_tiles(w: int, h: int) -> int:
    """The most tiles (:func:`rect_tiles`, summed) a sharer's frame of a ``w`` x ``h`` screen
    may touch: the screen twice over (a lossy picture and its low layer, or a scroll and
    what it uncovers), and one more for each rect. A larger update goes as several frames."""
    return 2 * -(-w // WORK_TILE) * -(-h // WORK_TILE) + MAX_RECTS


def encoding(value: Any, _: Limits) -> str:
    if value not in ENCODINGS:
        raise _bad(f"unknown encoding {value!r}; known: {', '.join(ENCODINGS)}")
    return str(value)


@dataclass(frozen=True, slots=True)
class Rect:
    x: int
    y: int
    w: int
    h: int
    enc: str
    len: int
    layer: str | None = None  # simulcast: "full" or "low" (only that layer); None: both


LAYERS = ("full", "low")  # a rect's optional "layer"
MIN_LOW_RATE, MAX_LOW_RATE = 16_000, 100_000_000  # low_layer "rate", bytes/s


_RECT_FIELDS: dict[str, Validator] = {
    "x": integer(0, MAX_DIM),
    "y": integer(0, MAX_DIM),
    "w": integer(1, MAX_DIM),
    "h": integer(1, MAX_DIM),
    "enc": encoding,
    "len": integer(0, MAX_INT),
}


def rects(value: Any, limits: Limits) -> tuple[Rect, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_RECTS:
        raise _bad(f"rects must be a list of 1 to {MAX_RECTS} rectangles")
    out = []
    for item in value:
        # the usual case checked inline (a frame may hold 4096 rects); anything else goes
        # through the field validators, which say what is wrong
        if type(item) is dict:
            x, y, w, h = item.get("x"), item.get("y"), item.get("w"), item.get("h")
            enc, n, layer = item.get("enc"), item.get("len"), item.get("layer")
            if (type(x) is int and type(y) is int and type(w) is int and type(h) is int
                    and type(n) is int and 0 <= x <= MAX_DIM and 0 <= y <= MAX_DIM
                    and 1 <= w <= MAX_DIM and 1 <= h <= MAX_DIM and 0 <= n <= MAX_INT
                    and type(enc) is str and enc in _ENCODING_SET
                    and (layer is None or layer in LAYERS)):
                out.append(Rect(x, y, w, h, enc, n, layer))
                continue
        out.append(_rect(item, limits))
    return tuple(out)


_ENCODING_SET = frozenset(ENCODINGS)


def _rect(item: Any, limits: Limits) -> Rect:
    if not isinstance(item, dict):
        raise _bad("each rect must be an object")
    layer = item.get("layer")
    if layer is not None and layer not in LAYERS:
        raise _bad(f"layer: expected one of {', '.join(LAYERS)}")
    return Rect(**{k: _field(item, k, v, limits) for k, v in _RECT_FIELDS.items()},
                layer=layer)


def _field(obj: Mapping[str, Any], key: str, check: Validator, limits: Limits) -> Any:
    if key not in obj:
        raise _bad(f"missing field {key!r}")
    try:
        return check(obj[key], limits)
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(exc.code, f"{key}: {exc.message}") from None


@dataclass(frozen=True, slots=True)
class Spec:
    required: dict[str, Validator] = field(default_factory=dict)
    optional: dict[str, Validator] = field(default_factory=dict)
    payload: bool = False  # may it carry a binary payload?
    one_of: tuple[str, ...] = ()  # exactly one of these optional fields must be present


def one_of_str(choices: tuple[str, ...]) -> Validator:
    def check(value: Any, _: Limits) -> str:
        if value not in choices:
            raise _bad(f"expected one of {', '.join(choices)}")
        return str(value)

    return check


NAME: Validator = name
PASSWORD = short_str(1024)
MIN_PASSWORD = 8  # characters of a password registered (`register`, `chatscreen admin`)
MODERATION_ACTIONS = ("kick", "mute", "unmute", "ban", "unban", "role")
TEXT: Validator = text
CID = short_str(64)
RID = short_str(64)
ID = integer(0)
LIMIT = integer(1, 1000)

def list_of(item: Validator, max_items: int = 100_000) -> Validator:
    def check(value: Any, limits: Limits) -> list[Any]:
        if not isinstance(value, list) or len(value) > max_items:
            raise _bad(f"expected a list of at most {max_items} items")
        return [item(v, limits) for v in value]

    return check


def obj(required: dict[str, Validator], optional: dict[str, Validator] | None = None) -> Validator:
    def check(value: Any, limits: Limits) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _bad("expected an object")
        out = {k: _field(value, k, v, limits) for k, v in required.items()}
        for k, v in (optional or {}).items():
            if value.get(k) is not None:
                out[k] = _field(value, k, v, limits)
        return out

    return check


# A screen update: the sharer sends it, the server relays it with the share id added.
_FRAME: dict[str, Validator] = {
    "seq": ID,
    "w": integer(1, MAX_DIM),
    "h": integer(1, MAX_DIM),
    "key": boolean,
    "rects": rects,
}

# The sharer's mouse pointer: where its picture's top left is; with w, h and a payload (the
# picture, zlib-compressed RGBA) when the picture changed.
MAX_CURSOR_SIDE = 256
_CURSOR: tuple[dict[str, Validator], dict[str, Validator]] = (
    {"x": integer(-MAX_DIM, MAX_DIM), "y": integer(-MAX_DIM, MAX_DIM)},
    {"w": integer(1, MAX_CURSOR_SIDE), "h": integer(1, MAX_CURSOR_SIDE)},
)
MAX_CURSOR_DATA = 4 * MAX_CURSOR_SIDE * MAX_CURSOR_SIDE + 1024  # zlib of the largest picture

# Files (docs/protocol.md, "Files"): names are display text only, ids are random tokens.
MAX_FILE_NAME = 255
MAX_CHUNK = 1 << 20  # a chunk's payload at most (the server may announce less)
_TOKEN_ID = re.compile(r"[A-Za-z0-9_-]{16,32}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def file_name(value: Any, _: Limits) -> str:
    """A file's name: display text of 1-255 characters, no control characters (NUL
    included). Never a path: ``../x``, ``/etc/passwd`` or ``CON`` are the text they are."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_FILE_NAME:
        raise _bad(f"a file name is a string of 1-{MAX_FILE_NAME} characters")
    found = _CONTROL.search(value)
    if found is not None:
        raise _bad(f"a file name cannot hold control character U+{ord(found.group()):04X}")
    if not value.strip():
        raise _bad("a file name cannot be blank")
    return value


def token_id(value: Any, _: Limits) -> str:
    """A file's or an upload's id: 16-32 characters of ``A-Za-z0-9_-``."""
    if not isinstance(value, str) or _TOKEN_ID.fullmatch(value) is None:
        raise _bad("expected an id of 16-32 characters A-Z a-z 0-9 _ -")
    return value


def sha256_hex(value: Any, _: Limits) -> str:
    if not isinstance(value, str) or _SHA256.fullmatch(value) is None:
        raise _bad("expected a SHA-256 as 64 lowercase hex digits")
    return value


FILE_NAME: Validator = file_name
FILE_ID: Validator = token_id
SHA256: Validator = sha256_hex
MIME = short_str(100)

# Sent by clients to the server. The handshake (``hello``) is the same on both ports.
CLIENT_MESSAGES: dict[str, Spec] = {
    "hello": Spec(
        {"v": integer(1, 1000)},
        {"user": NAME, "token": short_str(128), "resume": short_str(128), "client": short_str(64),
         "password": PASSWORD, "server_password": PASSWORD,
         "bin": integer(0, 1000),  # screen port: the binary form it speaks (protocol.binform)
         "deflate": integer(0, 1000)},  # ... and deflated frames (protocol.deflate)
    ),
    "ping": Spec(optional={"n": ID}),
    "pong": Spec(optional={"n": ID}),
    # chat port; "rid" (request id) is echoed in the answer or the error
    "rooms": Spec(optional={"rid": RID, "after": NAME, "limit": LIMIT}),
    "create": Spec({"room": NAME}, {"rid": RID, "private": boolean}),
    "invite": Spec({"room": NAME, "user": NAME}, {"rid": RID}),
    "join": Spec({"room": NAME}, {"after": ID, "rid": RID}),
    "leave": Spec({"room": NAME}, {"rid": RID}),
    "who": Spec({"room": NAME}, {"rid": RID}),
    "say": Spec({"room": NAME, "text": TEXT}, {"cid": CID}),
    "pm": Spec({"to": NAME, "text": TEXT}, {"cid": CID}),
    "typing": Spec({"active": boolean}, {"room": NAME, "to": NAME}, one_of=("room", "to")),
    "history": Spec(
        optional={"room": NAME, "peer": NAME, "before": ID, "after": ID, "limit": LIMIT,
                  "rid": RID},
        one_of=("room", "peer"),
    ),
    "register": Spec({"password": PASSWORD}, {"rid": RID}),
    # read markers: the last message id read in a room or a private conversation
    "read": Spec({"id": ID}, {"room": NAME, "peer": NAME, "rid": RID}, one_of=("room", "peer")),
    "decline": Spec({"room": NAME}, {"rid": RID}),
    # a message out of history: its author, a moderator or an admin (see "Files")
    "delete": Spec({"id": ID}, {"rid": RID}),
    "moderate": Spec(
        {"action": one_of_str(MODERATION_ACTIONS)},
        {"target": NAME, "address": short_str(64), "duration": integer(1, 10 * 365 * 86400),
         "reason": short_str(200), "role": short_str(16), "rid": RID},
        one_of=("target", "address"),
    ),
    # screen port
    # who may watch: only the users in "viewers", or only the members of "room"; else anyone
    "share": Spec({"w": integer(1, MAX_DIM), "h": integer(1, MAX_DIM)},
                  {"viewers": list_of(NAME, 1000), "room": NAME, "layers": integer(1, 2)}),
    "unshare": Spec(),
    "frame": Spec(_FRAME, payload=True),
    "cursor": Spec(*_CURSOR, payload=True),
    "watch": Spec({"share": ID}),
    "unwatch": Spec({"share": ID}),
    # files (any screen connection; the reference client opens one for transfers)
    "upload": Spec({"name": FILE_NAME, "size": integer(0), "sha256": SHA256},
                   {"room": NAME, "to": NAME, "mime": MIME, "rid": RID}, one_of=("room", "to")),
    "chunk": Spec({"upload": FILE_ID, "offset": integer(0)}, payload=True),
    "cancel": Spec({"upload": FILE_ID}),
    "download": Spec({"file": FILE_ID}, {"offset": integer(0), "thumb": boolean, "rid": RID}),
    "file_info": Spec({"file": FILE_ID}, {"rid": RID}),
}

# Sent by the server to clients; clients validate them too (never trust the network).
_MESSAGE_OBJ = {
    "id": ID,
    "user": NAME,
    "ts": short_str(40),
    "text": TEXT,
}
# a file as the server describes it (in "uploaded" and in a chat message of kind "file")
FILE_INFO = obj(
    {"id": FILE_ID, "name": FILE_NAME, "size": integer(0), "mime": MIME, "sha256": SHA256},
    {"w": integer(1), "h": integer(1), "thumb": obj({"w": integer(1), "h": integer(1)}),
     "expired": boolean},
)
_MESSAGE_OPT = {"room": NAME, "to": NAME, "cid": CID, "kind": short_str(16), "file": FILE_INFO}
NAMES = list_of(NAME)
SERVER_MESSAGES: dict[str, Spec] = {
    "welcome": Spec(
        {"v": integer(1, 1000), "user": NAME, "token": short_str(128), "room": NAME},
        {
            "server": short_str(64),
            "heartbeat": number(0.1, 3600),
            "limits": obj({}, {"max_frame": ID, "max_text": ID, "history": ID,
                               "max_file_size": ID}),
            "role": short_str(16),
            # an account's rooms, its read markers, the private rooms it is invited to
            "rooms": list_of(NAME, 1000),
            "read": list_of(obj({"id": ID}, {"room": NAME, "peer": NAME}), 10_000),
            "invitations": list_of(NAME, 1000),
            "bin": integer(1, 1000),  # the binary form is agreed (protocol.binform)
            "deflate": integer(1, 1000),  # deflated frames are agreed (protocol.deflate)
        },
    ),
    "error": Spec(
        {"code": short_str(64), "message": short_str(1000)},
        {"fatal": boolean, "re": short_str(32), "cid": CID, "rid": RID,
         # files: the upload or file it is about; bad_offset: where the stored bytes end
         "upload": FILE_ID, "file": FILE_ID, "offset": integer(0)},
    ),
    "ping": Spec(optional={"n": ID}),
    "pong": Spec(optional={"n": ID}),
    "rooms": Spec({"rooms": list_of(obj({"name": NAME, "users": ID}))},
                  {"rid": RID, "more": boolean}),
    "joined": Spec({"room": NAME, "users": NAMES}, {"rid": RID}),
    "left": Spec({"room": NAME}, {"rid": RID}),
    "users": Spec({"room": NAME, "users": NAMES}, {"rid": RID}),
    "presence": Spec({"room": NAME, "user": NAME, "event": short_str(16)}),
    "message": Spec(_MESSAGE_OBJ, _MESSAGE_OPT),
    "history": Spec(
        {"messages": list_of(obj(_MESSAGE_OBJ, _MESSAGE_OPT)), "more": boolean},
        {"room": NAME, "peer": NAME, "rid": RID},
    ),
    "typing": Spec({"user": NAME, "active": boolean}, {"room": NAME, "to": NAME}),
    "shares": Spec(
        {"shares": list_of(obj({"id": ID, "user": NAME, "w": ID, "h": ID}, {"room": NAME}),
                           10_000)}
    ),
    "registered": Spec({"user": NAME, "role": short_str(16)}, {"rid": RID}),
    "moderated": Spec({"action": short_str(16)}, {"rid": RID}),
    "invited": Spec({"room": NAME, "user": NAME}, {"rid": RID, "by": NAME}),
    "read": Spec({"id": ID}, {"room": NAME, "peer": NAME, "rid": RID}),
    "declined": Spec({"room": NAME}, {"rid": RID}),
    "notice": Spec({"room": NAME, "text": short_str(1000)}),
    "shared": Spec({"share": ID}),
    "viewers": Spec({"share": ID, "users": NAMES}),
    "unshared": Spec({"share": ID}),
    "need_key": Spec(),
    "need_idr": Spec(),
    # simulcast: start (with the byte rate its lossy parts should keep to) or stop the low layer
    "low_layer": Spec({"on": boolean}, {"rate": integer(MIN_LOW_RATE, MAX_LOW_RATE)}),
    "frame": Spec({"share": ID, **_FRAME}, payload=True),
    "cursor": Spec({"share": ID, **_CURSOR[0]}, _CURSOR[1], payload=True),
    # files
    "upload_ready": Spec({"upload": FILE_ID, "offset": integer(0), "chunk": integer(1, MAX_CHUNK),
                          "window": integer(1)}, {"rid": RID}),
    "upload_progress": Spec({"upload": FILE_ID, "offset": integer(0)}),
    "uploaded": Spec({"upload": FILE_ID, "file": FILE_INFO, "id": ID}, {"rid": RID}),
    "file_data": Spec({"file": FILE_ID, "offset": integer(0)}, {"rid": RID}, payload=True),
    "downloaded": Spec({"file": FILE_ID, "size": integer(0), "sha256": SHA256}, {"rid": RID}),
    "file_info": Spec({"file": FILE_INFO}, {"rid": RID}),
    "deleted": Spec({"id": ID}, {"room": NAME, "to": NAME, "rid": RID}),
}


@dataclass(frozen=True, slots=True)
class Message:
    """A validated message: its type, its fields and its binary payload."""

    type: str
    fields: dict[str, Any]
    payload: bytes = b""
    # set when the receiver refuses this request (fields then hold only its rid/cid)
    refused: RequestError | None = None

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


REQUEST_IDS = ("rid", "cid")  # the fields that say which request an answer is for


def parse_message(frame: Frame, table: Mapping[str, Spec], limits: Limits) -> Message:
    """Validate a frame against a message table. A header without a known type raises
    RemoteProtocolError (the stream makes no sense); wrong fields in a message of a known
    type raise RequestError, which names the request (see Connection.receive_data)."""
    header = frame.header
    kind = header.get("type")
    if not isinstance(kind, str):
        raise _bad("frame header has no type")
    spec = table.get(kind)
    if spec is None:
        raise RemoteProtocolError(ErrorCode.UNEXPECTED, f"unknown message type {kind[:40]!r}")
    try:
        return _validate(kind, spec, frame, limits)
    except RemoteProtocolError as exc:
        raise RequestError(exc.code, exc.message, kind, _request_ids(spec, header, limits)
                           ) from None


def _request_ids(spec: Spec, header: Mapping[str, Any], limits: Limits) -> dict[str, str]:
    """The rid/cid of a refused request. One that is itself invalid cannot be echoed: the
    error could not be attributed, so it is a plain (fatal) RemoteProtocolError."""
    ids: dict[str, str] = {}
    for key in REQUEST_IDS:
        check = spec.optional.get(key)
        if check is not None and header.get(key) is not None:
            ids[key] = _field(header, key, check, limits)
    return ids


def _validate(kind: str, spec: Spec, frame: Frame, limits: Limits) -> Message:
    header = frame.header
    fields: dict[str, Any] = {}
    for key, check in spec.required.items():
        fields[key] = _field(header, key, check, limits)
    for key, check in spec.optional.items():
        if key in header and header[key] is not None:
            fields[key] = _field(header, key, check, limits)
    if spec.one_of and sum(k in fields for k in spec.one_of) != 1:
        raise _bad(f"{kind} needs exactly one of {', '.join(spec.one_of)}")
    if frame.payload and not spec.payload:
        raise _bad(f"{kind} does not take a payload")
    if spec.payload and "rects" in fields:
        total = sum(r.len for r in fields["rects"])
        if total != len(frame.payload):
            raise _bad(f"rects announce {total} bytes but the payload has {len(frame.payload)}")
        tiles, fw, fh = 0, fields["w"], fields["h"]
        for r in fields["rects"]:
            if r.x + r.w > fw or r.y + r.h > fh:
                raise _bad(f"rect {r.x},{r.y} {r.w}x{r.h} lies outside {fw}x{fh}")
            tiles += rect_tiles(r.x, r.y, r.w, r.h, r.enc)
        fields["tiles"] = tiles  # DERIVED: the work it takes (see rect_tiles)
        check_copies(fields, frame.payload)
    if kind == "cursor":
        check_cursor(fields, frame.payload)
    elif kind == "chunk" and not frame.payload:
        raise _bad("a chunk carries 1 or more bytes")
    return Message(kind, fields, frame.payload)


def check_copies(fields: Mapping[str, Any], payload: bytes) -> None:
    """A ``copy`` rect: 8 bytes of data, a source inside the screen."""
    offset = 0
    for r in fields["rects"]:
        if r.enc == "copy":
            if r.len != COPY_LEN:
                raise _bad(f"a copy rect has {COPY_LEN} bytes of data, not {r.len}")
            sx = int.from_bytes(payload[offset : offset + 4], "big")
            sy = int.from_bytes(payload[offset + 4 : offset + 8], "big")
            if sx + r.w > fields["w"] or sy + r.h > fields["h"]:
                raise _bad(f"copy source {sx},{sy} {r.w}x{r.h} lies outside "
                           f"{fields['w']}x{fields['h']}")
        offset += r.len


def check_cursor(fields: Mapping[str, Any], payload: bytes) -> None:
    """A ``cursor``: ``w`` and ``h`` come together, with a payload (the picture), or neither
    comes and there is no payload (the same picture, moved)."""
    if ("w" in fields) != ("h" in fields):
        raise _bad("a cursor has both w and h, or neither")
    if ("w" in fields) != bool(payload):
        raise _bad("a cursor carries its picture exactly when it has w and h")
    if len(payload) > MAX_CURSOR_DATA:
        raise _bad(f"a cursor picture takes at most {MAX_CURSOR_DATA} bytes")
