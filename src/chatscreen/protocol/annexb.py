"""H.264 Annex B byte streams, read without decoding: which NAL units an access unit holds.

Pure and dependency-free, so that the relay (which never decodes a picture and does not load
PyAV) can tell a keyframe from a P-frame. An Annex B stream is NAL units each behind a start
code (``00 00 01``, or ``00 00 00 01``); the low 5 bits of the byte after the start code are
the unit's ``nal_unit_type`` (5: a slice of an IDR picture, 7: SPS, 8: PPS). Emulation
prevention guarantees that ``00 00 01`` occurs nowhere else, so a ``find`` per unit suffices.
"""

from __future__ import annotations

NAL_IDR = 5
NAL_SPS = 7
NAL_PPS = 8
MAX_NALS = 4096  # more NAL units than this in one access unit: not from a sane encoder


def nal_types(data: bytes) -> list[int]:
    """The ``nal_unit_type`` of every NAL unit of an Annex B byte stream, in order (at most
    ``MAX_NALS``); empty if ``data`` does not start with a start code."""
    if not (data.startswith(b"\x00\x00\x01") or data.startswith(b"\x00\x00\x00\x01")):
        return []
    out: list[int] = []
    pos = data.find(b"\x00\x00\x01")
    while pos >= 0 and len(out) < MAX_NALS:
        head = pos + 3
        if head < len(data):
            out.append(data[head] & 0x1F)
        pos = data.find(b"\x00\x00\x01", head)
    return out


def is_idr(data: bytes) -> bool:
    """Is this access unit a keyframe: an IDR picture with its SPS and PPS, which decodes
    (and lets what follows it decode) without anything sent before it?"""
    types = nal_types(data)
    return NAL_IDR in types and NAL_SPS in types and NAL_PPS in types
