"""Files spoken by hand on a screen-port connection (the protocol's "Files" section), for the
server's tests: not the client library's upload/download, so that the tests see every
message and can stop anywhere."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chatscreen.client import Client
from chatscreen.client.link import Link
from chatscreen.protocol import Message
from tests.helpers.server import TIMEOUT


class FileLink:
    def __init__(self, link: Link) -> None:
        self.link = link
        self.inbox: asyncio.Queue[Message | None] = asyncio.Queue()
        self.started_at = -1  # the offset the last send_file started from (upload_ready's)
        self.progress = asyncio.Event()  # set at each upload_progress send_file sees
        link.start(self.inbox.put_nowait, lambda _: self.inbox.put_nowait(None))

    @classmethod
    async def open(cls, c: Client) -> FileLink:
        assert c.token is not None
        return cls(await Link.open(c.host, c.screen_port, TIMEOUT, c.tls, token=c.token))

    async def next(self, pred: Callable[[Message], bool] = lambda m: True,
                   timeout: float = TIMEOUT) -> Message:
        """The next message satisfying ``pred`` (others are skipped); AssertionError when
        the connection closed first."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.inbox.get()
                assert msg is not None, f"closed: {self.link.close_reason!r}"
                if pred(msg):
                    return msg

    def send(self, type_: str, payload: bytes = b"", **fields: Any) -> None:
        self.link.send_with_payload(type_, payload, **fields)

    async def ask_upload(self, name: str, size: int, sha256: str, **where: Any) -> Message:
        """Send ``upload``; its answer: upload_ready or an error."""
        self.send("upload", name=name, size=size, sha256=sha256, rid="u1", **where)
        return await self.next(lambda m: m.type in ("upload_ready", "error"))

    async def send_file(self, data: bytes | Path, name: str = "f.bin", *,
                        stop_at: int | None = None, sha256: str | None = None,
                        **where: Any) -> Message:
        """Upload ``data`` (bytes, or a file read as it goes) within the window; the final
        answer (``uploaded`` or an error). ``stop_at``: stop once that many bytes are
        acknowledged, and return the last ``upload_progress``. ``sha256``: the file's, if
        known (else it is computed first)."""
        if isinstance(data, Path):
            size, sha = await asyncio.to_thread(lambda: (data.stat().st_size,
                                                        sha256 or sha256_file(data)))
        else:
            size, sha = len(data), hashlib.sha256(data).hexdigest()
        ready = await self.ask_upload(name, size, sha, **where)
        if ready.type == "error":
            return ready
        uid, chunk, window = ready["upload"], ready["chunk"], ready["window"]
        self.started_at = ready["offset"]
        sent = acked = ready["offset"]
        f = await asyncio.to_thread(data.open, "rb") if isinstance(data, Path) else None
        try:
            while True:
                while sent < size and sent - acked + chunk <= window:
                    n = min(chunk, size - sent)
                    if f is not None:
                        piece = await asyncio.to_thread(_read_at, f, sent, n)
                    else:
                        assert isinstance(data, bytes)
                        piece = data[sent : sent + n]
                    self.send("chunk", piece, upload=uid, offset=sent)
                    sent += n
                await self.link.drain()
                msg = await self.next(lambda m: m.type in ("upload_progress", "uploaded", "error"))
                if msg.type != "upload_progress":
                    return msg
                acked = msg["offset"]
                self.progress.set()
                if stop_at is not None and acked >= stop_at:
                    return msg
        finally:
            if f is not None:
                f.close()

    async def get_file(self, file_id: str, *, offset: int = 0, thumb: bool = False
                       ) -> tuple[bytes, Message]:
        """Download; the bytes and the final answer (``downloaded`` or an error)."""
        fields: dict[str, Any] = {"file": file_id, "rid": "d1"}
        if offset:
            fields["offset"] = offset
        if thumb:
            fields["thumb"] = True
        self.send("download", **fields)
        parts: list[bytes] = []
        while True:
            msg = await self.next(lambda m: m.type in ("file_data", "downloaded", "error"))
            if msg.type != "file_data":
                return b"".join(parts), msg
            assert msg["offset"] == offset + sum(map(len, parts))
            parts.append(msg.payload)

    async def close(self) -> None:
        await self.link.close()


def poll_until(pred: Callable[[], bool], timeout: float = TIMEOUT, every: float = 0.02) -> None:
    """Poll ``pred`` until it holds, within ``timeout`` (AssertionError past it): for what
    the server does on its own time, off any message (a file removed from its disk)."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"not so within {timeout} s"
        time.sleep(every)


def _read_at(f: Any, offset: int, n: int) -> bytes:
    f.seek(offset)
    data: bytes = f.read(n)
    return data


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
