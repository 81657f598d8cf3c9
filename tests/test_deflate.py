"""Deflated binary frames (protocol.deflate), pure: no sockets.

A run of frames, some deflated through the connection's one persistent context and some
not, arrives as the same messages as in the JSON form, however the bytes are cut; a frame
sent again costs a few bytes; a corrupt chunk, a bomb, or a deflated frame the handshake did
not agree on is a fatal bad_frame."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatscreen.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from chatscreen.protocol import Connection, Limits, Message, Role, encode_frame
from chatscreen.protocol import binform as bf
from chatscreen.protocol.deflate import (
    KIND_DEFLATED,
    LOSSLESS,
    MAX_CLIENT_BODY,
    TAIL,
    Deflater,
    Inflater,
)
from tests.test_binform import frame_runs

LIMITS = Limits()


def handshake(*, bin_: bool = True, ask: bool = True, grant: bool = True,
              limits: Limits = LIMITS) -> tuple[Connection, Connection]:
    """A viewer (client) and a server connection past the screen port's handshake."""
    client, server = Connection(Role.CLIENT, limits), Connection(Role.SERVER, limits)
    asked: dict[str, Any] = {"bin": 1} if bin_ else {}
    if ask:
        asked["deflate"] = 1
    (msg,) = server.receive_data(client.send("hello", v=1, token="t", **asked))
    granted: dict[str, Any] = {"bin": 1} if msg.get("bin") == 1 else {}
    if grant and granted and msg.get("deflate") == 1:
        granted["deflate"] = 1
    list(client.receive_data(server.accept(user="u", token="t", room="general", **granted)))
    return client, server


def wire(chunk: bytes) -> bytes:
    """A deflated frame on the wire whose chunk is ``chunk``."""
    return struct.pack(">II", 5 + len(chunk), 0) + bytes((KIND_DEFLATED,)) + chunk


def fatal(data: bytes, conn: Connection) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        list(conn.receive_data(data))
    return info.value


def glyph_frame(seq: int, x: int = 100, y: int = 40) -> bytes:
    """What the relay sends for a typed character: a 9x18 palette rect (made-up bytes)."""
    data = bytes(range(7, 7 + 2 * 9 * 18 // 3))
    head = bf.rect_head(x, y, 9, 18, "palette", len(data))
    return bf.frame_bytes(seq, False, (1920, 1080), [head], [data], share=1)


# -- round trips ------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(frame_runs(), st.lists(st.booleans(), min_size=5, max_size=5),
       st.lists(st.integers(1, 400), max_size=8))
def test_a_run_some_deflated_some_not_arrives_as_the_json_form_does(
        run: list[tuple[dict[str, Any], bytes]], deflate: list[bool], cuts: list[int]) -> None:
    viewer, server = handshake()
    json_viewer = handshake(bin_=False)[0]
    assert viewer.deflate and server.deflate and not json_viewer.deflate
    sent: list[bytes] = []
    want: list[Message] = []
    for (fields, payload), squeeze in zip(run, deflate, strict=False):
        data = server.send("frame", payload, share=3, **fields)
        sent.append(server.deflated(data) if squeeze else data)
        want += json_viewer.receive_data(encode_frame({"type": "frame", "share": 3, **fields},
                                                      payload))
        sent.append(server.deflated(server.send("cursor", share=3, x=-5, y=len(sent))))
        want.append(Message("cursor", {"share": 3, "x": -5, "y": len(sent) - 1}))
    stream, at = b"".join(sent), 0
    got: list[Message] = []
    for cut in cuts:  # however TCP cuts the bytes
        got += viewer.receive_data(stream[at : at + cut])
        at += cut
    got += viewer.receive_data(stream[at:])
    assert got == want
    assert viewer.inflated == sum(deflate[: len(run)]) + len(run)  # (and the cursor moves)


def test_a_rect_sent_again_costs_a_few_bytes() -> None:
    _, server = handshake()
    first, again = glyph_frame(1), glyph_frame(2)
    sizes = [len(server.deflated(f)) for f in (first, again, glyph_frame(3, x=109))]
    assert sizes[0] <= len(first) + 10  # incompressible at first: a few bytes more
    assert sizes[1] <= 30 < len(again)  # then a back-reference (the binary form: ~130 B)
    assert sizes[2] <= 30  # the same glyph elsewhere too
    _, other = handshake()  # the context is the connection's own: another one starts afresh
    assert len(other.deflated(again)) == sizes[0]


def test_frames_not_deflated_do_not_touch_the_context() -> None:
    viewer, server = handshake()
    d1 = server.deflated(glyph_frame(1))
    plain = glyph_frame(2)
    d3 = server.deflated(glyph_frame(3))
    got = list(viewer.receive_data(d1 + plain + d3))
    assert [m["seq"] for m in got] == [1, 2, 3]
    assert got[0].payload == got[1].payload == got[2].payload


# -- the handshake ------------------------------------------------------------------------


def test_deflate_needs_the_binary_form_and_both_ends_to_agree() -> None:
    assert handshake(bin_=False)[1].deflate is False  # asked without bin: not granted
    viewer, server = handshake(ask=False)
    assert server.binary and not server.deflate and not viewer.deflate
    with pytest.raises(LocalProtocolError):
        server.deflated(glyph_frame(1))
    data = Deflater().wire(glyph_frame(1))
    assert "unknown kind 128" in fatal(data, viewer).message  # never asked: a kind unknown
    viewer, server = handshake(grant=False)  # asked, not granted
    assert server.binary and not server.deflate and not viewer.deflate
    error = fatal(data, viewer)
    assert error.code == ErrorCode.BAD_FRAME and "did not agree" in error.message


def test_a_server_cannot_grant_deflate_not_asked_for() -> None:
    client, server = Connection(Role.CLIENT, LIMITS), Connection(Role.SERVER, LIMITS)
    list(server.receive_data(client.send("hello", v=1, token="t", bin=1)))
    with pytest.raises(LocalProtocolError):
        server.accept(user="u", token="t", room="general", bin=1, deflate=1)


def test_a_deflated_frame_right_behind_the_welcome_is_understood() -> None:
    client, server = Connection(Role.CLIENT, LIMITS), Connection(Role.SERVER, LIMITS)
    list(server.receive_data(client.send("hello", v=1, token="t", bin=1, deflate=1)))
    data = server.accept(user="u", token="t", room="general", bin=1, deflate=1)
    data += server.deflated(bf.frame_bytes(1, True, (4, 4), [bf.rect_head(0, 0, 1, 1, "raw", 3)],
                                           [b"abc"], share=2))
    welcome, frame = client.receive_data(data)
    assert welcome.type == "welcome" and client.deflate
    assert (frame["w"], frame["h"], frame.payload) == (4, 4, b"abc")


# -- bad chunks ------------------------------------------------------------------------


def raw_deflate(data: bytes, *, final: bool = False) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = z.compress(data) + z.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH)
    return out if final else out[:-4]


@pytest.mark.parametrize("chunk, why", [
    (b"\xff\xff\xff", "corrupt"),
    (b"", "empty"),
    (raw_deflate(b""), "empty"),
    (raw_deflate(bytes(LIMITS.max_frame)), "inflates to more than"),  # a bomb: 1 kB -> 1 MB
    (raw_deflate(glyph_frame(1)[8:], final=True), "ends the deflate stream"),
], ids=["corrupt", "nothing", "empty", "bomb", "final"])
def test_a_bad_chunk_is_a_fatal_bad_frame(chunk: bytes, why: str) -> None:
    viewer, _ = handshake()
    error = fatal(wire(chunk), viewer)
    assert error.code == ErrorCode.BAD_FRAME and why in error.message
    assert fatal(glyph_frame(1), viewer).code == ErrorCode.BAD_FRAME  # the stream is broken


def test_what_a_chunk_inflates_to_is_checked_as_any_binary_body() -> None:
    viewer, server = handshake()
    error = fatal(server.deflated(struct.pack(">II", 6, 0) + b"\x80\x01"), viewer)
    assert error.code == ErrorCode.BAD_FRAME and "unknown kind 128" in error.message


def test_the_inflater_stops_at_its_bound() -> None:
    limits = Limits(max_frame=4096)
    viewer, _ = handshake(limits=limits)
    big = raw_deflate(bytes(5000))
    assert len(big) < 100
    assert "inflates to more than 4092" in fatal(wire(big), viewer).message
    assert Inflater(4092).body(raw_deflate(bytes(4092))) == bytes(4092)  # the bound itself


def test_the_tail_is_left_out() -> None:
    z = zlib.compressobj(6, zlib.DEFLATED, -13, 6)
    body = glyph_frame(1)[8:]
    full = z.compress(body) + z.flush(zlib.Z_SYNC_FLUSH)
    assert full.endswith(TAIL)
    assert Deflater().frame(body) == wire(full[:-4])


def test_the_example_in_the_protocol_doc() -> None:
    viewer, server = handshake()
    example = bytes.fromhex("00000016 00000000 80 62 64 64 65 60 4c 39 c1 c8 c8 c8 c0 fc 9f"
                            "81 01 00  0000000c 00000000 80 62 64 64 43 e6 02 00")
    raw = [bf.frame_bytes(seq, False, None, [bf.rect_head(100, 200, 1, 1, "raw", 3)],
                          [b"\xff\x00\x00"], share=1) for seq in (5, 6)]
    assert b"".join(server.deflated(f) for f in raw) == example
    size = bf.frame_bytes(1, True, (1920, 1080), [bf.rect_head(0, 0, 1, 1, "raw", 3)],
                          [b"abc"], share=1)
    got = list(viewer.receive_data(size + example))[1:]  # (a frame with the size first)
    assert [(m["seq"], m["rects"][0].x, m.payload) for m in got] == [
        (5, 100, b"\xff\x00\x00"), (6, 100, b"\xff\x00\x00")]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=80), min_size=1, max_size=4))
def test_random_chunks_give_clean_errors(chunks: list[bytes]) -> None:
    """Whatever a server sends as deflated bodies: messages, or a RemoteProtocolError."""
    viewer, _ = handshake(limits=Limits(max_frame=4096))
    size = bf.frame_bytes(1, True, (64, 64), [bf.rect_head(0, 0, 1, 1, "raw", 3)], [b"abc"],
                          share=1)
    list(viewer.receive_data(size))
    try:
        for chunk in chunks:
            list(viewer.receive_data(wire(chunk)))
    except RemoteProtocolError as exc:
        assert exc.code in (ErrorCode.BAD_FRAME, ErrorCode.BAD_MESSAGE)


# -- from a client (a sharer) --------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(frame_runs())
def test_a_sharers_small_lossless_frames_go_deflated_and_arrive_the_same(
        run: list[tuple[dict[str, Any], bytes]]) -> None:
    sharer, server = handshake()
    json_sharer, json_server = handshake(bin_=False)
    deflated = 0
    for fields, payload in run:
        data = sharer.send("frame", payload, **fields)
        small = len(bf.frame_from_fields(fields, payload, size=True)) - 8 <= MAX_CLIENT_BODY
        lossless = all(r["enc"] in LOSSLESS for r in fields["rects"])
        assert (data[8] == KIND_DEFLATED) == (small and lossless)
        deflated += small and lossless
        got = list(server.receive_data(data))
        assert got == list(json_server.receive_data(json_sharer.send("frame", payload, **fields)))
    assert server.inflated == deflated


def test_a_clients_deflated_body_inflates_to_8_kib_at_most() -> None:
    sharer, server = handshake()
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = glyph_frame(1)[8:]
    over = body + bytes(MAX_CLIENT_BODY + 1 - len(body))
    chunk = z.compress(over) + z.flush(zlib.Z_SYNC_FLUSH)
    error = fatal(wire(chunk[:-4]), server)
    assert error.code == ErrorCode.BAD_FRAME and f"more than {MAX_CLIENT_BODY}" in error.message
    _, server = handshake(ask=False)  # not agreed: an unknown kind
    assert "unknown kind 128" in fatal(sharer.deflated(glyph_frame(1)), server).message
