"""The chatscreen wire protocol: pure code, no I/O.

``framing`` turns bytes into frames and back, ``schema`` validates what a frame says, and
``connection`` is the per-connection state machine (handshake first, then requests) that the
TCP adapters in ``chatscreen.server`` and ``chatscreen.client`` drive.
"""

from chatscreen.protocol.connection import PROTOCOL_VERSION, Connection, Role, State
from chatscreen.protocol.framing import Frame, FrameDecoder, Limits, encode_frame
from chatscreen.protocol.schema import Message, parse_message

__all__ = [
    "PROTOCOL_VERSION",
    "Connection",
    "Frame",
    "FrameDecoder",
    "Limits",
    "Message",
    "Role",
    "State",
    "encode_frame",
    "parse_message",
]
