"""The frame parser, fed whole, byte by byte and with trailing data; limits; fuzzing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatscreen.errors import ErrorCode, RemoteProtocolError
from chatscreen.protocol import Frame, FrameDecoder, Limits, encode_frame

LIMITS = Limits(max_frame=4096, max_header=1024)

FRAMES = [
    Frame({"type": "say", "room": "general", "text": "héllo ✓ \n tab\t"}),
    Frame({"type": "frame", "seq": 1}, b"\x00\xff" * 100),
    Frame({"type": "ping"}),
]
WIRE = b"".join(encode_frame(f.header, f.payload) for f in FRAMES)


def feed_all(decoder: FrameDecoder, chunks: list[bytes]) -> list[Frame]:
    out: list[Frame] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    return out


def test_whole_buffer() -> None:
    assert FrameDecoder(LIMITS).feed(WIRE) == FRAMES


def test_byte_by_byte() -> None:
    decoder = FrameDecoder(LIMITS)
    assert feed_all(decoder, [WIRE[i : i + 1] for i in range(len(WIRE))]) == FRAMES
    assert decoder.buffered == 0


def test_trailing_partial_frame_is_kept() -> None:
    decoder = FrameDecoder(LIMITS)
    extra = encode_frame({"type": "pong"})
    assert decoder.feed(WIRE + extra[:5]) == FRAMES
    assert decoder.buffered == 5
    assert decoder.feed(extra[5:]) == [Frame({"type": "pong"})]


def test_wire_layout() -> None:
    data = encode_frame({"type": "x"}, b"PAY")
    body_len, header_len = struct.unpack(">II", data[:8])
    assert data[8 : 8 + header_len] == b'{"type":"x"}'
    assert body_len == 4 + header_len + 3
    assert data[8 + header_len :] == b"PAY"


def test_oversize_frame_rejected_from_length_alone() -> None:
    decoder = FrameDecoder(LIMITS)
    with pytest.raises(RemoteProtocolError) as err:
        decoder.feed(struct.pack(">I", LIMITS.max_frame + 1))  # no body sent at all
    assert err.value.code is ErrorCode.FRAME_TOO_LARGE
    # A broken stream stays broken.
    with pytest.raises(RemoteProtocolError):
        decoder.feed(encode_frame({"type": "ping"}))


def test_oversize_header_rejected() -> None:
    header = {"type": "say", "text": "x" * 2000}
    with pytest.raises(RemoteProtocolError) as err:
        FrameDecoder(LIMITS).feed(encode_frame(header))
    assert err.value.code is ErrorCode.FRAME_TOO_LARGE


@pytest.mark.parametrize(
    "raw",
    [
        struct.pack(">II", 4 + 3, 3) + b"[1]",  # not an object
        struct.pack(">II", 4 + 3, 3) + b"\xff\xfe{",  # not UTF-8
        struct.pack(">II", 4 + 2, 9) + b"{}",  # header longer than frame
        struct.pack(">I", 2) + b"ab",  # body shorter than its header length field
        struct.pack(">II", 4 + 9, 9) + b'{"a":NaN}',  # NaN is not JSON
        struct.pack(">II", 4 + 600, 600) + b"[" * 600,  # deep nesting
    ],
)
def test_malformed_frames(raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as err:
        FrameDecoder(LIMITS).feed(raw)
    assert err.value.code in (ErrorCode.BAD_FRAME, ErrorCode.FRAME_TOO_LARGE)


def test_valid_frames_before_a_bad_one_are_delivered() -> None:
    decoder = FrameDecoder(LIMITS)
    assert decoder.feed(WIRE + struct.pack(">II", 4 + 3, 3) + b"[1]") == FRAMES
    with pytest.raises(RemoteProtocolError):
        decoder.feed(b"")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)


@given(
    headers=st.lists(st.dictionaries(st.text(max_size=10), json_values, max_size=5), max_size=5),
    payloads=st.lists(st.binary(max_size=64), min_size=5, max_size=5),
    cut=st.integers(1, 50),
)
@settings(max_examples=200, deadline=None)
def test_round_trip_any_split(headers: list[dict[str, object]], payloads: list[bytes],
                              cut: int) -> None:
    frames = [Frame(h, p) for h, p in zip(headers, payloads, strict=False)]
    wire = b"".join(encode_frame(f.header, f.payload) for f in frames)
    decoder = FrameDecoder(Limits(max_frame=1 << 20, max_header=1 << 20))
    chunks = [wire[i : i + cut] for i in range(0, len(wire), cut)]
    assert feed_all(decoder, chunks) == frames


@given(st.lists(st.binary(max_size=64), max_size=8))
@settings(max_examples=500, deadline=None)
def test_arbitrary_bytes_only_ever_give_a_clean_protocol_error(chunks: list[bytes]) -> None:
    decoder = FrameDecoder(LIMITS)
    try:
        for chunk in chunks:
            for frame in decoder.feed(chunk):
                assert isinstance(frame.header, dict)
    except RemoteProtocolError as exc:
        assert exc.code in (ErrorCode.BAD_FRAME, ErrorCode.FRAME_TOO_LARGE)
