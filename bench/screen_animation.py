"""Show a PNG full-screen at (0, 0) and animate part of it: a benchmark's changing screen.

``python bench/screen_animation.py PICTURE.png [--rate 30] [--static]``: a 160x160 square moves
along a fixed path inside a 640x360 box (at 700,300) and a counter shows the tick number,
``--rate`` times a second. Tick ``n`` always draws the same picture, so runs are comparable.
``--static`` shows the picture only. Prints "ready" once drawn; stays up until killed (or
``--max-seconds``).
"""

from __future__ import annotations

import argparse
import sys
import tkinter as tk

BOX = (700, 300, 1340, 660)  # x0, y0, x1, y1 of the animated area
SQUARE = 160


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("png")
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--static", action="store_true")
    parser.add_argument("--max-seconds", type=float, default=600.0)
    args = parser.parse_args(argv)

    root = tk.Tk()
    root.overrideredirect(True)
    photo = tk.PhotoImage(master=root, file=args.png)
    width, height = photo.width(), photo.height()
    root.geometry(f"{width}x{height}+0+0")
    canvas = tk.Canvas(root, width=width, height=height, borderwidth=0, highlightthickness=0,
                       background="black")
    canvas.create_image(0, 0, anchor="nw", image=photo)
    canvas.place(x=0, y=0, width=width, height=height)
    x0, y0, x1, y1 = BOX
    if not args.static:
        canvas.create_rectangle(x0, y0, x1, y1, fill="#20232a", outline="#888888")
    square = canvas.create_rectangle(x0, y0, x0 + SQUARE, y0 + SQUARE, fill="#e0a020",
                                     outline="#ffffff", width=3,
                                     state="hidden" if args.static else "normal")
    counter = canvas.create_text(x0 + 10, y1 - 30, anchor="w", fill="#f0f0f0",
                                 font=("Helvetica", 20, "bold"),
                                 text="" if args.static else "tick 0")
    period_ms = max(1, round(1000 / args.rate))
    tick = 0

    def step() -> None:
        nonlocal tick
        tick += 1
        span_x, span_y = x1 - x0 - SQUARE, y1 - y0 - SQUARE - 40
        # A bouncing path, fully determined by the tick number.
        px = abs((tick * 7) % (2 * span_x) - span_x)
        py = abs((tick * 5) % (2 * span_y) - span_y)
        canvas.coords(square, x0 + px, y0 + py, x0 + px + SQUARE, y0 + py + SQUARE)
        canvas.itemconfigure(square, fill=("#e0a020", "#20a0e0", "#a0e020")[tick // 30 % 3])
        canvas.itemconfigure(counter, text=f"tick {tick}")
        root.after(period_ms, step)

    def announce() -> None:
        root.update_idletasks()
        root.update()  # ends with XSync: everything is drawn
        print("ready", flush=True)
        if not args.static:
            root.after(period_ms, step)

    root.wait_visibility(canvas)
    root.update_idletasks()
    root.update()
    root.after(1, announce)
    root.after(int(args.max_seconds * 1000), root.destroy)
    root.mainloop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
