"""Where files' bytes live: content-addressed objects behind a small interface.

:class:`FileStore` is what the file service needs of a store: put a finished partial upload
under its SHA-256, open an object for reading at an offset, delete one, tell whether one
is there. :class:`LocalFileStore` keeps them in the data directory::

    files/objects/ab/abcdef...   one file per content (SHA-256 hex): stored once
    files/partial/<key>          uploads under way (the key is a hash, never a name)
    files/thumbs/<sha256>.png    previews

Directories are 0700 and files 0600, like the rest of the data directory. No path is ever
made from anything a client sent but a SHA-256 the server checked the form of (64 hex
digits) or computed itself. Every method blocks: the service calls them on a thread. A
shared store (S3, a shared disk) for several nodes implements the same methods.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import BinaryIO, Protocol

from chatscreen.server.datadir import DIR_MODE, FILE_MODE

_HEX64 = re.compile(r"[0-9a-f]{64}")


def _checked(sha256: str) -> str:
    if _HEX64.fullmatch(sha256) is None:  # a bug if it happens: ids are checked before
        raise ValueError(f"not a SHA-256: {sha256[:80]!r}")
    return sha256


class FileStore(Protocol):
    def put(self, partial: Path, sha256: str) -> bool:
        """Make the finished ``partial`` the object of ``sha256`` (it is moved, or dropped
        when that content is stored already). True if it was new."""

    def open(self, sha256: str, offset: int = 0) -> BinaryIO:
        """The object, open for reading at ``offset``. FileNotFoundError if absent."""

    def delete(self, sha256: str) -> None:
        """Remove the object and its preview (no error if absent)."""

    def has(self, sha256: str) -> bool: ...

    def size(self, sha256: str) -> int: ...

    def partial_path(self, key: str) -> Path:
        """Where an upload under way is written (``key``: hex, made by the server)."""

    def thumb_path(self, sha256: str) -> Path: ...


class LocalFileStore:
    """Objects in ``root`` (the data directory's ``files/``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "objects"
        self.partial = root / "partial"
        self.thumbs = root / "thumbs"

    def prepare(self) -> None:
        for d in (self.root, self.objects, self.partial, self.thumbs):
            d.mkdir(mode=DIR_MODE, exist_ok=True)

    def object_path(self, sha256: str) -> Path:
        h = _checked(sha256)
        return self.objects / h[:2] / h

    def thumb_path(self, sha256: str) -> Path:
        return self.thumbs / f"{_checked(sha256)}.png"

    def partial_path(self, key: str) -> Path:
        return self.partial / _checked(key)

    def put(self, partial: Path, sha256: str) -> bool:
        path = self.object_path(sha256)
        if path.exists():
            partial.unlink(missing_ok=True)
            return False
        path.parent.mkdir(mode=DIR_MODE, exist_ok=True)
        os.chmod(partial, FILE_MODE)
        os.replace(partial, path)
        return True

    def open(self, sha256: str, offset: int = 0) -> BinaryIO:
        f = open(self.object_path(sha256), "rb")  # noqa: SIM115 - the caller closes it
        if offset:
            f.seek(offset)
        return f

    def delete(self, sha256: str) -> None:
        self.object_path(sha256).unlink(missing_ok=True)
        self.thumb_path(sha256).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # its fan-out directory, when it is empty
            self.object_path(sha256).parent.rmdir()

    def has(self, sha256: str) -> bool:
        return self.object_path(sha256).exists()

    def size(self, sha256: str) -> int:
        return self.object_path(sha256).stat().st_size


def create_private(path: Path) -> int:
    """Open ``path`` for appending, made 0600 if new; returns the descriptor."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
