"""The sharer's low quality layer (simulcast), sent while the relay asks for it.

A viewer whose link cannot carry the share at full quality gets, from the relay, the **low
layer**: the same picture with its lossy regions encoded again at a lower quality. Only the
sharer can make it (the relay never decodes), and it makes at most one, whatever the number
of viewers: the relay asks for it (``low_layer``, with the byte rate it should keep to) when
some viewer needs it and stops it when none does.

:class:`LowLayer` takes each update the :class:`~chatscreen.screen.encoders.ScreenEncoder` made and
the capture it came from: every ``jpeg`` region is marked ``layer: "full"`` and followed (at
the end of the frame) by the same rectangle as a smaller JPEG marked ``layer: "low"``; every
``h264`` region likewise, by a picture of a second H.264 stream of the same rectangle, encoded
at a capped bit rate (an IDR whenever the full stream's picture is one, so both layers' chains
start together: after a relay's ``need_idr``, or a new stream). Lossless regions and copies
stay unmarked: both layers share them, and the lossless refresh still makes a still screen
pixel-exact for every viewer.
"""

from __future__ import annotations

from dataclasses import replace

from chatscreen.client.screen import OutRect
from chatscreen.protocol.annexb import is_idr
from chatscreen.screen.codec import BGRA, encode_jpeg
from chatscreen.screen.encoders import Update
from chatscreen.screen.video import H264Encoder

LOW_JPEG_QUALITY = 40
LOW_JPEG_SUBSAMPLING = "420"
LOW_CRF = 30  # constant quality of the low H.264 stream; the VBV cap below bounds its rate
VIDEO_SHARE = 0.8  # of the rate the relay asks, what the H.264 stream may take
RETUNE = 0.3  # a new rate this far from the stream's makes a new stream (x264 keeps its cap)


class LowLayer:
    """Adds the low quality layer to updates; lives on the capture thread."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._video: H264Encoder | None = None
        self._video_rate = 0
        self._box: tuple[int, int, int, int] | None = None  # the low stream's rectangle
        self.streams = 0  # low H.264 streams started (tests, stats)

    def retune(self, rate: int) -> None:
        """The relay asked for another byte rate: the next low H.264 picture starts a stream
        capped at it, if it differs enough from the running one's."""
        self.rate = rate

    def close(self) -> None:
        if self._video is not None:
            self._video.close()
            self._video = None

    def add(self, img: BGRA, update: Update) -> Update:
        """``update`` (made from ``img``) with the low layer: its lossy regions marked
        ``full`` and their low versions after every other region."""
        if update.key or not any(r.enc in ("jpeg", "h264") for r in update.regions):
            return update
        regions: list[OutRect] = []
        low: list[OutRect] = []
        for r in update.regions:
            if r.enc == "jpeg":
                part = img[r.y : r.y + r.h, r.x : r.x + r.w]
                data = encode_jpeg(part, LOW_JPEG_QUALITY, LOW_JPEG_SUBSAMPLING)
            elif r.enc == "h264":
                data = self._h264(img, r)
            else:
                regions.append(r)
                continue
            regions.append(replace(r, layer="full"))
            low.append(OutRect(r.x, r.y, r.w, r.h, r.enc, data, layer="low"))
        return Update(update.key, regions + low, update.refreshed, update.move)

    def _h264(self, img: BGRA, r: OutRect) -> bytes:
        enc = self._video
        budget = int(self.rate * VIDEO_SHARE)
        box = (r.x, r.y, r.w, r.h)
        if (enc is None or self._box != box
                or abs(budget - self._video_rate) > RETUNE * self._video_rate):
            self.close()
            enc = self._video = H264Encoder(r.w, r.h, crf=LOW_CRF, maxrate=budget * 8,
                                            cabac=True)  # its bytes matter most
            self._box, self._video_rate = box, budget
            self.streams += 1
        return enc.encode(img[r.y : r.y + r.h, r.x : r.x + r.w], idr=is_idr(r.data))
