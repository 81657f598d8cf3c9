"""The H.264 video mode, pure parts: the stream encoder/decoder, Annex B parsing, and the
encoder's choice of H.264 for regions that change every frame."""

from __future__ import annotations

import numpy as np
import pytest

from chatscreen.protocol.annexb import is_idr, nal_types
from chatscreen.screen.codec import Canvas, DecodeError, psnr
from chatscreen.screen.encoders import ScreenEncoder
from chatscreen.screen.video import H264Decoder, H264Encoder, VideoStreams


def photo(k: int, w: int, h: int, grain: float = 2.0) -> np.ndarray:
    """Picture ``k`` of a moving photographic scene (smooth colour waves, mild grain), BGRA."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = k / 15
    img = np.empty((h, w, 4), np.float32)
    img[..., 0] = 128 + 100 * np.sin(xx / 23.0 + t) * np.cos(yy / 31.0 - t)
    img[..., 1] = 128 + 90 * np.sin((xx + yy) / 37.0 + 2 * t)
    img[..., 2] = 128 + 110 * np.cos(np.hypot(xx - w / 2, yy - h / 2) / 17.0 - 3 * t)
    img[..., :3] += np.random.default_rng(1).normal(0, grain, (h, w, 3)).astype(np.float32)
    img[..., 3] = 255
    out: np.ndarray = np.clip(img, 0, 255).astype(np.uint8)
    return out


def rgb(bgra: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(bgra[..., 2::-1])


@pytest.mark.parametrize("size", [(320, 192), (333, 201), (64, 64)])
def test_round_trip_keeps_psnr_and_size(size: tuple[int, int]) -> None:
    w, h = size
    enc, dec = H264Encoder(w, h), H264Decoder(w, h)
    for k in range(12):
        pic = photo(k, w, h)
        data = enc.encode(pic)
        assert nal_types(data), "an Annex B access unit"
        assert is_idr(data) == (k == 0)  # IDR first, then P-frames
        out = dec.decode(data)
        assert out.shape == (h, w, 3)
        assert psnr(out, rgb(pic)) >= 32, (k, psnr(out, rgb(pic)))


def test_a_requested_idr_decodes_on_its_own() -> None:
    w, h = 256, 128
    enc = H264Encoder(w, h)
    units = [enc.encode(photo(k, w, h), idr=k == 5) for k in range(8)]
    assert [is_idr(u) for u in units] == [True, False, False, False, False, True, False, False]
    fresh = H264Decoder(w, h)  # a viewer joining at the IDR
    for k in (5, 6, 7):
        assert psnr(fresh.decode(units[k]), rgb(photo(k, w, h))) >= 32
    with pytest.raises(DecodeError, match="IDR"):
        H264Decoder(w, h).decode(units[3])  # a P-frame alone is not a picture


@pytest.mark.parametrize("data", [
    b"", b"garbage", bytes(1000), b"\x00\x00\x00\x01" + bytes(range(256)) * 4,
    b"\x00\x00\x00\x01\x67" + b"\xff" * 64 + b"\x00\x00\x00\x01\x68\xff\x00\x00\x01\x65"
    + b"\x88" * 500,
])
def test_garbage_is_a_decode_error(data: bytes) -> None:
    dec = H264Decoder(64, 64)
    with pytest.raises(DecodeError):
        dec.decode(data)


def test_a_stream_of_another_size_is_refused() -> None:
    big = H264Encoder(640, 480).encode(photo(0, 640, 480))
    with pytest.raises(DecodeError):
        H264Decoder(64, 64).decode(big)  # the SPS asks for more than the rect: refused


def test_damaged_units_never_crash_the_decoder() -> None:
    w, h = 128, 96
    enc = H264Encoder(w, h)
    units = [enc.encode(photo(k, w, h)) for k in range(6)]
    rng = np.random.default_rng(7)
    for trial in range(60):
        dec = H264Decoder(w, h)
        for u in units:
            bad = bytearray(u)
            for i in rng.integers(4, len(bad), size=1 + trial % 8):
                bad[int(i)] = int(rng.integers(0, 256))
            if trial % 3 == 0:
                bad = bad[: int(rng.integers(5, len(bad)))]
            try:
                out = dec.decode(bytes(bad))
            except DecodeError:
                continue
            assert out.shape == (h, w, 3)


def test_streams_wait_for_their_idr_and_recover_after_bad_data() -> None:
    w, h = 128, 64
    enc = H264Encoder(w, h)
    units = [enc.encode(photo(k, w, h), idr=k == 4) for k in range(6)]
    streams = VideoStreams()
    assert streams.decode(0, 0, w, h, units[1]) is None  # joined mid-stream: wait
    assert streams.decode(0, 0, w, h, units[0]) is not None
    with pytest.raises(DecodeError):
        streams.decode(0, 0, w, h, b"\x00\x00\x01\x41" + b"\x00" * 3)
    assert streams.decode(0, 0, w, h, units[2]) is None  # the stream waits for an IDR
    assert streams.decode(0, 0, w, h, units[4]) is not None
    assert streams.decode(0, 0, w, h, units[5]) is not None
    assert streams.decode(64, 0, w, h, units[5]) is None  # another rect: another stream


# -- the encoder's choice ---------------------------------------------------------------

SW, SH = 640, 384
BOX = (128, 64, 320, 192)  # x, y, w, h of the moving picture (tile-aligned)


def screen(k: int, moving: bool = True, text: int = 0) -> np.ndarray:
    img = np.full((SH, SW, 4), 255, np.uint8)
    x, y, w, h = BOX
    img[y : y + h, x : x + w] = photo(k if moving else 0, w, h)
    img[SH - 40 : SH - 30, 10 : 10 + 8 * text, :3] = 0  # some "typing" outside it
    return img


def run_encoder(enc: ScreenEncoder, frames: list[np.ndarray], t0: float = 0.0,
                canvas: Canvas | None = None) -> tuple[list[set[str]], Canvas]:
    canvas = canvas or Canvas(SW, SH)
    encs: list[set[str]] = []
    for i, img in enumerate(frames):
        u = enc.encode(img, now=t0 + i / 30)
        if u is None:
            encs.append(set())
            continue
        canvas.apply(SW, SH, u.key, [(r.x, r.y, r.w, r.h, r.enc, r.data) for r in u.regions])
        encs.append({r.enc for r in u.regions})
    return encs, canvas


def test_auto_sends_a_region_changing_every_frame_as_h264_then_refreshes_it() -> None:
    enc = ScreenEncoder(encoding="auto")
    frames = [screen(k, text=k % 20) for k in range(30)]
    encs, canvas = run_encoder(enc, frames)
    assert "h264" not in set().union(*encs[:5])  # not before it has been seen moving
    assert all("h264" in e for e in encs[12:]), encs
    assert enc.video is not None and enc.video.streams == 1
    x, y, w, h = BOX
    u = enc.encode(screen(30, text=3), now=1.0)
    assert u is not None
    canvas.apply(SW, SH, u.key, [(r.x, r.y, r.w, r.h, r.enc, r.data) for r in u.regions])
    h264 = [r for r in u.regions if r.enc == "h264"]
    assert [(r.x, r.y, r.w, r.h) for r in h264] == [(x, y, w, h)]
    # the picture stops: once still for refresh_after, the region is sent losslessly
    still = screen(30, text=3)
    run_encoder(enc, [still] * 20, t0=1.1, canvas=canvas)
    assert enc.video.box is None and not enc.pending_refresh()
    assert np.array_equal(canvas.pixels, rgb(still))


def test_auto_keeps_few_colour_motion_on_tiles() -> None:
    """Text scrolling changes every frame too, but stays lossless (no H.264)."""
    enc = ScreenEncoder(encoding="auto")
    rng = np.random.default_rng(3)
    frames = []
    for _ in range(30):
        img = np.full((SH, SW, 4), 255, np.uint8)
        img[64:320, 64:576, :3] = rng.choice([0, 255], size=(256, 512, 1)).astype(np.uint8)
        frames.append(img)
    encs, _ = run_encoder(enc, frames)
    assert "h264" not in set().union(*encs)


def test_forced_encodings() -> None:
    frames = [screen(k) for k in range(12)]
    h264, _ = run_encoder(ScreenEncoder(encoding="h264"), frames)
    assert all("h264" in e for e in h264[4:]), h264
    lossless, canvas = run_encoder(ScreenEncoder(encoding="lossless"), frames)
    assert set().union(*lossless) <= {"palette", "webp"}
    assert np.array_equal(canvas.pixels, rgb(frames[-1]))
    jpeg, _ = run_encoder(ScreenEncoder(encoding="jpeg"), frames)
    assert set().union(*jpeg[1:]) == {"jpeg"}
    with pytest.raises(ValueError):
        ScreenEncoder(encoding="mpeg2")


def test_a_requested_idr_comes_with_the_next_picture() -> None:
    enc = ScreenEncoder(encoding="h264")
    for k in range(8):
        enc.encode(screen(k), now=k / 30)
    enc.request_idr()
    u = enc.encode(screen(8), now=8 / 30)
    assert u is not None
    assert [is_idr(r.data) for r in u.regions if r.enc == "h264"] == [True]
    u = enc.encode(screen(9), now=9 / 30)
    assert u is not None
    assert [is_idr(r.data) for r in u.regions if r.enc == "h264"] == [False]


def test_the_stream_fits_the_moving_picture_and_grows_over_changes_around_it() -> None:
    """Damage-hinted captures (x264 then runs beside the comparison): the stream covers the
    picture that moves, not its tiles; a change in those tiles outside it goes as tiles and
    makes the stream cover all of them; once still, the viewer's picture is exact."""
    x, y, w, h = 100, 80, 300, 200  # off the tile grid: tiles 64..448 x 64..320
    rng = np.random.default_rng(5)
    desk = np.full((SH, SW, 4), 255, np.uint8)
    desk[..., :3] = rng.integers(0, 4, (SH, SW, 3), dtype=np.uint8) * 60  # no flat tiles

    def shot(k: int, mark: int = 0) -> np.ndarray:
        img = desk.copy()
        img[y : y + h, x : x + w] = photo(k, w, h)
        img[70:74, 70 : 70 + mark] = (0, 0, 255, 255)  # beside the picture, in its tiles
        return img

    enc = ScreenEncoder(encoding="auto")
    canvas = Canvas(SW, SH)
    hint = np.zeros((SH // 64, SW // 64), np.bool_)
    hint[1:5, 1:7] = True  # the damage: the picture's tiles

    def step(img: np.ndarray, t: float, damage: np.ndarray = hint) -> list[tuple[int, ...]]:
        u = enc.encode(img, now=t, hint=damage)
        if u is None:
            return []
        canvas.apply(SW, SH, u.key, [(r.x, r.y, r.w, r.h, r.enc, r.data) for r in u.regions])
        return [(r.x, r.y, r.w, r.h) for r in u.regions if r.enc == "h264"]

    step(shot(0), 0.0, np.ones_like(hint))
    streams = [step(shot(k), k / 30) for k in range(1, 20)]
    assert streams[-1] == [(x, y, w, h)], streams
    assert psnr(canvas.pixels[y : y + h, x : x + w], rgb(shot(19))[y : y + h, x : x + w]) > 30
    assert np.array_equal(canvas.pixels[:64], rgb(shot(19))[:64])  # around it: untouched
    grown = step(shot(20, mark=8), 20 / 30)  # a change at (70, 70): outside, same tile
    assert grown == [(64, 64, 384, 256)], grown
    mark = canvas.pixels[70:74, 70:78].astype(int) - rgb(shot(20, mark=8))[70:74, 70:78]
    assert np.abs(mark).mean() < 30  # shown (in the new stream's picture: lossy)
    assert enc.video is not None and enc.video.streams == 2
    still = shot(20, mark=8)
    for k in range(21, 45):  # no damage: nothing changes
        step(still, k / 30, np.zeros_like(hint))
    assert enc.video.box is None and not enc.pending_refresh()
    assert np.array_equal(canvas.pixels, rgb(still))


def test_share_takes_encoding() -> None:
    from chatscreen.cli import build_parser

    p = build_parser()
    base = ["share", "--server", "localhost", "--user", "ann"]
    assert p.parse_args(base).encoding == "auto"
    assert p.parse_args([*base, "--encoding", "h264"]).encoding == "h264"
    with pytest.raises(SystemExit):
        p.parse_args([*base, "--encoding", "mpeg2"])
