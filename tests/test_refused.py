"""A request the server refuses gets an error for that request; the connection stays up.
Only a broken stream, or a peer that keeps sending invalid requests, is cut off."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.helpers.rawchat import RawChat
from tests.helpers.server import NO_RATE_LIMITS, TIMEOUT, ServerProcess, run, running_server


def test_invalid_field_gets_an_error_with_its_id_and_the_connection_stays(
        server: ServerProcess) -> None:
    async def scenario() -> None:
        raw = await RawChat.login(server, "probe")
        assert raw.welcomed, raw.answer
        try:
            raw.send({"type": "join", "room": "bad name", "rid": "r1"})
            err = await raw.until(lambda h: h["type"] == "error")
            assert err["fatal"] is False, err
            assert (err["code"], err["re"], err["rid"]) == ("invalid_name", "join", "r1")
            raw.send({"type": "join", "room": "general", "rid": "r2"})
            assert (await raw.until(lambda h: h.get("rid") == "r2"))["type"] == "joined"
            raw.send({"type": "say", "room": "general", "text": "x" * 4100, "cid": "c-1"})
            err = await raw.until(lambda h: h["type"] in ("error", "message"))
            assert err["type"] == "error" and err["fatal"] is False, err
            assert (err["code"], err["re"], err["cid"]) == ("bad_message", "say", "c-1")
            assert "4000" in err["message"]
            raw.send({"type": "say", "room": "general", "text": "still here", "cid": "c-2"})
            msg = await raw.until(lambda h: h["type"] in ("error", "message"))
            assert (msg["type"], msg["text"], msg["cid"]) == ("message", "still here", "c-2")
        finally:
            await raw.close()

    run(scenario())


def test_unattributable_or_broken_requests_stay_fatal(server: ServerProcess) -> None:
    async def scenario() -> None:
        for bad in ({"type": "join", "room": "general", "rid": 7},  # a rid that is no rid
                    {"type": "no-such-request"}, {"v": 1},
                    {"type": "hello", "v": 1, "user": "again"}):
            raw = await RawChat.login(server, "prober")
            assert raw.welcomed, raw.answer
            try:
                raw.send(bad)
                err = await raw.until(lambda h: h["type"] == "error")
                assert err["fatal"] is True, (bad, err)
                assert (await raw.until(lambda h: False))["type"] == "closed"
            finally:
                await raw.close()

    run(scenario())


def test_a_flood_of_invalid_requests_is_cut_off(tmp_path: Path) -> None:
    with running_server(tmp_path / "d", env=NO_RATE_LIMITS) as srv:
        async def scenario() -> None:
            raw = await RawChat.login(srv, "garbage")
            assert raw.welcomed, raw.answer
            try:
                for n in range(1000):
                    raw.send({"type": "say", "room": "general", "text": "", "cid": f"g-{n}"})
                refused = 0
                async with asyncio.timeout(TIMEOUT):
                    while (h := await raw.read())["type"] != "closed":
                        if h["type"] == "error" and not h["fatal"]:
                            refused += 1
                        elif h["type"] == "error":
                            last = h
                assert last["code"] == "bad_message"
                assert "too many invalid requests" in last["message"]
                assert 10 <= refused <= 100, refused
            finally:
                await raw.close()

        run(scenario())
