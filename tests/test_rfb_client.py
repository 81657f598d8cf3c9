"""The benchmark's RFB client (bench/rfb.py): its decoders on ZRLE and Tight data built here,
pixel-exact, and the client against a scripted RFB server on a loopback socket.

(bench/bench_vnc.py also checks it against a real x0vncserver: the decoded framebuffer must
equal a grab of the screen once the screen is still.)
"""

from __future__ import annotations

import socket
import struct
import threading
import zlib
from collections.abc import Iterator

import numpy as np
import pytest
import simplejpeg
from bench import rfb

RNG = np.random.default_rng(17)


def picture(h: int, w: int, colours: int) -> np.ndarray:
    """An h x w RGB picture using ``colours`` distinct colours."""
    palette = RNG.integers(0, 256, (colours, 3), dtype=np.uint8)
    return palette[RNG.integers(0, colours, (h, w))]


# -- ZRLE: an encoder for the test, one tile subencoding at a time ---------------------------


def run_length(n: int) -> bytes:
    n -= 1
    return b"\xff" * (n // 255) + bytes([n % 255])


def runs(flat: np.ndarray) -> list[tuple[bytes, int]]:
    out: list[tuple[bytes, int]] = []
    for px in flat:
        b = bytes(px)
        if out and out[-1][0] == b:
            out[-1] = (b, out[-1][1] + 1)
        else:
            out.append((b, 1))
    return out


def zrle_tile(tile: np.ndarray, kind: str) -> bytes:
    flat = tile.reshape(-1, 3)
    colours = list(dict.fromkeys(bytes(p) for p in flat))
    index = {c: i for i, c in enumerate(colours)}
    if kind == "raw":
        return b"\x00" + flat.tobytes()
    if kind == "solid":
        assert len(colours) == 1
        return b"\x01" + colours[0]
    if kind == "packed":
        n = len(colours)
        bits = 1 if n == 2 else 2 if n <= 4 else 4
        rows = []
        for row in tile:
            idx = [index[bytes(p)] for p in row]
            bitstr = "".join(format(i, f"0{bits}b") for i in idx)
            bitstr += "0" * (-len(bitstr) % 8)
            rows.append(int(bitstr, 2).to_bytes(len(bitstr) // 8, "big"))
        return bytes([n]) + b"".join(colours) + b"".join(rows)
    if kind == "rle":
        return b"\x80" + b"".join(c + run_length(n) for c, n in runs(flat))
    if kind == "palette-rle":
        body = b""
        for c, n in runs(flat):
            body += bytes([index[c]]) if n == 1 else bytes([index[c] | 0x80]) + run_length(n)
        return bytes([128 + len(colours)]) + b"".join(colours) + body
    raise AssertionError(kind)


def zrle_data(pic: np.ndarray, kinds: Iterator[str]) -> bytes:
    h, w, _ = pic.shape
    out = b""
    for ty in range(0, h, 64):
        for tx in range(0, w, 64):
            out += zrle_tile(pic[ty:ty + 64, tx:tx + 64], next(kinds))
    return out


@pytest.mark.parametrize("kind,colours", [("raw", 200), ("solid", 1), ("packed", 2),
                                          ("packed", 3), ("packed", 16), ("rle", 3),
                                          ("palette-rle", 5)])
def test_zrle_tiles_decode_pixel_exact(kind: str, colours: int) -> None:
    # 100x70: full and partial tiles; runs longer than 255 where the picture is flat
    pic = picture(70, 100, colours)
    if kind in ("rle", "palette-rle"):
        pic[:40] = pic[0, 0]
    fb = np.zeros((80, 120, 3), np.uint8)
    kinds = iter([kind] * 4)
    rfb.zrle_rect(fb, zrle_data(pic, kinds), 10, 5, 100, 70)
    assert np.array_equal(fb[5:75, 10:110], pic)
    assert not fb[:5].any() and not fb[75:].any()


def test_zrle_stream_persists_across_rects() -> None:
    """One zlib stream for the connection: the second rect's bytes refer to the first's."""
    enc = zlib.compressobj()
    dec = zlib.decompressobj()
    fb = np.zeros((64, 128, 3), np.uint8)
    pic = picture(64, 64, 200)
    for x in (0, 64):
        data = enc.compress(zrle_data(pic, iter(["raw"]))) + enc.flush(zlib.Z_SYNC_FLUSH)
        rfb.zrle_rect(fb, dec.decompress(data), x, 0, 64, 64)
    assert np.array_equal(fb[:, :64], pic) and np.array_equal(fb[:, 64:], pic)
    assert len(data) < 1000  # the second copy was a back-reference


@pytest.mark.parametrize("bad", [b"\x81", b"\x02\x00\x00\x00\xff\xff\xff", b"\x00\x01"])
def test_zrle_bad_tiles_raise(bad: bytes) -> None:
    """Subencoding 129, a tile cut short, raw pixels cut short: RFBError, not garbage."""
    with pytest.raises(rfb.RFBError):
        rfb.zrle_rect(np.zeros((8, 8, 3), np.uint8), bad, 0, 0, 8, 8)


def test_zrle_palette_index_out_of_range_raises() -> None:
    data = b"\x83" + bytes(9) + bytes([5 | 0x80, 63])  # palette of 3, index 5, 64 pixels
    with pytest.raises(rfb.RFBError, match="palette index"):
        rfb.zrle_rect(np.zeros((8, 8, 3), np.uint8), data, 0, 0, 8, 8)


# -- Tight -----------------------------------------------------------------------------------


def compact(n: int) -> bytes:
    out = bytes([n & 0x7F | (0x80 if n > 0x7F else 0)])
    if n > 0x7F:
        out += bytes([n >> 7 & 0x7F | (0x80 if n > 0x3FFF else 0)])
        if n > 0x3FFF:
            out += bytes([n >> 14 & 0xFF])
    return out


@pytest.mark.parametrize("n", [0, 1, 127, 128, 16383, 16384, 4194303])
def test_tight_compact_length(n: int) -> None:
    assert rfb.bytes_reader(compact(n)).compact_length() == n


def tight_basic(data: bytes, stream: zlib._Compress, ctl: int) -> bytes:
    if len(data) < rfb.TIGHT_MIN_TO_COMPRESS:
        return bytes([ctl]) + data
    z = stream.compress(data) + stream.flush(zlib.Z_SYNC_FLUSH)
    return bytes([ctl]) + compact(len(z)) + z


def gradient(pic: np.ndarray) -> bytes:
    h, w, _ = pic.shape
    p = np.zeros((h + 1, w + 1, 3), np.int32)
    p[1:, 1:] = pic
    pred = np.clip(p[1:, :-1] + p[:-1, 1:] - p[:-1, :-1], 0, 255)
    return bytes(((p[1:, 1:] - pred) & 0xFF).astype(np.uint8).tobytes())


def test_tight_rects_decode_pixel_exact() -> None:
    streams = [zlib.compressobj() for _ in range(4)]
    fb = np.zeros((40, 300, 3), np.uint8)
    expect = fb.copy()
    wire = b""
    rects = []
    # fill
    colour = np.array([1, 2, 3], np.uint8)
    wire += bytes([0x80]) + colour.tobytes()
    expect[0:10, 0:20] = colour
    rects.append((0, 0, 20, 10))
    # palette of 2 (1 bit a pixel, rows padded to a byte), stream 1, with the filter byte
    two = picture(10, 21, 2)
    cols = list(dict.fromkeys(bytes(p) for p in two.reshape(-1, 3)))
    bits = np.array([[cols.index(bytes(p)) for p in row] for row in two], np.uint8)
    z = streams[1].compress(np.packbits(bits, axis=1).tobytes())
    z += streams[1].flush(zlib.Z_SYNC_FLUSH)
    wire += bytes([0x50, 1, 1]) + b"".join(cols) + compact(len(z)) + z
    expect[0:10, 30:51] = two
    rects.append((30, 0, 21, 10))
    # palette of 5 (a byte a pixel), stream 2
    five = picture(10, 30, 5)
    cols5 = list(dict.fromkeys(bytes(p) for p in five.reshape(-1, 3)))
    idx = bytes(cols5.index(bytes(p)) for p in five.reshape(-1, 3))
    z = streams[2].compress(idx) + streams[2].flush(zlib.Z_SYNC_FLUSH)
    wire += bytes([0x60, 1, len(cols5) - 1]) + b"".join(cols5) + compact(len(z)) + z
    expect[0:10, 60:90] = five
    rects.append((60, 0, 30, 10))
    # copy filter, stream 0, no filter byte; then a tiny one (< 12 bytes: not compressed)
    full = picture(20, 50, 250)
    wire += tight_basic(full.tobytes(), streams[0], 0x00)
    expect[10:30, 0:50] = full
    rects.append((0, 10, 50, 20))
    tiny = picture(1, 3, 3)
    wire += tight_basic(tiny.tobytes(), streams[0], 0x00)
    expect[35:36, 0:3] = tiny
    rects.append((0, 35, 3, 1))
    # gradient filter, stream 3
    grad = picture(12, 40, 250)
    z = streams[3].compress(gradient(grad)) + streams[3].flush(zlib.Z_SYNC_FLUSH)
    wire += bytes([0x70, 2]) + compact(len(z)) + z
    expect[10:22, 100:140] = grad
    rects.append((100, 10, 40, 12))
    # stream 0 reset (bit 0), then new data on a fresh stream
    streams[0] = zlib.compressobj()
    again = picture(10, 50, 250)
    wire += tight_basic(again.tobytes(), streams[0], 0x01)
    expect[10:20, 200:250] = again
    rects.append((200, 10, 50, 10))

    rd = rfb.bytes_reader(wire)
    state = rfb.TightState()
    for x, y, w, h in rects:
        rfb.tight_rect(fb, rd, state, x, y, w, h)
    assert rd.buffered() == 0
    assert np.array_equal(fb, expect)


def test_tight_jpeg() -> None:
    pic = np.full((16, 24, 3), (200, 40, 90), np.uint8)
    jpeg = simplejpeg.encode_jpeg(pic, quality=95, colorspace="RGB")
    fb = np.zeros((20, 30, 3), np.uint8)
    rfb.tight_rect(fb, rfb.bytes_reader(b"\x90" + compact(len(jpeg)) + jpeg),
                   rfb.TightState(), 2, 3, 24, 16)
    assert np.abs(fb[3:19, 2:26].astype(int) - pic).max() <= 3
    with pytest.raises(rfb.RFBError, match="JPEG"):
        rfb.tight_rect(fb, rfb.bytes_reader(b"\x90" + compact(len(jpeg)) + jpeg),
                       rfb.TightState(), 0, 0, 10, 10)


@pytest.mark.parametrize("bad", [b"\xa0", b"\x40\x07", b"\x00\x20\x78\x9c"])
def test_tight_bad_rects_raise(bad: bytes) -> None:
    """Compression type 10, filter 7, data that inflates to the wrong size."""
    with pytest.raises(rfb.RFBError):
        rfb.tight_rect(np.zeros((8, 8, 3), np.uint8), rfb.bytes_reader(bad),
                       rfb.TightState(), 0, 0, 8, 8)


# -- the client against a scripted server ------------------------------------------------------


def server_script(conn: socket.socket, got: dict[str, bytes]) -> None:
    """Handshake; an update (raw, CopyRect, cursor, LastRect); a fence request and the
    continuous-updates offer; a ZRLE update; then hang up."""
    def recv(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            assert chunk
            buf += chunk
        return buf

    def rect(x: int, y: int, w: int, h: int, enc: int) -> bytes:
        return struct.pack(">HHHHi", x, y, w, h, enc)

    conn.sendall(b"RFB 003.008\n")
    got["version"] = recv(12)
    conn.sendall(b"\x01\x01")  # one security type: None
    got["security"] = recv(1)
    conn.sendall(struct.pack(">I", 0))
    got["init"] = recv(1)
    conn.sendall(struct.pack(">HH", 8, 4) + bytes(16) + struct.pack(">I", 4) + b"test")
    got["pixel_format"] = recv(20)
    head = recv(4)
    got["encodings"] = recv(4 * struct.unpack(">H", head[2:])[0])
    got["request"] = recv(10)
    conn.sendall(b"\x00\x00\xff\xff" + rect(0, 0, 4, 4, rfb.RAW) + bytes(range(64))
                 + rect(4, 0, 4, 4, rfb.COPYRECT) + struct.pack(">HH", 0, 0)
                 + rect(0, 0, 2, 1, rfb.RICH_CURSOR) + bytes(2 * 4 + 1)
                 + rect(0, 0, 0, 0, rfb.LAST_RECT))
    got["request2"] = recv(10)
    conn.sendall(struct.pack(">B3xIB", 248, rfb.FENCE_REQUEST | 3, 2) + b"hi")
    conn.sendall(b"\x96")  # EndOfContinuousUpdates: the server offers them
    got["fence"] = recv(11)
    z = zlib.compress(b"\x01\x0a\x0b\x0c")  # one solid tile
    conn.sendall(b"\x00\x00\x00\x01" + rect(0, 0, 8, 4, rfb.ZRLE) + struct.pack(">I", len(z))
                 + z)
    got["enable"] = recv(10)


def test_client_speaks_rfb_38_and_decodes_updates() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    got: dict[str, bytes] = {}
    errors: list[BaseException] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            try:
                server_script(conn, got)
            except BaseException as exc:  # reported by the test below
                errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    host, port = listener.getsockname()
    client = rfb.RFBClient.connect(host, port, rfb.ZRLE, timeout=10)
    try:
        assert (client.width, client.height, client.name) == (8, 4, "test")
        update = client.next_update(10)
        assert update is not None
        assert update.rects == {rfb.RAW: 1, rfb.COPYRECT: 1, rfb.RICH_CURSOR: 1,
                                rfb.LAST_RECT: 1}
        px = np.arange(64, dtype=np.uint8).reshape(4, 4, 4)[..., :3]
        assert np.array_equal(client.fb[:, :4], px) and np.array_equal(client.fb[:, 4:], px)
        update = client.next_update(10)  # after answering the fence
        assert update is not None and update.rects == {rfb.ZRLE: 1}
        assert (client.fb == (10, 11, 12)).all()
        with pytest.raises(rfb.RFBError, match="closed"):
            client.next_update(10)
    finally:
        client.close()
        thread.join(10)
        listener.close()
    assert not errors, errors
    assert got["version"] == b"RFB 003.008\n" and got["security"] == b"\x01"
    assert got["init"] == b"\x01"  # shared
    assert got["pixel_format"] == b"\x00" * 4 + rfb.PIXEL_FORMAT
    encs = list(struct.unpack(f">{len(got['encodings']) // 4}i", got["encodings"]))
    assert encs[0] == rfb.ZRLE and rfb.COPYRECT in encs and rfb.FENCE in encs
    assert rfb.COMPRESS_0 + 2 in encs and rfb.QUALITY_0 + 8 in encs
    assert got["request"] == struct.pack(">BBHHHH", 3, 0, 0, 0, 8, 4)  # the whole screen
    assert got["request2"] == struct.pack(">BBHHHH", 3, 1, 0, 0, 8, 4)  # incremental
    assert got["fence"] == struct.pack(">B3xIB", 248, 3, 2) + b"hi"
    assert got["enable"] == struct.pack(">BBHHHH", 150, 1, 0, 0, 8, 4)
