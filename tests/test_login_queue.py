"""A storm of honest logins past ``max_handshakes`` waits for a login slot, in a bounded
queue, instead of being refused (every refused TLS client pays a second handshake after a
backoff); and clients that lost the server spread their reconnects out."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from chatscreen.client import Client
from chatscreen.errors import ConnectError
from tests.helpers.server import (
    TIMEOUT,
    ServerProcess,
    frame,
    metrics,
    metrics_port,
    raw_socket,
    read_headers_until,
    run,
    running_server,
)


async def chat_connections_reach(port: int, n: int) -> None:
    gauge = 'chatscreen_connections{port="chat"}'
    async with asyncio.timeout(TIMEOUT):
        while (await asyncio.to_thread(metrics, port))[gauge] < n:  # noqa: ASYNC110 - bounded
            await asyncio.sleep(0.02)  # polling the server's gauge, with a deadline


def client(srv: ServerProcess, user: str) -> Client:
    return Client("127.0.0.1", user, chat_port=srv.chat_port, timeout=TIMEOUT, reconnect=False)


def test_logins_past_the_limit_wait_for_a_slot_and_the_queue_is_bounded(tmp_path: Path) -> None:
    """Every login slot is held by a client that is slow to send its hello (slower than a
    storm's, faster than a quarter of the handshake timeout: honest). Newcomers wait for a
    slot, and log in as soon as one frees; only past the queue's bound is one refused."""
    env = {"CHATSCREEN_MAX_HANDSHAKES": "3", "CHATSCREEN_LOGIN_QUEUE": "4",
           "CHATSCREEN_HANDSHAKE_TIMEOUT": "30"}
    with running_server(tmp_path / "d", "--metrics-port", "0", env=env) as srv:
        port = metrics_port(srv)

        async def scenario() -> None:
            holders: list[socket.socket] = []
            clients = [client(srv, f"user{n}") for n in range(4)]
            try:
                for _ in range(3):
                    holders.append(await asyncio.to_thread(raw_socket, srv, srv.chat_port))
                await chat_connections_reach(port, 3)
                logins = [asyncio.create_task(c.connect()) for c in clients]
                await chat_connections_reach(port, 7)  # all four wait, none refused
                assert not any(t.done() for t in logins)
                extra = client(srv, "extra")  # past the queue: told to try again
                try:
                    await extra.connect()
                    raise AssertionError("a login past the queue's bound got in")
                except ConnectError as exc:
                    assert "try again" in str(exc)
                for n, sock in enumerate(holders):  # the slow ones finally log in
                    sock.sendall(frame({"type": "hello", "v": 1, "user": f"slow{n}"}))
                    welcome = await asyncio.to_thread(read_headers_until, sock,
                                                      lambda h: h["type"] != "status")
                    assert welcome[-1]["type"] == "welcome", welcome
                async with asyncio.timeout(TIMEOUT):
                    await asyncio.gather(*logins)
                for c in clients:
                    await c.join("general")
                    assert (await c.say("general", "in"))["text"] == "in"
                m = await asyncio.to_thread(metrics, port)
                assert m['chatscreen_disconnects_total{reason="too_many_connections"}'] == 1
            finally:
                for c in clients:
                    await c.close()
                for sock in holders:
                    sock.close()

        run(scenario())


def test_clients_spread_their_reconnects_and_the_first_go_at_once(tmp_path: Path) -> None:
    """The server goes away under 30 clients: their first attempts to come back are spread
    over the first backoff (full jitter), starting at once rather than all after 0.375 s."""
    with running_server(tmp_path / "d") as srv:
        async def scenario() -> list[float]:
            clients = [Client("127.0.0.1", f"user{n}", chat_port=srv.chat_port,
                              timeout=TIMEOUT) for n in range(30)]
            try:
                for c in clients:
                    await c.connect()
                await asyncio.to_thread(srv.stop)
                waits = []
                async with asyncio.timeout(TIMEOUT):
                    for c in clients:
                        while True:
                            ev = await c.next_event()
                            if ev.type == "status" and ev["state"] == "reconnecting":
                                waits.append(float(ev["retry_in"]))
                                break
                return waits
            finally:
                for c in clients:
                    await c.close()

        start = time.monotonic()
        waits = run(scenario())
        assert time.monotonic() - start < 6 * TIMEOUT
        assert min(waits) <= 0.2, waits  # the first are not held back
        assert max(waits) >= 0.3, waits  # the others spread over the window
