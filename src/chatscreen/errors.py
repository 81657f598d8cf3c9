"""One exception root for chatscreen.

    ChatscreenError
    ├── ProtocolError            the wire protocol was violated
    │   ├── RemoteProtocolError  ... by the peer (it gets an error frame and is closed)
    │   │   └── RequestError     ... in one request of a known type: only that one is refused
    │   └── LocalProtocolError   ... by our own code (a bug: we tried to send something invalid)
    ├── ServerError              the server answered a request with an error frame
    ├── InvalidInput             a client refused to send a request the server would refuse
    └── ConnectError             we could not reach or log in to the server

Every error that is sent over the wire carries a stable ``code`` (see :class:`ErrorCode`)
and a human message.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Stable error codes, sent in ``error`` frames. Never renumber or rename."""

    BAD_FRAME = "bad_frame"
    FRAME_TOO_LARGE = "frame_too_large"
    BAD_MESSAGE = "bad_message"
    UNEXPECTED = "unexpected_message"
    UNSUPPORTED_VERSION = "unsupported_version"
    INVALID_NAME = "invalid_name"
    NAME_TAKEN = "name_taken"
    NO_SUCH_ROOM = "no_such_room"
    ROOM_EXISTS = "room_exists"
    NOT_IN_ROOM = "not_in_room"
    NO_SUCH_USER = "no_such_user"
    NO_SUCH_SHARE = "no_such_share"
    NOT_SHARING = "not_sharing"
    SHARE_TOO_LARGE = "share_too_large"  # a share (or key frame) over max_share_pixels
    SHARE_OVER_BUDGET = "share_over_budget"  # a share's pictures past its memory bound
    NEED_KEY_IGNORED = "need_key_ignored"  # deltas long after need_key, and no key frame
    BAD_TOKEN = "bad_token"
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"
    TOO_SLOW = "too_slow"
    REPLACED = "replaced"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    LIMIT_REACHED = "limit_reached"
    SHUTDOWN = "shutdown"
    BAD_PASSWORD = "bad_password"
    ACCOUNT_REQUIRED = "account_required"
    BANNED = "banned"
    MUTED = "muted"
    FORBIDDEN = "forbidden"
    KICKED = "kicked"
    INTERNAL = "internal"
    # files (docs/protocol.md, "Files")
    FILE_TOO_LARGE = "file_too_large"
    QUOTA_EXCEEDED = "quota_exceeded"
    BAD_OFFSET = "bad_offset"
    BAD_CHECKSUM = "bad_checksum"
    NO_SUCH_FILE = "no_such_file"
    NO_PREVIEW = "no_preview"
    NO_SUCH_UPLOAD = "no_such_upload"
    NO_SUCH_MESSAGE = "no_such_message"


class ChatscreenError(Exception):
    """Root of every exception chatscreen raises on purpose."""


class ProtocolError(ChatscreenError):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""


class RequestError(RemoteProtocolError):
    """A well-framed message of a known type whose fields are wrong (too long a text, a bad
    name...). After the handshake it is answered with a non-fatal error for that request
    (``re``: its type, and its ``rid``/``cid`` in ``ids``); the connection stays open."""

    def __init__(self, code: ErrorCode, message: str, request: str,
                 ids: dict[str, str]) -> None:
        super().__init__(code, message)
        self.request = request
        self.ids = ids


class LocalProtocolError(ProtocolError):
    """Our own code tried to send something the protocol does not allow."""


class ServerError(ChatscreenError):
    """The server refused a request; ``code`` is an :class:`ErrorCode` value."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class InvalidInput(ChatscreenError):
    """A request the client does not send: it breaks a limit the server announced (a text
    too long, a bad name). The message is meant for the user as is."""


class ConnectError(ChatscreenError):
    """Connecting or logging in failed; the message is meant for the user as is."""
