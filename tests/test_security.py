"""The security suite on the real server (TLS, as shipped), for the attacks of the threat
model (docs/security.md) not covered beside their feature: requests before login, screen
tokens, slowloris, floods, connection limits.

Elsewhere: wrong server and user passwords and brute force (test_accounts), a changed
certificate (test_tls), bans, mutes and moderation rights (test_moderation), oversize and
malformed frames (test_chat), fuzzing (test_fuzz), who may watch a share (test_screen).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import socket
import ssl
import time
from pathlib import Path
from typing import Any

from chatscreen.client import Client
from chatscreen.protocol import encode_frame
from chatscreen.protocol.schema import CLIENT_MESSAGES
from tests.helpers.server import (
    TIMEOUT,
    ServerProcess,
    frame,
    raw_exchange,
    raw_socket,
    read_headers,
    run,
    running_server,
)

# One well-formed request of every kind a client may send (hello aside).
REQUESTS: dict[str, dict[str, Any]] = {
    "ping": {}, "pong": {}, "rooms": {}, "create": {"room": "den"},
    "invite": {"room": "den", "user": "bob"}, "join": {"room": "general"},
    "leave": {"room": "general"}, "who": {"room": "general"},
    "say": {"room": "general", "text": "hi"}, "pm": {"to": "bob", "text": "hi"},
    "typing": {"active": True, "room": "general"}, "history": {"room": "general"},
    "register": {"password": "a long enough password"},
    "read": {"room": "general", "id": 1}, "decline": {"room": "den"},
    "moderate": {"action": "kick", "target": "bob"},
    "share": {"w": 64, "h": 64}, "unshare": {}, "watch": {"share": 1}, "unwatch": {"share": 1},
    "cursor": {"x": 10, "y": 10},
    "frame": {"seq": 1, "w": 64, "h": 64, "key": True,
              "rects": [{"x": 0, "y": 0, "w": 1, "h": 1, "enc": "raw", "len": 3}]},
    "delete": {"id": 1},
    "upload": {"name": "x", "size": 3, "sha256": "0" * 64, "room": "general"},
    "chunk": {"upload": "A" * 22, "offset": 0}, "cancel": {"upload": "A" * 22},
    "download": {"file": "A" * 22}, "file_info": {"file": "A" * 22},
}


def request(kind: str) -> bytes:
    fields = REQUESTS[kind]
    return encode_frame({"type": kind, **fields},
                        b"\0\0\0" if kind in ("frame", "chunk") else b"")


def client(srv: ServerProcess, user: str) -> Client:
    return Client("127.0.0.1", user, chat_port=srv.chat_port, screen_port=srv.screen_port,
                  timeout=TIMEOUT)


def test_every_request_before_login_is_refused(server: ServerProcess) -> None:
    """On both ports, anything but hello as the first message ends the connection with
    unexpected_message, whatever it asks for; the server carries on."""
    assert set(REQUESTS) == set(CLIENT_MESSAGES) - {"hello"}, "a new request: add it here"
    for port in (server.chat_port, server.screen_port):
        for kind in REQUESTS:
            headers = raw_exchange(server, port, request(kind))
            assert [h["type"] for h in headers] == ["error"], (port, kind, headers)
            assert headers[0]["code"] == "unexpected_message" and headers[0]["fatal"], kind

    async def still_serving() -> None:
        async with client(server, "after") as c:
            await c.join("general")

    run(still_serving())


def screen_hello(srv: ServerProcess, token: str | None) -> dict[str, Any]:
    """The screen port's first answer to a hello with this token."""
    hello = {"type": "hello", "v": 1, **({"token": token} if token is not None else {})}
    with raw_socket(srv, srv.screen_port) as sock:
        sock.sendall(frame(hello))
        return read_first(sock)


def read_first(sock: socket.socket) -> dict[str, Any]:
    """The header of the first frame the server sends."""
    buf = b""
    while len(buf) < 8 or len(buf) < 4 + int.from_bytes(buf[:4], "big"):
        chunk = sock.recv(65536)
        assert chunk, f"closed after {buf!r}"
        buf += chunk
    hlen = int.from_bytes(buf[4:8], "big")
    header: dict[str, Any] = json.loads(buf[8 : 8 + hlen])
    return header


def test_screen_tokens_live_and_die_with_their_session(server: ServerProcess) -> None:
    """The screen port admits only the token of a live chat session: none, a forged one, one
    whose session logged out, or the previous session's after logging in again: refused."""
    async def scenario() -> None:
        async with client(server, "alice") as alice:
            first = alice.token
            assert first is not None
            answer = await asyncio.to_thread(screen_hello, server, first)
            assert answer["type"] == "welcome" and answer["user"] == "alice"
        async with client(server, "alice") as again:
            second = again.token
            assert second is not None and second != first
            for token in (None, "forged-" + "A" * 32, first):
                answer = await asyncio.to_thread(screen_hello, server, token)
                assert answer["type"] == "error", (token, answer)
                assert answer["code"] == "bad_token" and answer["fatal"], answer
            assert (await asyncio.to_thread(screen_hello, server, second))["type"] == "welcome"
        answer = await asyncio.to_thread(screen_hello, server, second)  # logged out
        assert answer["code"] == "bad_token"

    run(scenario())


class Slowloris:
    """Connections that never finish logging in: some stop inside the TLS handshake (a bare
    TCP connection), the others after TLS send a hello one byte at a time."""

    def __init__(self, srv: ServerProcess, bare: int, dribbling: int) -> None:
        self.hello = frame({"type": "hello", "v": 1, "user": "slow"})
        self.socks: list[socket.socket] = [raw_socket(srv, srv.chat_port, tls=False)
                                           for _ in range(bare)]
        self.socks += [raw_socket(srv, srv.chat_port) for _ in range(dribbling)]
        self.sent = [0] * len(self.socks)
        self.closed_at: dict[int, float] = {}

    def step(self) -> None:
        """Send the next byte on every TLS connection, note those the server closed."""
        for i, sock in enumerate(self.socks):
            if i in self.closed_at:
                continue
            try:
                if isinstance(sock, ssl.SSLSocket) and self.sent[i] < len(self.hello) - 1:
                    sock.send(self.hello[self.sent[i] : self.sent[i] + 1])
                    self.sent[i] += 1
                readable, _, _ = select.select([sock], [], [], 0)
                if readable and not sock.recv(65536):
                    self.closed_at[i] = time.monotonic()
            except (OSError, ssl.SSLError):
                self.closed_at[i] = time.monotonic()

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


def test_slowloris_is_cut_off_and_does_not_keep_others_out(tmp_path: Path) -> None:
    """Slow handshakes are closed after handshake_timeout, and while they hang on, with
    every login slot taken, others still log in and chat: the longest waiting makes room
    (once it has waited a quarter of the timeout)."""
    env = {"CHATSCREEN_HANDSHAKE_TIMEOUT": "2", "CHATSCREEN_MAX_HANDSHAKES": "6"}
    with running_server(tmp_path / "d", env=env) as srv:
        slow = Slowloris(srv, bare=6, dribbling=6)
        try:
            start = time.monotonic()
            slow.step()
            # the attack goes on for a quarter of the handshake timeout: from then on the
            # server takes a slow one's slot for a newcomer (a younger login is not slow yet)
            while time.monotonic() - start < 2 / 4 + 0.1:
                select.select([], [], [], 0.1)  # the attacker's pace
                slow.step()

            async def others() -> None:
                for n in range(3):  # every slot is held by a slow one: each gets in
                    async with client(srv, f"user{n}") as c:
                        await c.join("general")
                        assert (await c.say("general", "still here"))["text"] == "still here"
                        slow.step()

            run(others())
            deadline = start + 4 * 2 + TIMEOUT
            while len(slow.closed_at) < len(slow.socks):
                assert time.monotonic() < deadline, f"open: {len(slow.socks) - len(slow.closed_at)}"
                select.select([], [], [], 0.2)  # the attacker's pace: a byte every 0.2 s
                slow.step()
            assert max(slow.closed_at.values()) - start < 2 * 2 + 1.5
        finally:
            slow.close()


def test_a_flood_is_slowed_then_cut_off_while_others_chat(tmp_path: Path) -> None:
    """A user sending faster than the rate limit is told so and slowed down (the server stops
    reading them), then disconnected if it goes on; the others' messages flow meanwhile, and
    the flooder got no more stored than the rate allows."""
    rate, burst, flood = 20, 20, 2
    env = {"CHATSCREEN_RATE_MESSAGES": str(rate), "CHATSCREEN_RATE_BURST": str(burst),
           "CHATSCREEN_FLOOD_TIMEOUT": str(flood)}
    with running_server(tmp_path / "d", env=env) as srv:
        async def scenario() -> None:
            async with client(srv, "calm") as calm, client(srv, "reader") as reader:
                await calm.join("general")
                await reader.join("general")
                sock = await asyncio.to_thread(raw_socket, srv, srv.chat_port)
                try:
                    sock.sendall(frame({"type": "hello", "v": 1, "user": "flooder"}))
                    sock.sendall(frame({"type": "join", "room": "general"}))
                    says = b"".join(frame({"type": "say", "room": "general", "text": f"f{n}"})
                                    for n in range(2000))
                    start = time.monotonic()
                    sender = asyncio.create_task(asyncio.to_thread(_send_all, sock, says))
                    for n in range(10):  # calm chats on, at its own pace, all the while
                        assert (await calm.say("general", f"calm {n}"))["text"] == f"calm {n}"
                    headers = await asyncio.to_thread(read_headers, sock)
                    elapsed = time.monotonic() - start
                    await sender
                finally:
                    sock.close()
                errors = [h for h in headers if h["type"] == "error"]
                assert errors[0]["code"] == "rate_limited" and not errors[0].get("fatal")
                assert errors[-1]["code"] == "rate_limited" and errors[-1]["fatal"]
                assert "flooding" in errors[-1]["message"]
                history = (await reader.history(room="general", limit=1000))["messages"]
                texts = [m["text"] for m in history]
                assert [t for t in texts if t.startswith("calm")] == [f"calm {n}"
                                                                      for n in range(10)]
                flooded = [t for t in texts if t.startswith("f")]
                assert 0 < len(flooded) <= burst + rate * elapsed + 5, (len(flooded), elapsed)

        run(scenario())


def _send_all(sock: socket.socket, data: bytes) -> None:
    """Send as much as the server takes until it closes the connection."""
    with contextlib.suppress(OSError, ssl.SSLError):  # cut off: what this test expects
        sock.sendall(data)


def test_connections_per_address_are_limited_and_other_addresses_get_in(
        tmp_path: Path) -> None:
    """Past max_connections_per_address, one address is refused in plain words; a client
    from another address is not affected."""
    env = {"CHATSCREEN_MAX_CONNECTIONS_PER_ADDRESS": "4"}
    with running_server(tmp_path / "d", env=env) as srv:
        held = [raw_socket(srv, srv.chat_port) for _ in range(4)]
        try:
            for sock in held:
                sock.sendall(frame({"type": "hello", "v": 1, "user": f"h{held.index(sock)}"}))
                assert read_first(sock)["type"] == "welcome"
            headers = raw_exchange(srv, srv.chat_port,
                                   frame({"type": "hello", "v": 1, "user": "fifth"}))
            assert headers[-1]["code"] == "too_many_connections"
            assert "too many connections from 127.0.0.1 (at most 4)" in headers[-1]["message"]
            with raw_socket(srv, srv.chat_port, source="127.0.0.2") as other:
                other.sendall(frame({"type": "hello", "v": 1, "user": "elsewhere"}))
                assert read_first(other)["type"] == "welcome"
        finally:
            for sock in held:
                sock.close()
