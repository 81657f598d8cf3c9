"""What deflated frames (protocol.deflate) save on typed text, and what they cost the server.

Types a few lines of text (Pillow's default font, anti-aliased) into a 1920x1080 picture, one
character per update, and builds the frame the relay would send a binary viewer for each: the
changed 64x64 tiles as ``palette`` (the sharer before issue 17), or only the changed pixels'
box as ``raw``, ``palette`` or ``packed`` (main's sharer; also with its index bytes always
stored, never zlib). For each, prints the bytes per
update on the wire (TLS record of 22 B included) without and with a persistent deflate context
for a few (level, window bits, memLevel), and the server's time to deflate one frame (µs,
median). ``python -m bench.bench_deflate`` (``BENCH_DEFLATE_CHARS``: characters typed).
"""

from __future__ import annotations

import os
import statistics
import time
import zlib
from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from chatscreen.protocol import binform as bf
from chatscreen.protocol.deflate import LEVEL, MEM_LEVEL, WBITS
from chatscreen.screen.codec import encode_packed, encode_palette

W, H, TILE = 1920, 1080, 64
CHARS = int(os.environ.get("BENCH_DEFLATE_CHARS", "600"))
TLS_RECORD = 22
TEXT = ("The quick brown fox jumps over the lazy dog; def main() -> int: return 0  # typing "
        "30 characters a second into an editor, as issue 17's workload does. ")
CONFIGS = [(6, 15, 8), (6, 15, 6), (6, 14, 6), (6, 13, 6), (1, 15, 6), (9, 15, 8)]

Rect = tuple[int, int, int, int]  # x, y, w, h


def typed() -> Iterator[tuple[np.ndarray, Rect]]:
    """Each picture (BGRA) after one more character, and the box of what changed."""
    img = Image.new("RGB", (W, H), (250, 250, 245))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=15)
    prev = np.asarray(img.convert("RGBA")).copy()
    x, y = 8, 8
    for i in range(CHARS):
        ch = TEXT[i % len(TEXT)]
        draw.text((x, y), ch, fill=(30, 30, 60), font=font)
        x += int(font.getlength(ch))
        if x > W - 200:
            x, y = 8, y + 20
        cur = np.asarray(img.convert("RGBA")).copy()
        changed = np.argwhere((cur != prev).any(axis=2))
        prev = cur
        if len(changed):
            (y0, x0), (y1, x1) = changed.min(axis=0), changed.max(axis=0) + 1
            yield cur[:, :, [2, 1, 0, 3]], (int(x0), int(y0), int(x1 - x0), int(y1 - y0))


def tiles_of(box: Rect) -> list[Rect]:
    x, y, w, h = box
    return [(c * TILE, r * TILE, min(TILE, W - c * TILE), min(TILE, H - r * TILE))
            for r in range(y // TILE, (y + h - 1) // TILE + 1)
            for c in range(x // TILE, (x + w - 1) // TILE + 1)]


def frame(img: np.ndarray, rects: list[Rect], enc: str, seq: int) -> bytes:
    heads, data = [], []
    for x, y, w, h in rects:
        part = img[y : y + h, x : x + w]
        blob = (encode_palette(part) if enc == "palette" else
                encode_packed(part) if enc == "packed" else
                encode_packed(part, 0) if enc == "stored" else None)  # level 0: never zlib
        if blob is None:
            blob, enc = np.ascontiguousarray(part[:, :, 2::-1]).tobytes(), "raw"
        heads.append(bf.rect_head(x, y, w, h, "packed" if enc == "stored" else enc, len(blob)))
        data.append(blob)
    return bf.frame_bytes(seq, False, None, heads, data, share=1)


FORMS: dict[str, Callable[[np.ndarray, Rect, int], bytes]] = {
    "palette tiles (before cut rects)":
        lambda img, box, seq: frame(img, tiles_of(box), "palette", seq),
    "raw, cut to the change": lambda img, box, seq: frame(img, [box], "raw", seq),
    "palette, cut to the change": lambda img, box, seq: frame(img, [box], "palette", seq),
    "packed, cut to the change (main)": lambda img, box, seq: frame(img, [box], "packed", seq),
    "packed stored (never zlib), cut": lambda img, box, seq: frame(img, [box], "stored", seq),
}


def main() -> int:
    updates = list(typed())
    print(f"{len(updates)} updates (characters typed); bytes per update on the wire, with a "
          f"{TLS_RECORD} B TLS record; deflate: µs per frame (median)")
    for name, make in FORMS.items():
        frames = [make(img, box, seq) for seq, (img, box) in enumerate(updates, 1)]
        plain = statistics.mean(len(f) for f in frames) + TLS_RECORD
        print(f"\n{name}: {plain:.0f} B per update without deflate")
        for level, wbits, mem in CONFIGS:
            z = zlib.compressobj(level, zlib.DEFLATED, -wbits, mem)
            sizes, times = [], []
            for f in frames:
                t0 = time.perf_counter()
                chunk = z.compress(memoryview(f)[8:]) + z.flush(zlib.Z_SYNC_FLUSH)
                times.append(time.perf_counter() - t0)
                sizes.append(8 + 1 + len(chunk) - 4 + TLS_RECORD)
            memory = ((1 << (wbits + 2)) + (1 << (mem + 9))) >> 10
            mark = "  <- protocol.deflate's" if (level, wbits, mem) == (LEVEL, WBITS,
                                                                          MEM_LEVEL) else ""
            print(f"  level {level}, wbits {wbits}, memLevel {mem} ({memory} KiB): "
                  f"{statistics.mean(sizes):6.1f} B per update "
                  f"({statistics.mean(sizes) / plain:.2f}x), "
                  f"{statistics.median(times) * 1e6:5.1f} µs{mark}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
