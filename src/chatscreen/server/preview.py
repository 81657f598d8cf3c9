"""What a stored file is (sniffed from its bytes, never the declared type) and its preview.

:func:`sniff` looks at the first bytes only. :func:`make_preview` decodes a picture (PNG,
JPEG, GIF and WebP: the first frame) with Pillow, bounded: its size is read from the header
and a picture over ``max_pixels`` is not decoded at all; Pillow's own decompression-bomb
check (``Image.MAX_IMAGE_PIXELS``: an error past twice it) is the second line. The
preview is at most 320x320, a PNG written from the pixels alone: no EXIF, no text chunks,
no ICC profile, nothing of the original's metadata. Both block (a thread's work: Pillow
releases the GIL while decoding); the file service runs at most a few at once.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatscreen.server.datadir import FILE_MODE

log = logging.getLogger("chatscreen.files")

THUMB_SIDE = 320
MAX_PIXELS = 50_000_000  # a picture larger than this is stored without a preview
SNIFF_BYTES = 4096
PICTURES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
    (b"PK\x03\x04", "application/zip"),
    (b"PK\x05\x06", "application/zip"),  # an empty archive
)


def sniff(head: bytes) -> str:
    """The type of a file whose first bytes are ``head`` (SNIFF_BYTES of them, or all)."""
    for magic, mime in _MAGIC:
        if head.startswith(magic):
            return mime
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if _is_text(head):
        return "text/plain"
    return "application/octet-stream"


def _is_text(head: bytes) -> bool:
    """UTF-8 without control characters other than tab, newline, carriage return and
    form feed (a character cut at the end of ``head`` is fine)."""
    if not head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:
            return False
        text = head[: exc.start].decode("utf-8")
    return not any((ord(c) < 32 and c not in "\t\n\r\f") or c == "\x7f" for c in text)


@dataclass(frozen=True, slots=True)
class Preview:
    w: int  # the picture's size
    h: int
    thumb: tuple[int, int] | None  # the preview's size, when one was written


def make_preview(path: Path, mime: str, out: Path, max_pixels: int = MAX_PIXELS
                 ) -> Preview | None:
    """A picture's size, and its preview written to ``out`` (0600); None if it is not
    a picture Pillow can read. A picture over ``max_pixels`` (or that Pillow takes for a
    decompression bomb) gets its size only, no preview."""
    if mime not in PICTURES:
        return None
    from PIL import Image, ImageOps

    # Pillow's own bound, checked in Image.open from the header: past MAX_IMAGE_PIXELS it
    # warns (ignored once for all, in _quiet: ours below is the same bound, and
    # catch_warnings is not safe with previews on several threads), past twice it raises.
    _quiet(Image, max_pixels)
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > max_pixels:  # before any pixel is decoded
                return Preview(w, h, None)
            im.seek(0)  # GIF, WebP: the first frame
            im.draft("RGB", (THUMB_SIDE, THUMB_SIDE))  # JPEG: decode at a smaller scale
            im.thumbnail((THUMB_SIDE, THUMB_SIDE))
            upright = ImageOps.exif_transpose(im)  # as it is shown (EXIF orientation)
            thumb = upright.convert("RGBA" if _has_alpha(im) else "RGB")
    except Image.DecompressionBombError:
        log.info("%s: a decompression bomb; stored without a preview", path.name)
        return None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # not a picture after all
        log.info("%s: no preview: %s", path.name, exc)
        return None
    clean = Image.new(thumb.mode, thumb.size)  # the pixels alone: no metadata comes along
    clean.paste(thumb)
    tmp = out.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        clean.save(f, "PNG", optimize=False)
    tmp.replace(out)
    return Preview(w, h, clean.size)


_configured: list[int] = []


def _quiet(image: Any, max_pixels: int) -> None:
    """Pillow's decompression-bomb limit set to ``max_pixels``, its warning ignored (once)."""
    if _configured != [max_pixels]:
        image.MAX_IMAGE_PIXELS = max_pixels
        warnings.filterwarnings("ignore", category=image.DecompressionBombWarning)
        _configured[:] = [max_pixels]


def _has_alpha(im: object) -> bool:
    mode = getattr(im, "mode", "")
    info = getattr(im, "info", {})
    return mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in info)
