"""The mouse pointer as its own small update, not as pixels in the tiles.

The sharer captures the screen without the pointer and sends, when it moves or changes,
a ``cursor`` message: where its picture's top left is, and (only when the picture changed)
the picture itself, RGBA with straight alpha, zlib-compressed (docs/protocol.md). Moving the
mouse then costs ~40 bytes instead of re-sending the tiles under its old and new places.
The viewer draws it over its picture (:func:`composite`), exactly as mss draws it into a
capture, so a viewer's picture with the pointer equals a capture with it, bit for bit.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from chatscreen.errors import ChatscreenError

MAX_CURSOR = 256  # largest pointer picture side, pixels

RGB = npt.NDArray[np.uint8]


class CursorError(ChatscreenError):
    pass


@dataclass(frozen=True, slots=True)
class Shape:
    """A pointer picture: ``w`` x ``h`` RGBA pixels (straight alpha), rows top to bottom."""

    w: int
    h: int
    rgba: bytes

    def encode(self) -> bytes:
        return zlib.compress(self.rgba, 6)

    @classmethod
    def decode(cls, data: bytes, w: int, h: int) -> Shape:
        """From a ``cursor`` message's payload; CursorError if it is not w x h RGBA."""
        if not (1 <= w <= MAX_CURSOR and 1 <= h <= MAX_CURSOR):
            raise CursorError(f"a pointer picture is 1-{MAX_CURSOR} pixels a side, not {w}x{h}")
        d = zlib.decompressobj()
        try:
            rgba = d.decompress(data, w * h * 4 + 1)
        except zlib.error as exc:
            raise CursorError(f"bad pointer picture: {exc}") from None
        if len(rgba) != w * h * 4 or not d.eof or d.unused_data:
            raise CursorError(f"a {w}x{h} pointer picture inflates to {w * h * 4} bytes")
        return cls(w, h, rgba)


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the pointer's picture goes on the shared screen (its top left; may be partly
    off the screen), and the picture (None: not known yet)."""

    x: int
    y: int
    shape: Shape | None


def shape_of_bgra(bgra: bytes | bytearray, w: int, h: int) -> Shape:
    """A Shape from mss's cursor picture (BGRA)."""
    px = np.frombuffer(bytes(bgra), np.uint8).reshape(h * w, 4)
    return Shape(w, h, px[:, [2, 1, 0, 3]].tobytes())


def composite(pixels: RGB, cursor: Cursor | None) -> RGB:
    """``pixels`` (RGB, the shared screen) with the pointer drawn over, as a new array: the
    same arithmetic as mss's ``with_cursor`` capture (straight alpha; opaque pixels copied,
    others blended in double precision and truncated)."""
    out = pixels.copy()
    if cursor is None or cursor.shape is None:
        return out
    s = cursor.shape
    h, w = out.shape[:2]
    x0, y0 = max(cursor.x, 0), max(cursor.y, 0)
    x1, y1 = min(cursor.x + s.w, w), min(cursor.y + s.h, h)
    if x1 <= x0 or y1 <= y0:
        return out
    pic = np.frombuffer(s.rgba, np.uint8).reshape(s.h, s.w, 4)
    pic = pic[y0 - cursor.y : y1 - cursor.y, x0 - cursor.x : x1 - cursor.x]
    alpha = pic[..., 3:4].astype(np.float64) / 255
    under = out[y0:y1, x0:x1]
    blended = (pic[..., :3] * alpha + under * (1 - alpha)).astype(np.uint8)
    a = pic[..., 3]
    out[y0:y1, x0:x1] = np.where((a == 255)[..., None], pic[..., :3],
                                 np.where((a == 0)[..., None], under, blended))
    return out


class CursorTracker:
    """The sharer's side: what to send for the pointer now, given what was sent."""

    def __init__(self) -> None:
        self.sent: Cursor | None = None

    def update(self, now: Cursor | None) -> tuple[Cursor, bool] | None:
        """The cursor to send (and whether with its picture), or None when it did not
        change."""
        if now is None or now.shape is None:
            return None
        last = self.sent
        if last is not None and last.x == now.x and last.y == now.y and last.shape == now.shape:
            return None
        self.sent = now
        return now, last is None or last.shape != now.shape
