"""Redraw rate of the desktop app's screen view (``chatscreen.gui.render``), on a private Xvfb.

Run ``python -m bench.bench_gui`` from the repository root (or ``make bench``). Output is
Markdown. A 1920x1080 share (the desktop-like test picture) is drawn into a Tk window the way
the app does it: the render thread's half (:class:`Composer`: paste the frame's rectangles
into the full picture, rescale only the changed part) and the Tk thread's half
(:class:`Blitter`: write the regions into the photo, then let Tk repaint; measured up to an X
round trip, so the X server has done the drawing). Cases: a full key frame, and a delta of
four 128x128 rectangles, each shown 1:1 (window 1920x1080) and scaled to fit 1280x720; for
each way of writing into the photo. Figures are medians over ~1 s per case.

* compose ms: render thread, per frame (JPEG decoding is not included; see the note);
* blit ms: Tk thread, per frame, including Tk's repaint and the X server drawing;
* updates/s: both halves one after the other on one thread (the worst case);
* pipelined/s: 1000 / max(compose, blit): the app's rate when the two threads overlap.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import tkinter as tk
from collections.abc import Callable
from pathlib import Path

import numpy as np
import simplejpeg

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.helpers.pictures import render_test_picture  # noqa: E402
from tests.helpers.xvfb import run_xvfb  # noqa: E402

from chatscreen.gui.render import Blitter, Composer, Method, Patch  # noqa: E402

W, H = 1920, 1080
SECONDS = float(os.environ.get("BENCH_GUI_SECONDS", "1.0"))
SQUARE = 128


def pictures() -> tuple[np.ndarray, np.ndarray]:
    base = np.asarray(render_test_picture(W, H).convert("RGB"))
    return base, np.ascontiguousarray(255 - base)


def key_frames(a: np.ndarray, b: np.ndarray) -> Callable[[int], tuple[bool, list[Patch]]]:
    return lambda i: (True, [Patch(0, 0, a if i % 2 else b)])


def deltas(a: np.ndarray, b: np.ndarray) -> Callable[[int], tuple[bool, list[Patch]]]:
    def frame(i: int) -> tuple[bool, list[Patch]]:
        src = a if i % 2 else b
        out = []
        for k in range(4):
            x = (i * 37 + k * 420) % (W - SQUARE)
            y = (i * 23 + k * 250) % (H - SQUARE)
            out.append(Patch(x, y, np.ascontiguousarray(src[y : y + SQUARE, x : x + SQUARE])))
        return False, out
    return frame


def run_case(root: tk.Tk, canvas: tk.Canvas, box: tuple[int, int], method: Method,
             frames: Callable[[int], tuple[bool, list[Patch]]],
             first: list[Patch]) -> tuple[float, float, float]:
    composer = Composer()
    composer.set_box(*box)
    blitter = Blitter(canvas, method)
    item = canvas.create_image(0, 0, anchor="nw", image=blitter.name)

    def blit(redraw: object) -> None:
        assert redraw is not None
        if blitter.blit(redraw):  # type: ignore[arg-type]
            canvas.itemconfigure(item, image=blitter.name)
        root.update_idletasks()
        root.winfo_pointerxy()  # an X round trip: the server has drawn everything before it

    blit(composer.apply(W, H, True, first))
    compose_ms, blit_ms = [], []
    i = 0
    start = time.perf_counter()
    while time.perf_counter() - start < SECONDS or i < 5:
        i += 1
        key, patches = frames(i)
        t0 = time.perf_counter()
        redraw = composer.apply(W, H, key, patches)
        t1 = time.perf_counter()
        blit(redraw)
        t2 = time.perf_counter()
        compose_ms.append((t1 - t0) * 1000)
        blit_ms.append((t2 - t1) * 1000)
    rate = i / (time.perf_counter() - start)
    canvas.delete(item)
    return statistics.median(compose_ms), statistics.median(blit_ms), rate


def main() -> int:
    a, b = pictures()
    jpeg = simplejpeg.encode_jpeg(a, quality=80, colorspace="RGB", colorsubsampling="444")
    t = time.perf_counter()
    for _ in range(10):
        simplejpeg.decode_jpeg(jpeg, colorspace="RGB")
    decode_ms = (time.perf_counter() - t) * 100
    with run_xvfb() as display:
        root = tk.Tk(screenName=display)
        root.geometry(f"{W}x{H}+0+0")
        canvas = tk.Canvas(root, width=W, height=H, highlightthickness=0, background="black")
        canvas.pack()
        root.update()
        print(f"Redraw of a {W}x{H} share in a Tk window on Xvfb, {os.cpu_count()} CPUs, "
              f"{SECONDS:g} s per case.\n")
        print("| frame | shown at | photo write | compose ms | blit ms | updates/s | "
              "pipelined/s |")
        print("|---|---|---|---:|---:|---:|---:|")
        cases = [("key frame 1920x1080", key_frames(a, b)),
                 (f"delta 4 x {SQUARE}x{SQUARE}", deltas(a, b))]
        for label, frames in cases:
            for box in ((W, H), (1280, 720)):
                for method in ("auto", "pil", "ppm"):
                    c, bl, rate = run_case(root, canvas, box, method, frames,
                                           [Patch(0, 0, a)])
                    shown = "1:1" if box == (W, H) else f"{box[0]}x{box[1]}"
                    name = f"{method} (app default)" if method == "auto" else method
                    print(f"| {label} | {shown} | {name} | {c:.1f} | {bl:.1f} | {rate:.0f} | "
                          f"{1000 / max(c, bl, 1e-3):.0f} |", flush=True)
        root.destroy()
    print(f"\nJPEG decoding of a {W}x{H} key frame (quality 80, 4:4:4; render thread, before "
          f"compose): {decode_ms:.1f} ms.")
    print("auto = PIL block put for a whole picture and for regions over 40 000 pixels, "
          "PPM `put` for smaller ones.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
