"""Message validation and the handshake state machine (pure, no I/O)."""

from __future__ import annotations

import sys
import unicodedata
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatscreen.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from chatscreen.protocol import PROTOCOL_VERSION, Connection, Frame, Limits, Role, State
from chatscreen.protocol.schema import (
    CLIENT_MESSAGES,
    SERVER_MESSAGES,
    parse_message,
    short_str,
    text,
)

LIMITS = Limits(max_text=100)


def parse(header: dict[str, Any], payload: bytes = b"", table: Any = CLIENT_MESSAGES) -> Any:
    return parse_message(Frame(header, payload), table, LIMITS)


def test_valid_say() -> None:
    msg = parse({"type": "say", "room": "general", "text": "hi\nthere", "cid": "a-1", "new": 1})
    assert msg.type == "say"
    assert msg.fields == {"room": "general", "text": "hi\nthere", "cid": "a-1"}


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ({"room": "general", "text": "x"}, ErrorCode.BAD_MESSAGE),  # no type
        ({"type": "explode"}, ErrorCode.UNEXPECTED),
        ({"type": "say", "room": "general"}, ErrorCode.BAD_MESSAGE),  # missing text
        ({"type": "say", "room": "general", "text": ""}, ErrorCode.BAD_MESSAGE),
        ({"type": "say", "room": "general", "text": "   "}, ErrorCode.BAD_MESSAGE),
        ({"type": "say", "room": "general", "text": "x" * 101}, ErrorCode.BAD_MESSAGE),
        ({"type": "say", "room": "general", "text": "bell\x07"}, ErrorCode.BAD_MESSAGE),
        ({"type": "say", "room": "general", "text": 5}, ErrorCode.BAD_MESSAGE),
        ({"type": "say", "room": "gen eral", "text": "x"}, ErrorCode.INVALID_NAME),
        ({"type": "say", "room": "a" * 33, "text": "x"}, ErrorCode.INVALID_NAME),
        ({"type": "hello", "v": 1, "user": "al\u202eice"}, ErrorCode.INVALID_NAME),  # bidi
        ({"type": "hello", "v": 1, "user": "al\x00ice"}, ErrorCode.INVALID_NAME),
        ({"type": "hello", "v": 1, "user": "@admin"}, ErrorCode.INVALID_NAME),
        ({"type": "hello", "v": True, "user": "bob"}, ErrorCode.BAD_MESSAGE),  # bool != int
        ({"type": "join", "room": "x", "after": -1}, ErrorCode.BAD_MESSAGE),
        ({"type": "join", "room": "x", "after": 2**60}, ErrorCode.BAD_MESSAGE),
        ({"type": "typing", "active": True}, ErrorCode.BAD_MESSAGE),  # neither room nor to
        ({"type": "typing", "active": True, "room": "a", "to": "b"}, ErrorCode.BAD_MESSAGE),
        ({"type": "history", "room": "a", "limit": 0}, ErrorCode.BAD_MESSAGE),
        ({"type": "share", "w": 0, "h": 10}, ErrorCode.BAD_MESSAGE),
    ],
)
def test_invalid_messages(header: dict[str, Any], code: ErrorCode) -> None:
    with pytest.raises(RemoteProtocolError) as err:
        parse(header)
    assert err.value.code is code


def frame_header(**over: Any) -> dict[str, Any]:
    header = {"type": "frame", "seq": 1, "w": 100, "h": 50, "key": True,
              "rects": [{"x": 0, "y": 0, "w": 100, "h": 50, "enc": "jpeg", "len": 3}]}
    header.update(over)
    return header


def test_text_refuses_exactly_control_characters_and_lone_surrogates() -> None:
    """Over every code point: a text is refused for exactly the characters of Unicode's
    categories Cc and Cs (tab and newline excepted), wherever they are in it."""
    short = short_str(10)
    for code in range(sys.maxunicode + 1):
        ch = chr(code)
        control = unicodedata.category(ch) in ("Cc", "Cs")
        for checker, value, allowed in ((text, f"ab{ch}c", not control or ch in "\n\t"),
                                        (short, ch, not control)):
            try:
                checker(value, LIMITS)
                ok = True
            except RemoteProtocolError as exc:
                assert exc.code == ErrorCode.BAD_MESSAGE
                assert checker is short or f"U+{code:04X}" in exc.message
                ok = False
            assert ok == allowed, (hex(code), checker)


def test_frame_rects_must_match_payload_and_screen() -> None:
    assert parse(frame_header(), b"abc").payload == b"abc"
    with pytest.raises(RemoteProtocolError, match="payload"):
        parse(frame_header(), b"abcd")
    with pytest.raises(RemoteProtocolError, match="outside"):
        parse(frame_header(w=99), b"abc")
    bad_enc = frame_header(rects=[{"x": 0, "y": 0, "w": 1, "h": 1, "enc": "gif", "len": 3}])
    with pytest.raises(RemoteProtocolError, match="encoding"):
        parse(bad_enc, b"abc")
    with pytest.raises(RemoteProtocolError, match="payload"):
        parse({"type": "ping"}, b"x")


def test_quality_layers_are_validated() -> None:
    rect = {"x": 0, "y": 0, "w": 100, "h": 50, "enc": "jpeg", "len": 3}
    for layer in ("full", "low", None):
        msg = parse(frame_header(rects=[{**rect, "layer": layer}]), b"abc")
        assert msg["rects"][0].layer == layer
    for bad in ("mid", 1, True, ""):
        with pytest.raises(RemoteProtocolError, match="layer"):
            parse(frame_header(rects=[{**rect, "layer": bad}]), b"abc")
    assert parse({"type": "share", "w": 10, "h": 10, "layers": 2})["layers"] == 2
    with pytest.raises(RemoteProtocolError, match="layers"):
        parse({"type": "share", "w": 10, "h": 10, "layers": 3})
    on = parse({"type": "low_layer", "on": True, "rate": 300_000}, table=SERVER_MESSAGES)
    assert on["on"] is True and on["rate"] == 300_000
    assert "rate" not in parse({"type": "low_layer", "on": False},
                               table=SERVER_MESSAGES).fields
    for bad_rate in (0, 15_999, 10**9, "fast", 1.5):
        with pytest.raises(RemoteProtocolError, match="rate"):
            parse({"type": "low_layer", "on": True, "rate": bad_rate}, table=SERVER_MESSAGES)


def test_server_messages_are_validated_too() -> None:
    ok = {"type": "message", "id": 3, "user": "bob", "ts": "2026-01-01T00:00:00.000Z",
          "text": "hi", "room": "general"}
    assert parse(ok, table=SERVER_MESSAGES)["id"] == 3
    with pytest.raises(RemoteProtocolError):
        parse({**ok, "id": "3"}, table=SERVER_MESSAGES)
    with pytest.raises(RemoteProtocolError):
        parse({"type": "joined", "room": "general", "users": ["ok", "not ok"]},
              table=SERVER_MESSAGES)


@given(st.dictionaries(st.sampled_from(["type", "room", "text", "v", "user", "w", "rects",
                                        "to", "active", "seq", "key", "after", "share"]),
                       st.none() | st.booleans() | st.integers() | st.text(max_size=40)
                       | st.sampled_from(sorted(CLIENT_MESSAGES)), max_size=8))
@settings(max_examples=500, deadline=None)
def test_any_header_is_either_valid_or_a_clean_error(header: dict[str, Any]) -> None:
    try:
        parse(header)
    except RemoteProtocolError as exc:
        assert exc.code in ErrorCode.__members__.values()


# -- the handshake ---------------------------------------------------------------------


def recv(conn: Connection, data: bytes) -> list[Any]:
    return list(conn.receive_data(data))


def test_handshake_server_side() -> None:
    server = Connection(Role.SERVER, LIMITS)
    client = Connection(Role.CLIENT, LIMITS)
    with pytest.raises(LocalProtocolError):
        client.send("say", room="general", text="too early")
    [hello] = recv(server, client.send("hello", v=PROTOCOL_VERSION, user="alice"))
    assert hello.type == "hello" and server.state is State.HELLO_RECEIVED
    with pytest.raises(LocalProtocolError):
        server.send("message")
    [welcome] = recv(client, server.accept(user="alice", token="t", room="general"))
    assert welcome.type == "welcome"
    assert (client.state, server.state) == (State.OPEN, State.OPEN)
    [say] = recv(server, client.send("say", room="general", text="hi"))
    assert say["text"] == "hi"


def test_first_message_must_be_hello() -> None:
    server = Connection(Role.SERVER, LIMITS)
    with pytest.raises(RemoteProtocolError) as err:
        recv(server, Connection(Role.CLIENT, LIMITS).send("hello", v=1, user="a")
                            .replace(b"hello", b"rooms"))
    assert err.value.code is ErrorCode.UNEXPECTED


def test_unsupported_version_and_double_hello() -> None:
    with pytest.raises(RemoteProtocolError) as err:
        recv(Connection(Role.SERVER, LIMITS),
            Connection(Role.CLIENT, LIMITS).send("hello", v=99, user="a"))
    assert err.value.code is ErrorCode.UNSUPPORTED_VERSION
    server = Connection(Role.SERVER, LIMITS)
    hello = Connection(Role.CLIENT, LIMITS).send("hello", v=1, user="a")
    recv(server, hello)
    server.accept(user="a", token="t", room="general")
    with pytest.raises(RemoteProtocolError):
        recv(server, hello)


def test_client_accepts_only_welcome_or_error_first() -> None:
    client = Connection(Role.CLIENT, LIMITS)
    server = Connection(Role.SERVER, LIMITS)
    recv(server, client.send("hello", v=1, user="a"))
    [err] = recv(client, server.error(ErrorCode.NAME_TAKEN, "taken", fatal=True))
    assert err["code"] == "name_taken" and client.state is State.AWAIT_WELCOME
    server2 = Connection(Role.SERVER, LIMITS)
    recv(server2, Connection(Role.CLIENT, LIMITS).send("hello", v=1, user="a"))
    server2.accept(user="a", token="t", room="general")
    with pytest.raises(RemoteProtocolError):
        recv(Connection(Role.CLIENT, LIMITS), server2.send("ping"))


def test_requests_may_follow_hello_without_waiting_for_welcome() -> None:
    client = Connection(Role.CLIENT, LIMITS)
    pipelined = client.send("hello", v=1, user="a")
    client.state = State.OPEN  # a client that does not wait (as a test, not via the API)
    pipelined += client.send("join", room="general")
    server = Connection(Role.SERVER, LIMITS)
    messages = server.receive_data(pipelined)
    assert next(messages).type == "hello"
    server.accept(user="a", token="t", room="general")  # the service accepts in between
    assert next(messages).type == "join"
    # without an accept in between, the request is refused
    lazy = Connection(Role.SERVER, LIMITS).receive_data(pipelined)
    next(lazy)
    with pytest.raises(RemoteProtocolError, match="wait for welcome"):
        next(lazy)
