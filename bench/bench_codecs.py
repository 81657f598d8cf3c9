"""Codec micro-benchmarks: chat header encodings, JPEG encode/decode, screen capture.

Run ``python -m bench.bench_codecs`` from the repository root (or ``make bench``). Every
figure is the median of 5 runs; the output is Markdown.
"""

from __future__ import annotations

import importlib
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import msgpack
import mss
import numpy as np
import numpy.typing as npt
import simplejpeg

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.helpers.display import open_mss  # noqa: E402
from tests.helpers.pictures import render_test_picture  # noqa: E402
from tests.helpers.xvfb import run_xvfb  # noqa: E402

RUNS = 5
WIDTH, HEIGHT = 1920, 1080
QUALITIES = (70, 80, 90)
Image = npt.NDArray[np.uint8]


def per_call_s(fn: Callable[[], object], number: int, runs: int = RUNS) -> float:
    """Median over ``runs`` of the mean time of one call (``number`` calls per run)."""
    fn()  # warm up
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number)
    return statistics.median(samples)


def psnr(a: Image, b: Image) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- headers


def chat_headers() -> list[dict[str, Any]]:
    texts = [
        "hi all, is the screen share working for you? I only see a black window here :(",
        "Yes it works, try to reconnect; the first keyframe takes a second to show up ok",
        "Pushed the fix for the reconnect loop to main, CI is green. Please review it 👍",
    ]
    return [
        {
            "type": "msg",
            "id": 1_000_000 + i,
            "room": "general",
            "user": f"user{i % 7}",
            "ts": 1_764_000_000.123 + i,
            "text": texts[i % len(texts)],
        }
        for i in range(100)
    ]


def _map(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    return [fn(item) for item in items]


def bench_headers() -> str:
    headers = chat_headers()

    def json_enc(h: dict[str, Any]) -> bytes:
        return json.dumps(h).encode()

    def json_compact_enc(h: dict[str, Any]) -> bytes:
        return json.dumps(h, separators=(",", ":"), ensure_ascii=False).encode()

    def msgpack_enc(h: dict[str, Any]) -> bytes:
        packed = msgpack.packb(h)
        assert isinstance(packed, bytes)
        return packed

    codecs: list[tuple[str, Callable[[dict[str, Any]], bytes], Callable[[bytes], Any]]] = [
        ("json.dumps().encode() / json.loads", json_enc, json.loads),
        ("json compact, ensure_ascii=False", json_compact_enc, json.loads),
        ("msgpack.packb / unpackb", msgpack_enc, msgpack.unpackb),
    ]
    rows = []
    for name, enc, dec in codecs:
        blobs = [enc(h) for h in headers]
        assert [dec(b) for b in blobs] == headers
        enc_s = per_call_s(partial(_map, enc, headers), 200) / len(headers)
        dec_s = per_call_s(partial(_map, dec, blobs), 200) / len(headers)
        size = statistics.mean(len(b) for b in blobs)
        rows.append([name, f"{enc_s * 1e6:.2f}", f"{dec_s * 1e6:.2f}", f"{size:.1f}"])
    return "### Chat header encoding (per message)\n\n" + table(
        ["codec", "encode µs", "decode µs", "bytes"], rows
    )


# --------------------------------------------------------------------------- JPEG


@dataclass
class Frames:
    rgb: Image
    bgr: Image
    bgra: Image
    text_box: tuple[slice, slice]  # the white editor window full of small black text


def make_frames() -> Frames:
    rgb = np.ascontiguousarray(np.asarray(render_test_picture(WIDTH, HEIGHT).convert("RGB")))
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    bgra = np.empty((HEIGHT, WIDTH, 4), dtype=np.uint8)
    bgra[:, :, :3] = bgr
    bgra[:, :, 3] = 255
    # Same geometry as the editor window in render_test_picture (inside its frame).
    text_box = (
        slice(HEIGHT // 40 + 50, HEIGHT - 20),
        slice(WIDTH // 40 + 30, int(WIDTH * 0.6) - 4),
    )
    return Frames(rgb, bgr, bgra, text_box)


def load_turbojpeg() -> tuple[Any, Any] | str:
    """(TurboJPEG instance, module) or the reason it is unavailable."""
    try:
        module = importlib.import_module("turbojpeg")
    except ImportError:
        return "PyTurboJPEG not installed"
    try:
        return module.TurboJPEG(), module
    except Exception as exc:  # libturbojpeg missing, or too old for this PyTurboJPEG
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"libturbojpeg not usable ({type(exc).__name__}: {first_line})"


def exact_decode(data: bytes) -> Image:
    """Accurate (slow-path) decode used for every PSNR figure."""
    out: Image = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=False, fastupsample=False)
    return out


def _simplejpeg_encode(img: Image, quality: int, subsampling: str, fastdct: bool) -> bytes:
    data: bytes = simplejpeg.encode_jpeg(
        img, quality=quality, colorspace="BGRX", colorsubsampling=subsampling, fastdct=fastdct
    )
    return data


def _cv2_encode(img: Image, quality: int, sampling_flag: int) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, sampling_flag]
    ok, buf = cv2.imencode(".jpg", img, params)
    assert ok
    return bytes(buf)


def _turbo_encode(tj: Any, img: Image, quality: int, pixel_format: int, sampling: int) -> bytes:
    data: bytes = tj.encode(
        img, quality=quality, pixel_format=pixel_format, jpeg_subsample=sampling
    )
    return data


def fast_decode(data: bytes) -> Image:
    out: Image = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=True)
    return out


def bench_jpeg_encode(frames: Frames) -> tuple[str, dict[str, bytes]]:
    encoders: list[tuple[str, str, int, Callable[[], bytes]]] = []
    cv2_flags = {
        "420": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420,
        "444": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
    }
    turbo = load_turbojpeg()
    for q in QUALITIES:
        for ss in ("420", "422", "444"):
            fn = partial(_simplejpeg_encode, frames.bgra, q, ss, True)
            encoders.append(("simplejpeg (BGRX)", ss, q, fn))
        fn = partial(_simplejpeg_encode, frames.bgra, q, "444", False)
        encoders.append(("simplejpeg (BGRX) fastdct=False", "444", q, fn))
        for ss, flag in cv2_flags.items():
            encoders.append(
                ("cv2.imencode (BGR)", ss, q, partial(_cv2_encode, frames.bgr, q, flag))
            )
        if not isinstance(turbo, str):
            tj, mod = turbo
            for ss, samp in (("420", mod.TJSAMP_420), ("444", mod.TJSAMP_444)):
                fn = partial(_turbo_encode, tj, frames.bgra, q, mod.TJPF_BGRX, samp)
                encoders.append(("PyTurboJPEG (BGRX)", ss, q, fn))
    turbo_note = turbo if isinstance(turbo, str) else ""

    rows = []
    samples: dict[str, bytes] = {}
    for name, ss, q, encode in sorted(encoders, key=lambda e: (e[2], e[0], e[1])):
        data = encode()
        seconds = per_call_s(encode, 3)
        decoded = exact_decode(data)
        ty, tx = frames.text_box
        rows.append(
            [
                name,
                str(q),
                ss,
                f"{seconds * 1e3:.1f}",
                f"{len(data) / 1024:.0f}",
                f"{psnr(decoded, frames.rgb):.2f}",
                f"{psnr(decoded[ty, tx], frames.rgb[ty, tx]):.2f}",
            ]
        )
        if name.startswith("simplejpeg (BGRX)") and "fastdct" not in name:
            samples[f"q{q}-{ss}"] = data
    if turbo_note:
        rows.append(["PyTurboJPEG", "all", "all", "n/a", "n/a", "n/a", "n/a"])
    text = (
        "### JPEG encode, 1920x1080 desktop-like frame (one core)\n\n"
        + table(
            ["encoder", "quality", "subsampling", "ms/frame", "KiB", "PSNR dB", "text PSNR dB"],
            rows,
        )
        + "\n\nPSNR: RGB vs source after an accurate decode (fastdct/fastupsample off); "
        "'text PSNR' is the white editor window with small black text only."
    )
    same = _simplejpeg_encode(frames.bgra, 80, "444", True) == _simplejpeg_encode(
        frames.bgra, 80, "444", False
    )
    verdict = "identical" if same else "different"
    text += f"\nsimplejpeg encode q80/444: fastdct=True and False give {verdict} bytes."
    if turbo_note:
        text += f"\nPyTurboJPEG: n/a, {turbo_note}."
    return text, samples


def bench_jpeg_decode(frames: Frames, samples: dict[str, bytes]) -> str:
    rows = []
    for key in ("q80-420", "q80-444"):
        data = samples[key]
        arr = np.frombuffer(data, dtype=np.uint8)
        decoders: list[tuple[str, Callable[[], Any]]] = [
            ("simplejpeg BGRX (defaults)", partial(simplejpeg.decode_jpeg, data, "BGRX")),
            ("simplejpeg RGB (defaults)", partial(simplejpeg.decode_jpeg, data, "RGB")),
            ("simplejpeg RGB fastdct+fastupsample", partial(fast_decode, data)),
            ("cv2.imdecode BGR", partial(cv2.imdecode, arr, cv2.IMREAD_COLOR)),
        ]
        for name, fn in decoders:
            out = fn()
            rgb = out[:, :, 2::-1] if "BGR" in name else out
            seconds = per_call_s(fn, 5)
            rows.append(
                [name, key, f"{seconds * 1e3:.1f}", f"{psnr(np.asarray(rgb), frames.rgb):.2f}"]
            )
    return "### JPEG decode, 1920x1080\n\n" + table(
        ["decoder", "source jpeg", "ms/frame", "PSNR dB"], rows
    )


# --------------------------------------------------------------------------- capture


def _time_capture(sct: Any) -> list[str]:
    monitor = sct.monitors[1]
    assert (monitor["width"], monitor["height"]) == (WIDTH, HEIGHT)
    shot = sct.grab(monitor)
    grab_s = per_call_s(partial(sct.grab, monitor), 20)
    asarray_s = per_call_s(partial(np.asarray, shot), 20)
    copy_s = per_call_s(partial(np.array, shot, copy=True), 20)
    return [f"{grab_s * 1e3:.2f}", f"{asarray_s * 1e3:.3f}", f"{copy_s * 1e3:.2f}"]


def bench_capture() -> str:
    rows = []
    with run_xvfb("1920x1080x24") as display:
        with open_mss(display) as sct:
            rows.append([f"mss {mss.__version__} default backend", *_time_capture(sct)])
        if hasattr(mss, "MSS"):  # mss >= 10.2: backends selectable (default is XShmGetImage)
            with mss.MSS(display=display, backend="xgetimage") as sct:
                rows.append([f"mss {mss.__version__} backend=xgetimage", *_time_capture(sct)])
    return "### Screen capture, 1920x1080x24 Xvfb\n\n" + table(
        ["capture", "grab() ms", "np.asarray(shot) ms", "np.array(shot) copy ms"], rows
    )


def main() -> int:
    print("# bench_codecs\n")
    print(
        f"Python {platform.python_version()}, numpy {np.__version__}, "
        f"simplejpeg {simplejpeg.__version__}, opencv {cv2.__version__}, "
        f"msgpack {'.'.join(map(str, msgpack.version))}, mss {mss.__version__}; "
        f"{platform.machine()}, median of {RUNS} runs.\n"
    )
    print(bench_headers() + "\n", flush=True)
    frames = make_frames()
    encode_text, samples = bench_jpeg_encode(frames)
    print(encode_text + "\n", flush=True)
    print(bench_jpeg_decode(frames, samples) + "\n", flush=True)
    print(bench_capture(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
