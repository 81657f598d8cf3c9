"""Files in chat, end to end: a real server, raw transfer links (tests/helpers/filelink.py),
real files on disk."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from chatscreen.client import Client
from chatscreen.protocol import Message
from tests.helpers.filelink import FileLink
from tests.helpers.server import TIMEOUT, ServerProcess, run, wait_for


async def login(srv: ServerProcess, name: str, room: str | None = "general") -> Client:
    c = await Client("127.0.0.1", name, chat_port=srv.chat_port, screen_port=srv.screen_port,
                     timeout=TIMEOUT).connect()
    if room is not None:
        await c.join(room)
    return c


def is_file_message(m: Message) -> bool:
    return m.type == "message" and m.get("kind") == "file"


def objects(srv: ServerProcess) -> list[Path]:
    return sorted(p for p in (srv.data_dir / "files" / "objects").rglob("*") if p.is_file())


def test_upload_download_round_trip_and_one_copy_of_the_same_content(
        server: ServerProcess) -> None:
    data = os.urandom(3 * (1 << 20) + 12345)
    sha = hashlib.sha256(data).hexdigest()

    async def scenario() -> None:
        alice, bob = await login(server, "alice"), await login(server, "bob")
        link = await FileLink.open(alice)
        done = await link.send_file(data, "report.bin", room="general")
        assert done.type == "uploaded", done.fields
        info = done["file"]
        assert info["size"] == len(data) and info["sha256"] == sha
        assert info["name"] == "report.bin" and info["mime"] == "application/octet-stream"
        # the chat message, to the room, after the answer's message was stored
        seen = await wait_for(bob, is_file_message)
        assert seen["id"] == done["id"] and seen["file"] == info and seen["room"] == "general"
        assert seen["user"] == "alice" and "report.bin" in seen["text"]
        # bob downloads it: the same bytes
        blink = await FileLink.open(bob)
        got, end = await blink.get_file(info["id"])
        assert end.type == "downloaded", end.fields
        assert got == data and end["sha256"] == sha and end["size"] == len(data)
        # resumed from an offset
        tail, end = await blink.get_file(info["id"], offset=len(data) - 1000)
        assert tail == data[-1000:] and end.type == "downloaded"
        # the same content again, under another name: a second file, one object on disk
        again = await link.send_file(data, "copy.bin", room="general")
        assert again.type == "uploaded" and again["file"]["id"] != info["id"]
        assert [p.name for p in objects(server)] == [sha]
        # in history, with its file
        hist = await alice.history(room="general")
        files = [m["file"] for m in hist["messages"] if m.get("kind") == "file"]
        assert [f["name"] for f in files] == ["report.bin", "copy.bin"]
        for c in (link, blink):
            await c.close()
        for cl in (alice, bob):
            await cl.close()

    run(scenario())
    assert not list((server.data_dir / "files" / "partial").iterdir())
