"""Deterministic, desktop-like test pictures (also used by bench/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_LOREM_TEXT = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud "
    "exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat 0123456789."
)
_LOREM = _LOREM_TEXT.split()


def _text_line(n: int) -> str:
    words = [_LOREM[(n * 7 + i * 3) % len(_LOREM)] for i in range(6 + n % 9)]
    return f"{n:4d}  " + " ".join(words)


def render_test_picture(width: int, height: int) -> Image.Image:
    """An RGB picture resembling a desktop: title bar, sidebar, text, photo, chart."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    # Background: smooth diagonal gradient ("wallpaper").
    arr = np.empty((height, width, 3), dtype=np.float32)
    arr[..., 0] = 40 + 120 * xx / max(width - 1, 1)
    arr[..., 1] = 60 + 100 * yy / max(height - 1, 1)
    arr[..., 2] = 160 - 60 * (xx + yy) / max(width + height - 2, 1)
    # "Photo" window on the right: smooth colour waves (like an image viewer).
    px0, py0 = int(width * 0.62), int(height * 0.52)
    px1, py1 = int(width * 0.97), int(height * 0.95)
    sub_y, sub_x = yy[py0:py1, px0:px1], xx[py0:py1, px0:px1]
    arr[py0:py1, px0:px1, 0] = 128 + 100 * np.sin(sub_x / 37.0) * np.cos(sub_y / 53.0)
    arr[py0:py1, px0:px1, 1] = 128 + 90 * np.sin((sub_x + sub_y) / 71.0)
    arr[py0:py1, px0:px1, 2] = 128 + 110 * np.cos(np.hypot(sub_x - px0, sub_y - py1) / 29.0)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()

    # Top panel with clock-like text.
    bar = max(height // 40, 12)
    draw.rectangle((0, 0, width, bar), fill=(30, 30, 34))
    draw.text((8, 2), "Activities    chatscreen    Mon 12:34", fill=(230, 230, 230), font=font)
    # Sidebar of coloured "icons".
    palette = [
        (220, 50, 47),
        (38, 139, 210),
        (133, 153, 0),
        (181, 137, 0),
        (108, 113, 196),
        (42, 161, 152),
        (211, 54, 130),
        (203, 75, 22),
    ]
    icon = max(width // 40, 8)
    for i in range(max((height - bar) // (icon + 8), 0)):
        y = bar + 8 + i * (icon + 8)
        draw.rectangle(
            (6, y, 6 + icon, y + icon), fill=palette[i % len(palette)], outline=(255, 255, 255)
        )
    # Text editor window: white page with many lines of black text.
    tx0, ty0, tx1, ty1 = icon + 24, bar + 16, int(width * 0.60), height - 16
    draw.rectangle((tx0, ty0, tx1, ty1), fill=(255, 255, 255), outline=(90, 90, 90), width=2)
    draw.rectangle((tx0, ty0, tx1, ty0 + 22), fill=(225, 225, 230))
    draw.text((tx0 + 8, ty0 + 5), "notes.txt - Editor", fill=(0, 0, 0), font=font)
    line_h = 14
    for n, y in enumerate(range(ty0 + 30, ty1 - line_h, line_h)):
        draw.text((tx0 + 10, y), _text_line(n), fill=(0, 0, 0), font=font)
    # Chart window: axes, grid and a polyline.
    cx0, cy0, cx1, cy1 = int(width * 0.62), bar + 16, int(width * 0.97), int(height * 0.48)
    draw.rectangle((cx0, cy0, cx1, cy1), fill=(250, 250, 245), outline=(60, 60, 60), width=2)
    for gx in range(cx0 + 20, cx1, 40):
        draw.line((gx, cy0 + 10, gx, cy1 - 10), fill=(210, 210, 210))
    for gy in range(cy0 + 20, cy1, 30):
        draw.line((cx0 + 10, gy, cx1 - 10, gy), fill=(210, 210, 210))
    span = max(cx1 - cx0 - 40, 1)
    points = [
        (cx0 + 20 + k, int((cy0 + cy1) / 2 + (cy1 - cy0) * 0.35 * np.sin(k / 23.0)))
        for k in range(0, span, 3)
    ]
    if len(points) > 1:
        draw.line(points, fill=(200, 30, 30), width=2)
    draw.text((cx0 + 12, cy0 + 6), "throughput (frames/s)", fill=(0, 0, 0), font=font)
    return img


def make_test_picture(width: int, height: int, path: Path | str) -> Path:
    """Write :func:`render_test_picture` as an RGB PNG to ``path`` and return the path."""
    out = Path(path)
    render_test_picture(width, height).save(out, format="PNG")
    return out
