"""Show a PNG undecorated at (0, 0) on $DISPLAY; print "ready" once it is on screen.

Run as ``python show_image.py PICTURE.png``; it stays up until killed.
"""

from __future__ import annotations

import sys
import tkinter as tk


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: show_image.py PICTURE.png", file=sys.stderr)
        return 2
    root = tk.Tk()
    root.overrideredirect(True)
    photo = tk.PhotoImage(master=root, file=argv[1])
    width, height = photo.width(), photo.height()
    root.geometry(f"{width}x{height}+0+0")
    canvas = tk.Canvas(
        root, width=width, height=height, borderwidth=0, highlightthickness=0, background="black"
    )
    canvas.create_image(0, 0, anchor="nw", image=photo)
    canvas.place(x=0, y=0, width=width, height=height)

    def announce() -> None:
        # `update` ends with XSync, so the X server has drawn everything once it returns.
        root.update_idletasks()
        root.update()
        print("ready", flush=True)

    root.wait_visibility(canvas)  # mapped and viewable (no window manager: no reparenting)
    root.update_idletasks()
    root.update()
    root.after(1, announce)
    root.mainloop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
