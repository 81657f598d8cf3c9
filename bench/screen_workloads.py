"""The issue-4 screen workloads, deterministic, on the display of $DISPLAY (1920x1080).

``python bench/screen_workloads.py WORKLOAD [--rate 30] [--seconds 20]`` with WORKLOAD one of
``idle`` (a still desktop), ``typing`` (a full-screen editor, one character per tick, no
scrolling: the text starts 20 lines long and does not reach the bottom within a run),
``typing-scroll`` (the same editor full to its last line, one character per tick typed at
the end: every line end, about every 35 characters or 1.2 s at 30 characters/s, scrolls the
whole text up by one line, as typing at the bottom of a full editor does), ``pixel`` (the
still desktop where ONE pixel, at :data:`PIXEL`, changes colour once a tick; run it with
``--rate 1``), ``scrolling`` (a long document scrolled one line per tick), ``video`` (a
photographic animation in 30 % of the screen, one new picture per tick), ``drag`` (a window
moved across the desktop, one step per tick). Tick ``n`` always draws the same picture.

Every tick also draws its number as 16 black/white 24x24 blocks at the bottom right
(:data:`MARKER`), so that a viewer can tell which tick it shows (:func:`read_marker`), except
``pixel``, which draws nothing else: its pixel's colour is the tick number
(:func:`read_pixel`), so that the bytes per change are that pixel's only. Every tick prints
``tick N T`` with ``T`` = ``time.monotonic()`` right after the X server has it (XSync), so
that latency can be measured from the change on the display to the viewer. After
``--seconds`` the screen stays still (for the lossless-refresh check) until killed. Prints
``ready`` once the first picture is up.
"""

from __future__ import annotations

import argparse
import sys
import time
import tkinter as tk
from pathlib import Path

import numpy as np

W, H = 1920, 1080
BLOCK, BITS = 24, 16
MARKER = (W - BLOCK * BITS, H - BLOCK)  # x, y of the tick marker
VIDEO_BOX = (80, 120, 1120, 720)  # x0, y0, x1, y1: 1040x600 = 30 % of the screen
PIXEL = (701, 433)  # x, y of the ``pixel`` workload's pixel
PIXEL_BLUE = 0x5A  # its blue channel; red and green hold the tick number
TEXT = ("def handle(self, peer, message):\n    # relay the frame to every viewer\n"
        "    for viewer in self.viewers:\n        viewer.send(message)\n")


def read_marker(rgb: np.ndarray, sx: float = 1.0, sy: float = 1.0) -> int:
    """The tick number shown in an RGB picture (scaled by sx, sy), -1 if unreadable."""
    y = int((MARKER[1] + BLOCK // 2) * sy)
    n = 0
    for b in range(BITS):
        x = int((MARKER[0] + b * BLOCK + BLOCK // 2) * sx)
        if y >= rgb.shape[0] or x >= rgb.shape[1]:
            return -1
        n |= (int(rgb[y, x].mean()) > 127) << b
    return n


def pixel_colour(n: int) -> str:
    """The ``pixel`` workload's colour for tick ``n`` (Tk notation)."""
    return f"#{n & 0xFF:02x}{n >> 8 & 0xFF:02x}{PIXEL_BLUE:02x}"


def read_pixel(rgb: np.ndarray, sx: float = 1.0, sy: float = 1.0) -> int:
    """The tick number the ``pixel`` workload's pixel shows, -1 if it shows none."""
    x, y = int(PIXEL[0] * sx), int(PIXEL[1] * sy)
    if y >= rgb.shape[0] or x >= rgb.shape[1]:
        return -1
    r, g, b = (int(v) for v in rgb[y, x][:3])
    return r | g << 8 if b == PIXEL_BLUE else -1


def video_frames(n: int, w: int, h: int) -> list[bytes]:
    """n photographic frames (moving colour waves with grain), as PPM data."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(1)
    grain = rng.normal(0, 6, (h, w, 3)).astype(np.float32)
    out = []
    for k in range(n):
        t = k / n * 2 * np.pi
        img = np.empty((h, w, 3), np.float32)
        img[..., 0] = 128 + 100 * np.sin(xx / 53.0 + t) * np.cos(yy / 71.0 - t)
        img[..., 1] = 128 + 90 * np.sin((xx + yy) / 97.0 + 2 * t)
        img[..., 2] = 128 + 110 * np.cos(np.hypot(xx - w / 2, yy - h / 2) / 41.0 - 3 * t)
        pix = np.clip(img + grain, 0, 255).astype(np.uint8)
        out.append(f"P6 {w} {h} 255\n".encode() + pix.tobytes())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("workload", choices=["idle", "typing", "typing-scroll", "pixel",
                                                  "scrolling", "video", "drag"])
    parser.add_argument("--desktop", help="PNG background for idle/video/drag")
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    args = parser.parse_args(argv)

    root = tk.Tk()
    root.overrideredirect(True)
    root.geometry(f"{W}x{H}+0+0")
    canvas = tk.Canvas(root, width=W, height=H, borderwidth=0, highlightthickness=0,
                       background="#2b2d31")
    canvas.place(x=0, y=0, width=W, height=H)
    keep: list[object] = []
    on_top: list[tk.Toplevel] = []  # windows to raise above the desktop once it is mapped
    if args.desktop and Path(args.desktop).exists():
        photo = tk.PhotoImage(master=root, file=args.desktop)
        keep.append(photo)
        canvas.create_image(0, 0, anchor="nw", image=photo)
    font = ("DejaVu Sans Mono", 11)
    step = None
    if args.workload in ("typing", "typing-scroll", "scrolling"):
        text = tk.Text(root, font=font, background="#fdfdfd", foreground="#1e1e1e",
                       borderwidth=0, highlightthickness=0, wrap="none", insertwidth=2)
        text.place(x=0, y=0, width=W, height=H - BLOCK)
        if args.workload == "typing":
            text.insert("1.0", "".join(f"{i:4d}  " + TEXT.splitlines()[i % 4] + "\n"
                                       for i in range(20)))
            source = TEXT * 400

            def step_typing(n: int) -> None:
                text.insert("end-1c", source[n % len(source)])

            step = step_typing
        elif args.workload == "typing-scroll":
            text.insert("1.0", "".join(f"{i:4d}  " + TEXT.splitlines()[i % 4] + "\n"
                                       for i in range(H // 12)))
            text.see("end")
            source = TEXT * 400

            def step_typing_scroll(n: int) -> None:
                text.insert("end-1c", source[n % len(source)])
                text.see("end")

            step = step_typing_scroll
        else:
            text.insert("1.0", "".join(f"{i:5d}  " + TEXT.splitlines()[i % 4] + "  # line "
                                       f"{i} of a long document\n" for i in range(20000)))

            def step_scroll(n: int) -> None:
                text.yview(f"{n + 1}.0")

            step = step_scroll
    elif args.workload == "video":
        x0, y0, x1, y1 = VIDEO_BOX
        frames = [tk.PhotoImage(master=root, data=d, format="PPM")
                  for d in video_frames(30, x1 - x0, y1 - y0)]
        keep.extend(frames)
        item = canvas.create_image(x0, y0, anchor="nw", image=frames[0])

        def step_video(n: int) -> None:
            canvas.itemconfigure(item, image=frames[n % len(frames)])

        step = step_video
    elif args.workload == "pixel":
        dot = tk.PhotoImage(master=root, width=1, height=1)
        dot.put(pixel_colour(0), (0, 0))
        keep.append(dot)
        canvas.create_image(*PIXEL, anchor="nw", image=dot)

        def step_pixel(n: int) -> None:
            dot.put(pixel_colour(n), (0, 0))

        step = step_pixel
    elif args.workload == "drag":
        win = tk.Toplevel(root)
        win.overrideredirect(True)
        body = tk.Text(win, font=font, background="#f5f5f5", foreground="#202020",
                       borderwidth=1, wrap="none")
        body.insert("1.0", TEXT * 10)
        body.place(x=0, y=0, width=640, height=400)

        def step_drag(n: int) -> None:
            span_x, span_y = W - 640 - 400, H - 400 - 60
            px = abs((n * 9) % (2 * span_x) - span_x)
            py = abs((n * 4) % (2 * span_y) - span_y)
            win.geometry(f"640x400+{px}+{py}")

        step_drag(0)
        on_top.append(win)
        step = step_drag

    marker = [] if args.workload == "pixel" else [
        canvas.create_rectangle(MARKER[0] + b * BLOCK, MARKER[1], MARKER[0] + (b + 1) * BLOCK,
                                H, width=0, fill="black") for b in range(BITS)]

    def draw_marker(n: int) -> None:
        for b, rect in enumerate(marker):
            canvas.itemconfigure(rect, fill="white" if n >> b & 1 else "black")

    period = 1.0 / args.rate
    state = {"n": 0, "start": 0.0}

    def tick() -> None:
        n = state["n"] = int(state["n"]) + 1
        if step is not None:
            step(n)
        draw_marker(n)
        root.update_idletasks()
        root.update()  # ends with XSync: the X server has drawn it
        print(f"tick {n} {time.monotonic():.6f}", flush=True)
        if time.monotonic() - state["start"] < args.seconds:
            due = state["start"] + n * period
            root.after(max(1, round((due - time.monotonic()) * 1000)), tick)

    def announce() -> None:
        draw_marker(0)
        root.update_idletasks()
        root.update()
        print("ready", flush=True)

    def begin() -> None:
        root.tk.deletefilehandler(sys.stdin)
        state["start"] = time.monotonic()
        if args.workload != "idle":
            root.after(1, tick)

    root.wait_visibility(canvas)
    for win_ in on_top:  # without a window manager, the desktop mapped last would hide it
        win_.lift()
        win_.wait_visibility(win_)
    root.update_idletasks()
    root.update()
    root.after(1, announce)
    # the bench starts the ticks by writing a line to our stdin
    def go(*_: object) -> None:
        sys.stdin.readline()
        begin()

    root.tk.createfilehandler(sys.stdin, tk.READABLE, go)
    root.after(int(args.max_seconds * 1000), root.destroy)
    root.mainloop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
