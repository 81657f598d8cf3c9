"""Files in chat, end to end: a real server, raw transfer links (tests/helpers/filelink.py),
real files on disk."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import sqlite3
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatscreen.client import Client
from chatscreen.errors import ServerError
from chatscreen.protocol import Message
from tests.helpers.filelink import FileLink, poll_until, sha256_file
from tests.helpers.rawchat import login_answer
from tests.helpers.server import (
    REPO,
    TIMEOUT,
    ServerProcess,
    frame,
    metrics,
    raw_socket,
    read_headers_until,
    run,
    running_server,
    wait_for,
)


async def login(srv: ServerProcess, name: str, room: str | None = "general") -> Client:
    c = await Client("127.0.0.1", name, chat_port=srv.chat_port, screen_port=srv.screen_port,
                     timeout=TIMEOUT).connect()
    if room is not None:
        await c.join(room)
    return c


def is_file_message(m: Message) -> bool:
    return m.type == "message" and m.get("kind") == "file"


def assert_private(srv: ServerProcess) -> None:
    """Everything of the file store is its owner's alone: directories 0700, files 0600."""
    for p in [srv.data_dir / "files", *(srv.data_dir / "files").rglob("*")]:
        mode = p.stat().st_mode & 0o777
        assert mode == (0o700 if p.is_dir() else 0o600), (p, oct(mode))


def objects(srv: ServerProcess) -> list[Path]:
    """The stored contents. The server may remove a folder while this looks (retention,
    deletion): os.walk skips what is gone, where Path.rglob raised FileNotFoundError."""
    return sorted(Path(top) / name
                  for top, _, names in os.walk(srv.data_dir / "files" / "objects")
                  for name in names)


def test_upload_download_round_trip_and_one_copy_of_the_same_content(
        server: ServerProcess) -> None:
    data = os.urandom(3 * (1 << 20) + 12345)
    sha = hashlib.sha256(data).hexdigest()

    async def scenario() -> None:
        alice, bob = await login(server, "alice"), await login(server, "bob")
        link = await FileLink.open(alice)
        # both welcomes say the largest file the server takes
        assert (await login_answer(server, "carl"))["limits"]["max_file_size"] == 10**8
        assert link.link.welcome["limits"]["max_file_size"] == 10**8
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
        # an empty file: ready, then uploaded without a chunk
        empty = await link.send_file(b"", "empty", room="general")
        assert empty.type == "uploaded" and empty["file"]["size"] == 0, empty.fields
        got, end = await blink.get_file(empty["file"]["id"])
        assert got == b"" and end["sha256"] == hashlib.sha256(b"").hexdigest()
        for c in (link, blink):
            await c.close()
        for cl in (alice, bob):
            await cl.close()

    run(scenario())
    assert not list((server.data_dir / "files" / "partial").iterdir())


def test_over_size_and_over_quota_are_refused_before_any_byte(tmp_path: Path) -> None:
    with running_server(tmp_path / "data", "--max-file-size", "10000",
                        "--file-quota", "15000") as srv:
        async def scenario() -> None:
            alice = await login(srv, "alice")
            link = await FileLink.open(alice)
            big = await link.ask_upload("big.bin", 10001, "0" * 64, room="general")
            assert big.type == "error" and big["code"] == "file_too_large", big.fields
            assert "10001" in big["message"] and "10000" in big["message"]
            assert big["rid"] == "u1" and not big.get("fatal")
            ok = await link.send_file(os.urandom(9000), room="general")
            assert ok.type == "uploaded"
            # an upload under way counts against the quota, before its bytes come
            first = await link.ask_upload("a.bin", 5000, "1" * 64, room="general")
            assert first.type == "upload_ready"
            over = await link.ask_upload("b.bin", 1001, "2" * 64, room="general")
            assert over.type == "error" and over["code"] == "quota_exceeded", over.fields
            assert "15000" in over["message"]
            # another name from the same address: its own quota, but not for more uploads
            # under way than one quota (new guest names cannot fill the disk)
            mallory = await login(srv, "mallory")
            mlink = await FileLink.open(mallory)
            ready = await mlink.ask_upload("m.bin", 9000, "7" * 64, room="general")
            assert ready.type == "upload_ready", ready.fields  # alice's 5000 + 9000
            await mlink.close()  # dropped: kept to be resumed, and counted
            await mallory.close()
            mallory = await login(srv, "mallory2")
            mlink = await FileLink.open(mallory)
            more = await mlink.ask_upload("m.bin", 2000, "9" * 64, room="general")
            assert more.type == "error" and more["code"] == "quota_exceeded", more.fields
            assert "address" in more["message"]
            await mlink.close()
            await mallory.close()
            # the connection goes on, and what fits in the quota is taken
            small = await link.send_file(b"tiny", room="general")
            assert small.type == "uploaded"
            await link.close()
            await alice.close()

        run(scenario())
        partial = sorted(p.stat().st_size for p in (srv.data_dir / "files" / "partial").iterdir())
        assert partial == [0, 0]  # the uploads under way, no bytes of the refused ones
        assert len(objects(srv)) == 2


def test_a_wrong_checksum_stores_nothing(server: ServerProcess) -> None:
    async def scenario() -> None:
        alice = await login(server, "alice")
        link = await FileLink.open(alice)
        data = os.urandom(100_000)
        ready = await link.ask_upload("x.bin", len(data), hashlib.sha256(b"other").hexdigest(),
                                      room="general")
        link.send("chunk", data, upload=ready["upload"], offset=0)
        answer = await link.next(lambda m: m.type in ("uploaded", "error"))
        assert answer.type == "error" and answer["code"] == "bad_checksum", answer.fields
        # and a chunk at the wrong place is refused with where to go on from
        ready = await link.ask_upload("y.bin", len(data), hashlib.sha256(data).hexdigest(),
                                      room="general")
        link.send("chunk", data[:10], upload=ready["upload"], offset=5)
        bad = await link.next(lambda m: m.type == "error")
        assert bad["code"] == "bad_offset" and bad["offset"] == 0
        link.send("cancel", upload=ready["upload"])
        await alice.say("general", "still here")
        await link.close()
        await alice.close()

    run(scenario())
    assert objects(server) == []
    assert list((server.data_dir / "files" / "partial").iterdir()) == []


def make_file(path: Path, size: int) -> Path:
    """A file of ``size`` pseudo-random bytes (fast: a random block repeated with a counter)."""
    block = os.urandom(1 << 20)
    with path.open("wb") as f:
        for i in range(0, size, len(block)):
            f.write((i.to_bytes(8, "big") + block[8:])[: size - i])
    return path


def resume_after_a_dropped_connection(srv: ServerProcess, path: Path) -> None:
    size = path.stat().st_size
    sha = sha256_file(path)

    async def scenario() -> None:
        alice = await login(srv, "alice")
        link = await FileLink.open(alice)
        half = await link.send_file(path, "big.bin", stop_at=size // 2, room="general")
        assert half.type == "upload_progress", half.fields
        link.link.writer.transport.abort()  # the connection dies half way
        await link.close()
        link = await FileLink.open(alice)
        done = await link.send_file(path, "big.bin", room="general")
        assert done.type == "uploaded", done.fields
        assert size // 2 <= link.started_at < size  # from what was stored, not from 0
        assert done["file"]["sha256"] == sha and done["file"]["size"] == size
        got = hashlib.sha256()
        n = 0
        link.send("download", file=done["file"]["id"])
        while True:
            m = await link.next(lambda m: m.type in ("file_data", "downloaded", "error"))
            if m.type != "file_data":
                break
            assert m["offset"] == n
            got.update(m.payload)
            n += len(m.payload)
        assert m.type == "downloaded" and got.hexdigest() == sha and n == size
        await link.close()
        await alice.close()

    run(scenario())
    assert [p.name for p in objects(srv)] == [sha]


def test_a_200_mb_upload_cut_half_way_resumes_from_the_stored_offset(
        tmp_path: Path) -> None:
    """About 4 s on an idle machine (upload, download and their hashes through TLS)."""
    with running_server(tmp_path / "data", "--max-file-size", str(300 << 20)) as srv:
        resume_after_a_dropped_connection(srv, make_file(tmp_path / "big.bin", 200 * 10**6))


HOSTILE = ["../../etc/passwd", "/abs", "C:\\x", "CON", "aux.txt", "..", "x" * 255,
           "a/../../b\\..\\c", "\u202ereversed"]


def test_hostile_names_are_text_and_touch_no_path(server: ServerProcess, tmp_path: Path) -> None:
    async def scenario() -> None:
        alice = await login(server, "alice")
        link = await FileLink.open(alice)
        for i, name in enumerate(HOSTILE):
            done = await link.send_file(f"content {i}".encode(), name, room="general")
            assert done.type == "uploaded", (name, done.fields)
            assert done["file"]["name"] == name
        for name in ("nul\x00.txt", "x" * 256, "line\nbreak", " "):
            answer = await link.ask_upload(name, 1, "0" * 64, room="general")
            assert answer.type == "error" and answer["code"] == "bad_message", name
        hist = await alice.history(room="general")
        assert [m["file"]["name"] for m in hist["messages"]] == HOSTILE
        await link.close()
        await alice.close()

    run(scenario())
    files = server.data_dir / "files"
    for p in files.rglob("*"):  # only hashes (and their fan-out) inside the store
        assert p.name in ("objects", "partial", "thumbs") or all(
            c in "0123456789abcdef." for c in p.name.removesuffix(".png")), p
    assert not any("passwd" in p.name or p.name in ("abs", "CON", "x")
                   for p in tmp_path.rglob("*"))


def png_bomb(side: int) -> bytes:
    """A PNG of ``side`` x ``side`` black pixels (1 bit each), its zeros deflated: a few
    kB that decode to side * side pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    row = b"\x00" * (1 + side // 8)
    z = zlib.compressobj(9)
    body = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body)
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [30000, 8000])
def test_a_decompression_bomb_is_stored_without_a_preview(server: ServerProcess,
                                                          side: int) -> None:
    """900 megapixels in about 100 kB (Pillow's own check refuses it), and 64 (over the
    server's 50, under twice that: refused from the header, before any pixel)."""
    bomb = png_bomb(side)
    assert len(bomb) < 200_000

    async def scenario() -> None:
        alice, bob = await login(server, "alice"), await login(server, "bob")
        link = await FileLink.open(alice)
        done = await link.send_file(bomb, "bomb.png", room="general")
        assert done.type == "uploaded", done.fields
        info = done["file"]
        assert info["mime"] == "image/png" and "thumb" not in info
        if side == 8000:
            assert (info["w"], info["h"]) == (8000, 8000)
        _, answer = await link.get_file(info["id"], thumb=True)
        assert answer.type == "error" and answer["code"] == "no_preview"
        got, answer = await link.get_file(info["id"])
        assert got == bomb
        # the server is fine: chat goes on
        await bob.say("general", "still here")
        await link.close()
        for c in (alice, bob):
            await c.close()

    run(scenario())
    assert server.proc is not None and server.proc.poll() is None


def test_previews_have_no_metadata_and_the_type_is_sniffed(server: ServerProcess) -> None:
    from PIL import Image

    im = Image.new("RGB", (1200, 800), (200, 30, 30))
    exif = Image.Exif()
    exif[0x013B] = "Secret Artist"  # Artist
    exif[0x010F] = "SpyCam"  # Make
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif.tobytes(), quality=90)
    jpeg = buf.getvalue()
    assert b"Secret Artist" in jpeg

    async def scenario() -> None:
        alice = await login(server, "alice")
        link = await FileLink.open(alice)
        done = await link.send_file(jpeg, "holiday.txt", room="general")  # named as text
        info = done["file"]
        assert info["mime"] == "image/jpeg" and (info["w"], info["h"]) == (1200, 800)
        assert info["thumb"] == {"w": 320, "h": 213}
        thumb, answer = await link.get_file(info["id"], thumb=True)
        assert answer.type == "downloaded" and answer["sha256"] == hashlib.sha256(
            thumb).hexdigest()
        assert b"Secret" not in thumb and b"SpyCam" not in thumb
        with Image.open(io.BytesIO(thumb)) as t:
            assert t.format == "PNG" and t.size == (320, 213)
            assert not t.getexif() and "exif" not in t.info
            assert t.convert("RGB").getpixel((160, 100)) == pytest.approx((200, 30, 30), abs=3)
        again = await link.send_file(jpeg, "again.jpg", room="general")  # described as before
        assert {k: v for k, v in again["file"].items() if k not in ("id", "name")} == {
            k: v for k, v in info.items() if k not in ("id", "name")}
        thumb2, _ = await link.get_file(again["file"]["id"], thumb=True)
        assert thumb2 == thumb
        text = await link.send_file(b"hello\nworld\n", "picture.png", room="general",
                                    mime="image/png")
        assert text["file"]["mime"] == "text/plain" and "thumb" not in text["file"]
        await link.close()
        await alice.close()

    run(scenario())
    assert_private(server)


PASSWORD = "files password 1"


def admin_cli(data: Path, *args: str) -> None:
    out = subprocess.run([sys.executable, "-m", "chatscreen", "admin", "--data-dir", str(data),
                          *args], capture_output=True, text=True, timeout=3 * TIMEOUT, cwd=REPO,
                         env={**os.environ, "CHATSCREEN_PASSWORD": PASSWORD})
    assert out.returncode == 0, out.stderr


@pytest.fixture
def accounts(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server with an admin account, boss (everyone else is a guest)."""
    data = tmp_path / "data"
    admin_cli(data, "create-admin", "boss")
    with running_server(data) as srv:
        yield srv


async def member(srv: ServerProcess, name: str) -> Client:
    c = await Client("127.0.0.1", name, chat_port=srv.chat_port, screen_port=srv.screen_port,
                     timeout=TIMEOUT, password=PASSWORD).connect()
    await c.join("general")
    return c


def test_private_files_reach_only_their_conversation(accounts: ServerProcess) -> None:
    async def scenario() -> None:
        alice, bob, carol = [await login(accounts, n) for n in ("alice", "bob", "carol")]
        await alice.register(PASSWORD)  # (a guest may not make a private room)
        links = {c.user: await FileLink.open(c) for c in (alice, bob, carol)}
        # a private message's file: alice and bob only
        pm = await links["alice"].send_file(b"for bob only", "pm.txt", to="bob")
        assert pm.type == "uploaded", pm.fields
        seen = await wait_for(bob, is_file_message)
        assert seen["to"] == "bob" and seen["file"]["id"] == pm["file"]["id"]
        got, end = await links["bob"].get_file(pm["file"]["id"])
        assert got == b"for bob only" and end.type == "downloaded"
        # a private room's file: its members only
        await alice.create_room("secret", private=True)
        await alice.invite("secret", "bob")
        room = await links["alice"].send_file(b"for the room", "room.txt", room="secret")
        assert room.type == "uploaded", room.fields
        got, end = await links["bob"].get_file(room["file"]["id"])
        assert got == b"for the room"
        # what a file is, before downloading it: for bob, yes
        links["bob"].send("file_info", file=pm["file"]["id"], rid="i1")
        info = await links["bob"].next(lambda m: m.type in ("file_info", "error"))
        assert info.type == "file_info" and info["file"] == pm["file"] and info["rid"] == "i1"
        # carol: as if neither existed, like an id never given out
        for file_id in (pm["file"]["id"], room["file"]["id"], "A" * 22):
            got, end = await links["carol"].get_file(file_id)
            assert end.type == "error" and end["code"] == "no_such_file" and got == b""
            links["carol"].send("file_info", file=file_id, rid="i2")
            info = await links["carol"].next(lambda m: m.type in ("file_info", "error"))
            assert info["code"] == "no_such_file" and info["re"] == "file_info"
            for thumb in (True,):
                _, end = await links["carol"].get_file(file_id, thumb=thumb)
                assert end["code"] == "no_such_file"
        # nor may she post into the private room
        refused = await links["carol"].send_file(b"x", room="secret")
        assert refused.type == "error" and refused["code"] == "forbidden"
        hist = await carol.history(room="general")
        assert not [m for m in hist["messages"] if m.get("kind") == "file"]
        for link in links.values():
            await link.close()
        for c in (alice, bob, carol):
            await c.close()

    run(scenario())


def test_delete_takes_a_file_out_of_reach_and_off_the_disk(accounts: ServerProcess) -> None:
    data = os.urandom(50_000)
    sha = hashlib.sha256(data).hexdigest()

    async def scenario() -> None:
        alice, bob = await login(accounts, "alice"), await login(accounts, "bob")
        mod = await member(accounts, "boss")
        link, blink = await FileLink.open(alice), await FileLink.open(bob)
        one = await link.send_file(data, "one.bin", room="general")
        two = await link.send_file(data, "two.bin", room="general")
        # bob may not delete alice's message
        with pytest.raises(ServerError) as info:
            await bob._request("delete", id=one["id"])
        assert info.value.code == "forbidden"
        # alice deletes hers: everyone who got it is told, the file is gone at once
        answer = await alice._request("delete", id=one["id"])
        assert answer.type == "deleted" and answer["id"] == one["id"]
        told = await wait_for(bob, lambda m: m.type == "deleted")
        assert told["id"] == one["id"] and told["room"] == "general"
        _, end = await blink.get_file(one["file"]["id"])
        assert end["code"] == "no_such_file"
        assert [p.name for p in objects(accounts)] == [sha]  # two.bin still refers to it
        # an admin deletes the other: the content leaves the disk
        await mod._request("delete", id=two["id"])
        _, end = await blink.get_file(two["file"]["id"])
        assert end["code"] == "no_such_file"
        assert objects(accounts) == []
        hist = await bob.history(room="general")
        assert [m for m in hist["messages"] if m.get("kind") == "file"] == []
        with pytest.raises(ServerError) as info:
            await alice._request("delete", id=two["id"])
        assert info.value.code == "no_such_message"
        for c in (link, blink):
            await c.close()
        for cl in (alice, bob, mod):
            await cl.close()

    run(scenario())


def test_an_upload_does_not_hold_up_another_users_chat(server: ServerProcess,
                                                       tmp_path: Path) -> None:
    """Behaviour, not speed: while alice uploads as fast as she can, bob's chat round trips
    stay far under a second (bounded generously: the machine is shared)."""
    path = make_file(tmp_path / "upload.bin", 80 << 20)

    async def scenario() -> None:
        alice, bob = await login(server, "alice"), await login(server, "bob")
        link = await FileLink.open(alice)
        upload = asyncio.create_task(link.send_file(path, "upload.bin", room="general"))
        async with asyncio.timeout(3 * TIMEOUT):
            await link.progress.wait()  # under way
        rtts: list[float] = []
        loop = asyncio.get_running_loop()
        while not upload.done() or len(rtts) < 5:
            start = loop.time()
            await bob.say("general", f"ping {len(rtts)}")
            rtts.append(loop.time() - start)
        assert (await upload).type == "uploaded"
        assert len(rtts) >= 5 and max(rtts) < 2.0, rtts
        print(f"{len(rtts)} chat round trips during an 80 MiB upload: max "
              f"{1e3 * max(rtts):.1f} ms, median {1e3 * sorted(rtts)[len(rtts) // 2]:.1f} ms")
        await link.close()
        for c in (alice, bob):
            await c.close()

    run(scenario())


def test_a_ban_cuts_the_users_transfers_and_drops_their_partial(accounts: ServerProcess,
                                                                tmp_path: Path) -> None:
    path = make_file(tmp_path / "upload.bin", 64 << 20)
    partial = accounts.data_dir / "files" / "partial"

    async def scenario() -> None:
        alice, boss = await login(accounts, "alice"), await member(accounts, "boss")
        link = await FileLink.open(alice)
        half = await link.send_file(path, "upload.bin", stop_at=8 << 20, room="general")
        assert half.type == "upload_progress"
        assert [p.stat().st_size > 0 for p in partial.iterdir()] == [True]
        await boss._request("moderate", action="ban", target="alice")
        async with asyncio.timeout(TIMEOUT):
            await link.link.closed.wait()  # her transfer link is closed at once
        # and what she sent is dropped
        await asyncio.to_thread(poll_until, lambda: not any(partial.iterdir()))
        await link.close()
        for c in (alice, boss):
            await c.close()

    run(scenario())
    assert objects(accounts) == []


def test_files_past_their_retention_expire_and_their_messages_stay(tmp_path: Path) -> None:
    with running_server(tmp_path / "data", "--file-retention", "2") as srv:
        async def scenario() -> None:
            alice = await login(srv, "alice")
            link = await FileLink.open(alice)
            done = await link.send_file(b"short-lived", "old.txt", room="general")
            assert done.type == "uploaded"
            got, end = await link.get_file(done["file"]["id"])
            assert got == b"short-lived"
            await asyncio.to_thread(poll_until, lambda: not objects(srv), 5 * TIMEOUT)
            _, end = await link.get_file(done["file"]["id"])
            assert end.type == "error" and end["code"] == "no_such_file"
            hist = await alice.history(room="general")
            (m,) = hist["messages"]
            assert m["kind"] == "file" and m["file"]["expired"] is True
            assert m["file"]["name"] == "old.txt" and "thumb" not in m["file"]
            await link.close()
            await alice.close()

        run(scenario())


def test_chunks_pay_the_upload_budget_not_the_screen_one(tmp_path: Path) -> None:
    """A screen byte budget of 1 MiB/s (and a 2 s flood timeout) does not slow a 24 MiB
    upload, which would otherwise take 24 s and be cut off as a flood."""
    env = {"CHATSCREEN_SCREEN_RATE_BYTES": str(1 << 20),
           "CHATSCREEN_SCREEN_RATE_BYTES_PER_ADDRESS": str(1 << 20),
           "CHATSCREEN_FLOOD_TIMEOUT": "2"}
    with running_server(tmp_path / "data", env=env) as srv:
        async def scenario() -> None:
            alice = await login(srv, "alice")
            link = await FileLink.open(alice)
            data = os.urandom(24 << 20)
            done = await link.send_file(data, room="general")
            assert done.type == "uploaded", done.fields
            await link.close()
            await alice.close()

        run(scenario())


def test_uploads_at_once_are_capped_and_the_window_is_enforced(tmp_path: Path) -> None:
    """(An upload budget of 1 MiB/s holds acknowledgements back past the first window, so
    that a client sending three windows at once is past it whatever the timing.)"""
    with running_server(tmp_path / "data", "--uploads-per-user", "2",
                        "--upload-rate-bytes", str(1 << 20)) as srv:
        async def scenario() -> None:
            alice = await login(srv, "alice")
            link = await FileLink.open(alice)
            readies = [await link.ask_upload(f"{i}.bin", 1000, f"{i}" * 64, room="general")
                       for i in range(2)]
            assert [r.type for r in readies] == ["upload_ready"] * 2
            third = await link.ask_upload("2.bin", 1000, "2" * 64, room="general")
            assert third.type == "error" and third["code"] == "limit_reached", third.fields
            # a cancelled one frees its place
            link.send("cancel", upload=readies[0]["upload"])
            fourth = await link.ask_upload("3.bin", 1000, "3" * 64, room="general")
            assert fourth.type == "upload_ready", fourth.fields
            await link.close()
            # a client sending past the window is cut off
            link = await FileLink.open(alice)
            size = 64 << 20
            ready = await link.ask_upload("w.bin", size, "4" * 64, room="general")
            chunk, window = ready["chunk"], ready["window"]
            for offset in range(0, 3 * window, chunk):
                link.send("chunk", b"\0" * chunk, upload=ready["upload"], offset=offset)
            async with asyncio.timeout(TIMEOUT):
                await link.link.closed.wait()
            reason = link.link.close_reason
            assert isinstance(reason, ServerError) and "window" in reason.message, reason
            await link.close()
            await alice.close()

        run(scenario())


def test_a_download_goes_as_fast_as_the_reader_reads(tmp_path: Path) -> None:
    """A downloader reading slowly makes the server read no further ahead of it than its
    connection's buffers (about 2 MiB): it does not take the file into memory."""
    with running_server(tmp_path / "data", env={"CHATSCREEN_METRICS_PORT": "0"}) as srv:
        path = make_file(tmp_path / "big.bin", 64 << 20)

        async def upload() -> tuple[str, str]:
            alice = await login(srv, "alice")
            link = await FileLink.open(alice)
            done = await link.send_file(path, room="general")
            await link.close()
            assert alice.token is not None
            return done["file"]["id"], alice.token

        async def scenario() -> None:
            file_id, token = await upload()
            await asyncio.to_thread(slow_download, file_id, token)

        def slow_download(file_id: str, token: str) -> None:
            with raw_socket(srv, srv.screen_port, rcvbuf=1 << 16) as sock:
                sock.sendall(frame({"type": "hello", "v": 1, "token": token}))
                read_headers_until(sock, lambda h: h["type"] == "welcome")
                sock.sendall(frame({"type": "download", "file": file_id}))
                got = 0  # bytes read off the socket, in small reads
                for target in (4 << 20, 16 << 20, 24 << 20):
                    while got < target:
                        data = sock.recv(1 << 14)
                        assert data
                        got += len(data)
                    sent = metrics(srv)['chatscreen_file_bytes_total{direction="out"}']
                    assert sent - got < 8 << 20, (sent, got)

        run(scenario())


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_an_animated_picture_is_previewed_by_its_first_frame(server: ServerProcess,
                                                             fmt: str) -> None:
    from PIL import Image

    frames = [Image.new("RGB", (640, 640), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0,
                   **({"lossless": True} if fmt == "WEBP" else {}))
    mime = f"image/{fmt.lower()}"

    async def scenario() -> None:
        alice = await login(server, "alice")
        link = await FileLink.open(alice)
        done = await link.send_file(buf.getvalue(), "anim", room="general")
        info = done["file"]
        assert info["mime"] == mime and info["thumb"] == {"w": 320, "h": 320}, info
        thumb, _ = await link.get_file(info["id"], thumb=True)
        with Image.open(io.BytesIO(thumb)) as t:
            assert t.format == "PNG" and getattr(t, "n_frames", 1) == 1
            assert t.convert("RGB").getpixel((160, 160)) == pytest.approx((255, 0, 0), abs=40)
        await link.close()
        await alice.close()

    run(scenario())


def test_a_dropped_upload_resumes_after_a_server_restart(tmp_path: Path) -> None:
    data = os.urandom(20 << 20)
    sha = hashlib.sha256(data).hexdigest()
    with running_server(tmp_path / "data") as srv:
        async def first() -> int:
            alice = await login(srv, "alice")
            link = await FileLink.open(alice)
            half = await link.send_file(data, stop_at=10 << 20, room="general")
            await link.close()
            await alice.close()
            stored: int = half["offset"]
            return stored

        stored = run(first())
        srv.stop()
        srv.start()

        async def second() -> None:
            alice = await login(srv, "alice")
            link = await FileLink.open(alice)
            done = await link.send_file(data, room="general")
            assert done.type == "uploaded" and done["file"]["sha256"] == sha
            assert link.started_at >= stored  # hashed again from the disk, not sent again
            got, _ = await link.get_file(done["file"]["id"])
            assert got == data
            await link.close()
            await alice.close()

        run(second())


def test_file_rooms_limits_where_files_go_and_settings_layer(tmp_path: Path) -> None:
    """file_rooms from the TOML file, max_file_size from the environment over it, and a
    flag over both (defaults < TOML < env < flags)."""
    config = tmp_path / "server.toml"
    config.write_text('[server]\nfile_rooms = "general"\nmax_file_size = 10\n'
                      'file_quota = 50\n')
    env = {"CHATSCREEN_MAX_FILE_SIZE": "20", "CHATSCREEN_FILE_QUOTA": "60"}
    with running_server(tmp_path / "data", "--config", str(config), "--file-quota", "1000",
                        env=env) as srv:
        async def scenario() -> None:
            alice, bob = await login(srv, "alice"), await login(srv, "bob")
            await alice.join("other")
            link = await FileLink.open(alice)
            ok = await link.send_file(b"x" * 20, room="general")  # env's 20, not TOML's 10
            assert ok.type == "uploaded", ok.fields
            big = await link.ask_upload("b", 21, "0" * 64, room="general")
            assert big["code"] == "file_too_large"
            for where in ({"room": "other"}, {"to": "bob"}):
                refused = await link.ask_upload("c", 1, "0" * 64, **where)
                assert refused.type == "error" and refused["code"] == "forbidden", where
            # the flag's quota (1000), not the environment's (60) nor the file's (50)
            for _ in range(3):
                assert (await link.send_file(os.urandom(20), room="general")).type == "uploaded"
            await link.close()
            for c in (alice, bob):
                await c.close()

        run(scenario())


def test_files_whose_message_was_never_stored_are_swept_at_start(tmp_path: Path) -> None:
    """A server stopped between storing a file and its message (here: rows made by hand)
    leaves files nothing refers to: the next start removes them, content included."""
    data = tmp_path / "data"
    with running_server(data) as srv:
        async def post() -> str:
            alice = await login(srv, "alice")
            link = await FileLink.open(alice)
            done = await link.send_file(b"kept", room="general")
            await link.close()
            await alice.close()
            sha: str = done["file"]["sha256"]
            return sha

        kept = run(post())
    orphan = hashlib.sha256(b"orphan").hexdigest()
    obj = data / "files" / "objects" / orphan[:2] / orphan
    obj.parent.mkdir(mode=0o700, exist_ok=True)
    obj.write_bytes(b"orphan")
    with sqlite3.connect(data / "chatscreen.db") as db:
        for file_id, message in (("o" * 22, None), ("p" * 22, 10**6)):
            db.execute("INSERT INTO files (id, sha256, name, size, mime, user, room, created, "
                       "message) VALUES (?, ?, 'x', 6, 'text/plain', 'alice', 'general', 0, ?)",
                       (file_id, orphan, message))
    db.close()
    with running_server(data) as srv:
        assert [p.name for p in objects(srv)] == [kept]


def test_a_muted_user_posts_no_file_and_nobody_absent_gets_one(accounts: ServerProcess
                                                               ) -> None:
    async def scenario() -> None:
        alice, boss = await login(accounts, "alice"), await member(accounts, "boss")
        link = await FileLink.open(alice)
        absent = await link.ask_upload("x", 1, "0" * 64, to="nobody")
        assert absent.type == "error" and absent["code"] == "no_such_user"
        notjoined = await link.ask_upload("x", 1, "0" * 64, room="elsewhere")
        assert notjoined.type == "error" and notjoined["code"] == "not_in_room"
        await boss._request("moderate", action="mute", target="alice")
        muted = await link.ask_upload("x", 1, "0" * 64, room="general")
        assert muted.type == "error" and muted["code"] == "muted" and not muted.get("fatal")
        await link.close()
        for c in (alice, boss):
            await c.close()

    run(scenario())
