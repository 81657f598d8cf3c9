"""The binary form of screen frames and cursor moves (protocol.binform), pure: no sockets.

A frame sent in the binary form arrives as the same Message as in the JSON form; whatever is
wrong in it is the error the JSON form gets for the same fault, or a fatal bad_frame for what
only the binary form can get wrong; random bytes never raise anything else."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatscreen.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from chatscreen.protocol import Connection, Limits, Message, Role, encode_frame
from chatscreen.protocol import binform as bf
from chatscreen.protocol.schema import ENCODINGS, LAYERS, MAX_DIM, MAX_INT, MAX_RECTS

LIMITS = Limits()


def handshake(*, ask: bool = True, grant: bool = True) -> tuple[Connection, Connection]:
    """A client and a server connection past the screen port's handshake."""
    client, server = Connection(Role.CLIENT, LIMITS), Connection(Role.SERVER, LIMITS)
    asked: dict[str, Any] = {"bin": 1} if ask else {}
    hello = client.send("hello", v=1, token="t", **asked)
    (msg,) = server.receive_data(hello)
    welcome = server.accept(user="u", token="t", room="general",
                            **({"bin": 1} if grant and msg.get("bin") == 1 else {}))
    list(client.receive_data(welcome))
    return client, server


def body(data: bytes) -> bytes:
    """``data`` as a binary frame on the wire."""
    return struct.pack(">II", 4 + len(data), 0) + data


def v(n: int) -> bytes:
    return bf.uvarint(n)


def one_pixel(seq: int = 1, flags: int = bf.FLAG_KEY | bf.FLAG_SIZE, size: bytes = v(4) + v(4),
              rect: bytes = v(1) + v(2) + v(1) + v(1) + b"\x00" + v(3),
              data: bytes = b"abc", count: bytes = v(1)) -> bytes:
    """A sharer's binary frame of one 1x1 raw rect on a 4x4 screen, parts replaceable."""
    return body(b"\x01" + v(seq) + bytes((flags,)) + (size if flags & bf.FLAG_SIZE else b"")
                + count + rect + data)


def refusal(data: bytes, server: Connection | None = None) -> RemoteProtocolError:
    """The server's refusal of ``data`` (one frame): not fatal."""
    server = server or handshake()[1]
    (msg,) = server.receive_data(data)
    assert msg.refused is not None, msg
    return msg.refused


def fatal(data: bytes, conn: Connection | None = None) -> RemoteProtocolError:
    conn = conn or handshake()[1]
    with pytest.raises(RemoteProtocolError) as info:
        list(conn.receive_data(data))
    return info.value


# -- generated frames ------------------------------------------------------------------


@st.composite
def frames(draw: st.DrawFn, w: int | None = None, h: int | None = None,
           key: bool | None = None) -> tuple[dict[str, Any], bytes]:
    """Valid frame fields (rects as dicts) and payload."""
    w = w or draw(st.sampled_from([1, 7, 64, 1920, MAX_DIM]) | st.integers(1, MAX_DIM))
    h = h or draw(st.sampled_from([1, 5, 1080, MAX_DIM]) | st.integers(1, MAX_DIM))
    key = draw(st.booleans()) if key is None else key
    rects, parts = [], []
    for _ in range(draw(st.integers(1, 12))):
        x, y = draw(st.integers(0, w - 1)), draw(st.integers(0, h - 1))
        rw, rh = draw(st.integers(1, w - x)), draw(st.integers(1, h - y))
        enc = draw(st.sampled_from([e for e in ENCODINGS if not key or e != "copy"]))
        if enc == "copy":
            data = struct.pack(">II", draw(st.integers(0, w - rw)), draw(st.integers(0, h - rh)))
        else:
            data = draw(st.binary(max_size=300))
        rect: dict[str, Any] = {"x": x, "y": y, "w": rw, "h": rh, "enc": enc, "len": len(data)}
        layer = draw(st.sampled_from([None, *LAYERS]))
        if layer is not None:
            rect["layer"] = layer
        rects.append(rect)
        parts.append(data)
    fields = {"seq": draw(st.integers(0, MAX_INT)), "w": w, "h": h, "key": key, "rects": rects}
    return fields, b"".join(parts)


def sizes() -> st.SearchStrategy[tuple[int, int]]:
    return st.tuples(st.sampled_from([1, 640, 1920, MAX_DIM]), st.sampled_from([1, 480, 1080]))


@st.composite
def frame_runs(draw: st.DrawFn) -> list[tuple[dict[str, Any], bytes]]:
    """A few frames, the size changing now and then (with or without a key frame)."""
    run = []
    w, h = draw(sizes())
    for _ in range(draw(st.integers(1, 5))):
        if draw(st.booleans()):
            w, h = draw(sizes())
        run.append(draw(frames(w, h)))
    return run


@settings(max_examples=150, deadline=None)
@given(frame_runs())
def test_a_sharers_frames_arrive_as_the_same_messages_in_both_forms(
        run: list[tuple[dict[str, Any], bytes]]) -> None:
    binary_client, binary_server = handshake()
    json_client, json_server = handshake(ask=False)
    assert binary_client.binary and binary_server.binary and not json_server.binary
    for fields, payload in run:
        as_binary = binary_client.send("frame", payload, **fields)
        as_json = json_client.send("frame", payload, **fields)
        assert struct.unpack_from(">I", as_binary, 4) == (0,)
        assert len(as_binary) < len(as_json)
        got = list(binary_server.receive_data(as_binary))
        want = list(json_server.receive_data(as_json))
        assert got == want
        assert got[0].refused is None


@settings(max_examples=150, deadline=None)
@given(frame_runs(), st.lists(st.integers(0, MAX_INT), min_size=1, max_size=3))
def test_the_servers_frames_arrive_as_the_same_messages_in_both_forms(
        run: list[tuple[dict[str, Any], bytes]], shares: list[int]) -> None:
    """As the relay sends them: the size on key frames and when it changed."""
    viewer = handshake()[0]
    json_viewer = handshake(ask=False)[0]
    last: dict[int, tuple[int, int]] = {}
    for i, (fields, payload) in enumerate(run):
        share = shares[i % len(shares)]
        size = (fields["w"], fields["h"])
        with_size = fields["key"] or last.get(share) != size
        last[share] = size
        data = bf.frame_from_fields({**fields, "share": share}, payload, size=with_size,
                                    share=True)
        got = list(viewer.receive_data(data))
        want = list(json_viewer.receive_data(encode_frame(
            {"type": "frame", "share": share, **fields}, payload)))
        assert got == want


@given(st.integers(-MAX_DIM, MAX_DIM), st.integers(-MAX_DIM, MAX_DIM), st.integers(0, MAX_INT))
def test_cursor_moves_arrive_as_the_same_messages_in_both_forms(x: int, y: int,
                                                                 share: int) -> None:
    client, server = handshake()
    data = client.send("cursor", x=x, y=y)
    assert struct.unpack_from(">I", data, 4) == (0,)
    assert list(server.receive_data(data)) == [Message("cursor", {"x": x, "y": y})]
    viewer = handshake()[0]
    assert list(viewer.receive_data(bf.cursor_bytes(x, y, share))) == [
        Message("cursor", {"share": share, "x": x, "y": y})]


def test_a_cursor_with_a_picture_stays_json() -> None:
    client, _ = handshake()
    data = client.send("cursor", b"zlib", x=1, y=2, w=1, h=1)
    assert struct.unpack_from(">I", data, 4) != (0,)


def test_a_one_pixel_change_is_a_few_bytes() -> None:
    client, _ = handshake()
    rect = [{"x": 1000, "y": 700, "w": 1, "h": 1, "enc": "raw", "len": 3}]
    client.send("frame", bytes(6220), seq=1, w=1920, h=1080, key=True,
                rects=[{"x": 0, "y": 0, "w": 1920, "h": 1080, "enc": "zlib", "len": 6220}])
    data = client.send("frame", b"abc", seq=2, w=1920, h=1080, key=False, rects=rect)
    # prefix 8, kind, seq, flags, count, x 2, y 2, w, h, code, len, data 3
    assert len(data) == 8 + 1 + 1 + 1 + 1 + 2 + 2 + 1 + 1 + 1 + 1 + 3


def test_a_frame_says_its_size_on_key_frames_and_when_it_changed() -> None:
    client, server = handshake()
    rect = [{"x": 0, "y": 0, "w": 1, "h": 1, "enc": "raw", "len": 3}]

    def flags(w: int, key: bool) -> int:
        data = client.send("frame", b"abc", seq=1, w=w, h=10, key=key, rects=rect)
        (msg,) = server.receive_data(data)
        assert (msg["w"], msg["h"]) == (w, 10)
        return data[9 + 1]  # after the prefix, the kind and a 1-byte seq

    assert flags(10, False) == bf.FLAG_SIZE  # the first
    assert flags(10, False) == 0
    assert flags(10, True) == bf.FLAG_KEY | bf.FLAG_SIZE
    assert flags(10, False) == 0
    assert flags(20, False) == bf.FLAG_SIZE


def test_every_encoding_has_a_code_and_codes_fit_six_bits() -> None:
    assert set(ENCODINGS) <= set(bf.ENC_CODES)
    assert len(set(bf.ENC_CODES.values())) == len(bf.ENC_CODES)
    assert max(bf.ENC_CODES.values()) < 64


@given(st.integers(0, (1 << 56) - 1))
def test_varints_round_trip_and_are_minimal(n: int) -> None:
    data = bf.uvarint(n)
    assert len(data) == max(1, -(-n.bit_length() // 7))
    assert bf._read(data, 0, len(data)) == (n, len(data))


# -- negotiation -------------------------------------------------------------------------


def test_binary_frames_need_the_handshake_to_agree() -> None:
    # an old client (no bin in hello): the server cannot grant it, and its empty header is
    # the bad frame it always was
    client, server = handshake(ask=False)
    assert not client.binary and not server.binary
    assert fatal(one_pixel(), server).code == ErrorCode.BAD_FRAME
    with pytest.raises(LocalProtocolError):
        c, s = Connection(Role.CLIENT, LIMITS), Connection(Role.SERVER, LIMITS)
        list(s.receive_data(c.send("hello", v=1)))
        s.accept(user="u", token="t", room="general", bin=1)
    # an old server (no bin in welcome): the client sends JSON, refuses binary frames
    client, server = handshake(grant=False)
    assert not client.binary and not server.binary
    data = client.send("frame", b"abc", seq=1, w=4, h=4, key=True,
                       rects=[{"x": 0, "y": 0, "w": 1, "h": 1, "enc": "raw", "len": 3}])
    assert struct.unpack_from(">I", data, 4) != (0,)
    assert fatal(bf.cursor_bytes(1, 2, 3), client).code == ErrorCode.BAD_FRAME
    # a server still understands JSON frames from a binary sharer
    client, server = handshake()
    (msg,) = server.receive_data(encode_frame(PIXEL, b"abc"))
    assert msg.refused is None and msg["w"] == 4


def test_a_binary_frame_right_behind_the_welcome_is_understood() -> None:
    client, server = Connection(Role.CLIENT, LIMITS), Connection(Role.SERVER, LIMITS)
    list(server.receive_data(client.send("hello", v=1, bin=1)))
    data = server.accept(user="u", token="t", room="general", bin=1) + bf.cursor_bytes(5, 6, 1)
    assert [m.type for m in client.receive_data(data)] == ["welcome", "cursor"]


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("data, why", [
    (body(b""), "empty"),
    (body(b"\x03"), "unknown kind 3"),
    (body(b"\x00"), "unknown kind 0"),
    (body(b"\x01"), "truncated"),
    (body(b"\x01\x80"), "truncated varint"),
    (body(b"\x01" + b"\xff" * 8 + b"\x01"), "longer than 8 bytes"),
    (body(b"\x01\x80\x00"), "needless zero group"),
    (one_pixel(flags=4), "unknown flags"),
    (one_pixel(flags=0x83), "unknown flags"),
    (one_pixel(rect=v(1) + v(2) + v(1) + v(1), data=b""), "truncated"),
    (one_pixel(rect=v(1) + v(2) + v(1) + v(1) + b"\x00", data=b""), "truncated"),
    (one_pixel(size=v(4), count=b"", rect=b"", data=b""), "truncated"),
    (one_pixel(count=v(2), data=b""), "truncated"),
    (body(b"\x02\x01"), "truncated"),
])
def test_what_only_the_binary_form_can_get_wrong_is_a_fatal_bad_frame(data: bytes,
                                                                      why: str) -> None:
    exc = fatal(data)
    assert exc.code == ErrorCode.BAD_FRAME
    assert why in exc.message


def json_refusal(header: dict[str, Any], payload: bytes = b"abc") -> RemoteProtocolError:
    return refusal(encode_frame(header, payload), handshake(ask=False)[1])


PIXEL: dict[str, Any] = {"type": "frame", "seq": 1, "w": 4, "h": 4, "key": True,
         "rects": [{"x": 1, "y": 2, "w": 1, "h": 1, "enc": "raw", "len": 3}]}


def with_rect(**changes: Any) -> dict[str, Any]:
    return {**PIXEL, "rects": [{**PIXEL["rects"][0], **changes}]}


@pytest.mark.parametrize("binary, json_header, json_payload", [
    (one_pixel(rect=v(1) + v(2) + v(1) + v(1) + b"\x09" + v(3)), with_rect(enc=9), b"abc"),
    (one_pixel(rect=v(1) + v(2) + v(1) + v(1) + b"\xc0" + v(3)), with_rect(layer=3), b"abc"),
    (one_pixel(data=b"abcd"), PIXEL, b"abcd"),
    (one_pixel(data=b"ab"), PIXEL, b"ab"),
    (one_pixel(rect=v(4) + v(2) + v(1) + v(1) + b"\x00" + v(3)), with_rect(x=4), b"abc"),
    (one_pixel(rect=v(1) + v(2) + v(0) + v(1) + b"\x00" + v(3)), with_rect(w=0), b"abc"),
    (one_pixel(rect=v(1) + v(2) + v(1) + v(MAX_DIM + 1) + b"\x00" + v(3)),
     with_rect(h=MAX_DIM + 1), b"abc"),
    (one_pixel(size=v(0) + v(4)), {**PIXEL, "w": 0}, b"abc"),
    (one_pixel(count=v(0), rect=b"", data=b""), {**PIXEL, "rects": []}, b""),
    (one_pixel(count=v(MAX_RECTS + 1), rect=b"", data=b""),
     {**PIXEL, "rects": [PIXEL["rects"][0]] * (MAX_RECTS + 1)}, b"abc" * (MAX_RECTS + 1)),
    (one_pixel(seq=MAX_INT + 1), {**PIXEL, "seq": MAX_INT + 1}, b"abc"),
    (one_pixel(flags=0), {k: v for k, v in PIXEL.items() if k not in ("w", "h")}, b"abc"),
    (one_pixel(rect=v(1) + v(2) + v(1) + v(1) + b"\x07" + v(3)), with_rect(enc="copy"),
     b"abc"),
    (body(b"\x02" + v(bf.zigzag(MAX_DIM + 1)) + v(0)), {"type": "cursor", "x": MAX_DIM + 1,
                                                         "y": 0}, b""),
    (body(b"\x02" + v(0) + v(0) + b"junk"), {"type": "cursor", "x": 0, "y": 0}, b"junk"),
])
def test_a_bad_field_is_the_error_the_json_form_gets(binary: bytes, json_header: dict[str, Any],
                                                     json_payload: bytes) -> None:
    got = refusal(binary)
    want = json_refusal(json_header, json_payload)
    assert (got.code, got.message) == (want.code, want.message)
    assert got.code == ErrorCode.BAD_MESSAGE


def test_a_frame_without_a_size_to_take_is_refused_and_the_connection_goes_on() -> None:
    _, server = handshake()
    assert "missing field 'w'" in refusal(one_pixel(flags=0), server).message
    (msg,) = server.receive_data(one_pixel())  # sizes it
    assert msg.refused is None
    (msg,) = server.receive_data(one_pixel(flags=0))
    assert (msg["w"], msg["h"], msg["key"]) == (4, 4, False)


def test_the_size_is_the_last_binary_one_refused_or_not() -> None:
    _, server = handshake()
    assert "outside 2x2" in refusal(one_pixel(size=v(2) + v(2)), server).message
    assert "outside 2x2" in refusal(one_pixel(flags=0), server).message
    (msg,) = server.receive_data(encode_frame({**PIXEL, "w": 9}, b"abc"))  # JSON: no matter
    assert msg.refused is None and msg["w"] == 9
    assert "outside 2x2" in refusal(one_pixel(flags=0), server).message


GOOD = [one_pixel(), bf.cursor_bytes(-3, 4),
        bf.frame_from_fields({"seq": 300, "w": 1920, "h": 1080, "key": False, "rects": [
            {"x": 1000, "y": 900, "w": 64, "h": 64, "enc": "copy", "len": 8, "layer": "low"},
            {"x": 0, "y": 0, "w": 2, "h": 1, "enc": "palette", "len": 4}]},
            struct.pack(">II", 5, 6) + b"wxyz", size=True)]


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(GOOD), st.data())
def test_mangled_binary_frames_give_clean_errors(good: bytes, data: st.DataObject) -> None:
    """Flipped, cut or lengthened bodies (the framing kept right): messages, refusals or a
    RemoteProtocolError, nothing else; on both ends."""
    raw = bytearray(good[8:])
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    raw = raw[: data.draw(st.integers(0, len(raw)))] + data.draw(st.binary(max_size=8))
    for conn in handshake():
        try:
            for msg in conn.receive_data(body(bytes(raw))):
                assert msg.type in ("frame", "cursor")
        except RemoteProtocolError as exc:
            assert exc.code in (ErrorCode.BAD_FRAME, ErrorCode.BAD_MESSAGE)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_random_binary_bodies_give_clean_errors(raw: bytes) -> None:
    for conn in handshake():
        try:
            list(conn.receive_data(body(raw)))
        except RemoteProtocolError as exc:
            assert exc.code in (ErrorCode.BAD_FRAME, ErrorCode.BAD_MESSAGE)


@pytest.mark.parametrize("change", [{"x": -1}, {"enc": "gif"}, {"layer": "mid"},
                                    {"len": 1 << 56}])
def test_a_frame_that_cannot_be_encoded_is_a_local_error(change: dict[str, Any]) -> None:
    client, _ = handshake()
    with pytest.raises(LocalProtocolError):
        client.send("frame", b"abc", **{k: v for k, v in with_rect(**change).items()
                                        if k != "type"})
