"""The picture types every stage of the screen pipeline passes on, and its decoding error
(below both :mod:`codec` and :mod:`video`, so that neither imports the other for them)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from chatscreen.errors import ChatscreenError

RGB = npt.NDArray[np.uint8]  # H x W x 3
BGRA = npt.NDArray[np.uint8]  # H x W x 4


class DecodeError(ChatscreenError):
    """Data that is not a picture of its encoding, or not of its rectangle's size."""
