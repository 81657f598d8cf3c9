"""Roles and moderation on the real server: kick, mute, ban, unban, roles, share rights."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from chatscreen.client import Client
from chatscreen.errors import ConnectError, ServerError
from chatscreen.protocol import Message
from tests.helpers.proxy import CuttableProxy
from tests.helpers.rawchat import RawChat, login_answer
from tests.helpers.server import (
    REPO,
    TIMEOUT,
    ServerProcess,
    refused,
    run,
    running_server,
    wait_for,
)

PASSWORD = "moderation password"


def admin_cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "chatscreen", "admin", "--data-dir", str(data),
                          *args], capture_output=True, text=True, timeout=3 * TIMEOUT, cwd=REPO,
                         env={**os.environ, "CHATSCREEN_PASSWORD": PASSWORD})
    assert out.returncode == 0, out.stderr
    return out


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    data = tmp_path / "data"
    admin_cli(data, "create-admin", "boss")
    admin_cli(data, "add-user", "mod", "--role", "moderator")
    admin_cli(data, "add-user", "mel")
    with running_server(data) as srv:
        yield srv


def client(srv: ServerProcess, user: str, password: str | None = None) -> Client:
    return Client("127.0.0.1", user, chat_port=srv.chat_port, screen_port=srv.screen_port,
                  timeout=TIMEOUT, password=password)


async def notice(c: Client) -> Message:
    """The next notice: a live one (to the user alone), or a room's moderation notice, which
    is a stored message of kind "notice" (given as {room, text})."""
    ev = await wait_for(c, lambda e: e.type == "notice" or (
        e.type == "message" and e.get("kind") == "notice"))
    if ev.type == "message":
        return Message("notice", {"room": ev["room"], "text": ev["text"]})
    return ev


def closed(c: Client) -> Coroutine[Any, Any, Message]:
    return wait_for(c, lambda e: e.type == "status" and e["state"] == "disconnected")


def test_non_admins_cannot_moderate(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with client(server, "guest") as guest, \
                client(server, "mel", PASSWORD) as mel, \
                client(server, "mod", PASSWORD) as mod, \
                client(server, "victim") as victim:
            for c in (guest, mel):
                for action in ("kick", "mute", "ban", "unban", "role"):
                    with pytest.raises(ServerError) as info:
                        await c.moderate(action, "victim", role="admin")
                    assert info.value.code == "forbidden"
            with pytest.raises(ServerError, match="only admins") as info:
                await mod.moderate("role", "mel", role="admin")
            assert info.value.code == "forbidden"
            with pytest.raises(ServerError, match="may not moderate"):
                await mod.moderate("kick", "boss")  # a moderator cannot touch an admin
            with pytest.raises(ServerError, match="yourself"):
                await mod.moderate("mute", "mod")
            await victim.join("general")
            assert (await victim.say("general", "still here"))["text"] == "still here"
            assert mel.role == "member"

    run(scenario())


def test_kick_disconnects_with_the_reason_and_the_room_sees_it(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with client(server, "mod", PASSWORD) as mod, client(server, "bob") as bob, \
                client(server, "carl") as carl:
            for c in (mod, bob, carl):
                await c.join("general")
            await mod.moderate("kick", "bob", reason="spamming")
            ev = await notice(carl)
            assert ev.fields == {"room": "general", "text": "mod kicked bob: spamming"}
            ev = await closed(bob)
            assert ev["reason"] == "You were kicked by mod: spamming"
            assert "bob" not in await carl.who("general")
            with pytest.raises(ServerError, match="not connected"):
                await mod.moderate("kick", "bob")
        # a kick is not a ban: bob may come back
        async with client(server, "bob") as bob:
            await bob.join("general")

    run(scenario())


def test_muted_user_cannot_post_until_unmuted(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with client(server, "mod", PASSWORD) as mod, client(server, "loud") as loud:
            await mod.join("general")
            await loud.join("general")
            await mod.moderate("mute", "loud", duration=600, reason="calm down")
            ev = await notice(loud)
            assert ev["text"] == "mod muted loud for 10m: calm down"
            with pytest.raises(ServerError) as info:
                await loud.say("general", "can you hear me")
            assert info.value.code == "muted" and "until" in info.value.message
            with pytest.raises(ServerError) as info:
                await loud.pm("mod", "psst")
            assert info.value.code == "muted"
            assert loud.connected  # muting is not fatal
            await mod.moderate("unmute", "loud")
            assert (await loud.say("general", "thanks"))["text"] == "thanks"
        history = await _texts(server)
        assert "can you hear me" not in history and "psst" not in history

    run(scenario())


def test_a_mute_outlives_a_restart_and_admin_lifts_it(server: ServerProcess) -> None:
    """Mutes are stored like bans: a restart does not free a muted user; `chatscreen admin
    unmute` on the server machine does, while the server runs."""
    async def mute() -> None:
        async with client(server, "mod", PASSWORD) as mod:
            await mod.moderate("mute", "loud", duration=3600, reason="spam")

    async def say(text: str) -> None:
        async with client(server, "loud") as loud:
            await loud.join("general")
            await loud.say("general", text)

    run(mute())
    server.stop()
    server.start()
    with pytest.raises(ServerError) as info:
        run(say("after the restart"))
    assert info.value.code == "muted"
    assert "mute loud until" in admin_cli(server.data_dir, "list").stdout
    admin_cli(server.data_dir, "unmute", "loud")

    async def say_when_unmuted() -> None:
        async with asyncio.timeout(TIMEOUT):  # the server reloads within a second
            while True:
                try:
                    await say("free again")
                    return
                except ServerError as exc:
                    assert exc.code == "muted"
                    await asyncio.sleep(0.2)

    run(say_when_unmuted())


def test_admin_cli_moderates_the_running_server_and_the_room_sees_it(
        server: ServerProcess) -> None:
    """`chatscreen admin mute/kick` on the server machine act on the running server, and
    the target's rooms get the notice, as for a moderator's chat command."""
    async def scenario() -> None:
        async with client(server, "loud") as loud, client(server, "witness") as witness:
            await loud.join("general")
            await witness.join("general")
            await asyncio.to_thread(admin_cli, server.data_dir, "mute", "loud", "--for", "1h",
                                    "--reason", "spam")
            ev = await notice(witness)
            assert ev["text"].startswith("an admin muted loud until") and "spam" in ev["text"]
            with pytest.raises(ServerError) as info:
                await loud.say("general", "still here?")
            assert info.value.code == "muted"
            out = await asyncio.to_thread(admin_cli, server.data_dir, "kick", "loud",
                                          "--reason", "enough")
            assert out.stdout == "loud was kicked\n"
            assert (await notice(witness))["text"] == "an admin kicked loud: enough"
            ev = await closed(loud)
            assert "kicked by an admin: enough" in ev["reason"]

    run(scenario())


async def _texts(server: ServerProcess) -> list[str]:
    async with client(server, "reader") as reader:
        msg = await reader.history(room="general")
        return [m["text"] for m in msg["messages"]]


def test_banned_user_cannot_come_back_until_unbanned(server: ServerProcess,
                                                     tmp_path: Path) -> None:
    async def scenario() -> None:
        async with client(server, "boss", PASSWORD) as boss:
            await boss.join("general")
            async with client(server, "mel", PASSWORD) as mel:
                await mel.join("general")
                await boss.moderate("ban", "mel", duration=7 * 86400, reason="trolling")
                ev = await notice(boss)
                assert ev["text"] == "boss banned mel for 7d: trolling"
                ev = await closed(mel)
                assert ev["reason"].startswith("You are banned until ")
            err = await refused(client(server, "mel", PASSWORD))
            assert err.code == "banned" and "until" in err.message and "trolling" in err.message
            # a banned guest name too, for ever
            await boss.moderate("ban", "troll")
            err = await refused(client(server, "TROLL"))
            assert err.code == "banned" and "for ever" in err.message
            await boss.moderate("unban", "mel")
            async with client(server, "mel", PASSWORD) as mel:
                await mel.join("general")

    run(scenario())
    db = sqlite3.connect(server.data_dir / "chatscreen.db")
    actions = [(a, t) for a, t in db.execute("SELECT action, target FROM moderation "
                                             "WHERE actor = 'boss' ORDER BY id")]
    assert actions == [("ban", "mel"), ("ban", "troll"), ("unban", "mel")]
    log = server.stderr_path.read_text()
    assert "moderation: boss banned mel for 7d: trolling" in log


def test_banned_address_cannot_come_back(tmp_path: Path) -> None:
    """An address ban made with `chatscreen admin` while the server runs: whoever is
    connected from it is cut off, and nobody gets in from it until it is lifted."""
    data = tmp_path / "data"
    admin_cli(data, "create-admin", "boss")
    with running_server(data) as srv:
        async def scenario() -> None:
            async with client(srv, "someone") as someone:
                await someone.join("general")
                await asyncio.to_thread(admin_cli, data, "ban", "--address", "127.0.0.1",
                                        "--for", "2h", "--reason", "abuse")
                ev = await closed(someone)
                assert "banned" in ev["reason"]
            err = await refused(client(srv, "someone"))
            assert err.code == "banned" and "This address is banned until" in err.message
            async with client(srv, "boss", PASSWORD):  # an admin, on the server machine
                pass
            await asyncio.to_thread(admin_cli, data, "unban", "--address", "127.0.0.1")
            async with asyncio.timeout(TIMEOUT):  # the server notices within a second
                while True:
                    try:
                        async with client(srv, "someone"):
                            break
                    except ConnectError as exc:
                        assert "banned" in str(exc)
                        await asyncio.sleep(0.2)

        run(scenario())
    out = admin_cli(data, "list")
    assert "Bans and mutes (0)" in out.stdout


def test_admin_sets_roles_and_moderators_then_moderate(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with client(server, "boss", PASSWORD) as boss, \
                client(server, "mel", PASSWORD) as mel, client(server, "guest") as guest:
            await mel.join("general")
            await guest.join("general")
            with pytest.raises(ServerError, match="has no account"):
                await boss.moderate("role", "guest", role="moderator")
            with pytest.raises(ServerError, match="role must be"):
                await boss.moderate("role", "mel", role="emperor")
            await boss.moderate("role", "mel", role="moderator")
            ev = await notice(mel)
            assert ev["text"] == "boss made mel a moderator"
            await mel.moderate("mute", "guest", duration=60)
            with pytest.raises(ServerError):
                await guest.say("general", "hello?")

    run(scenario())


def test_share_roles_decide_who_may_share(tmp_path: Path) -> None:
    data = tmp_path / "data"
    admin_cli(data, "add-user", "mel")
    with running_server(data, "--share-roles", "member,moderator,admin") as srv:
        async def scenario() -> None:
            async with client(srv, "guest") as guest, client(srv, "mel", PASSWORD) as mel:
                screen = await guest.open_screen()
                try:
                    with pytest.raises(ServerError) as info:
                        await screen.share(640, 480)
                    assert info.value.code == "forbidden"
                finally:
                    await screen.close()
                screen = await mel.open_screen()
                try:
                    assert await screen.share(640, 480) >= 0
                finally:
                    await screen.close()

        run(scenario())


def test_chat_commands_moderate_and_print_notices(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with client(server, "bob") as bob:
            await bob.join("general")
            cmd = [sys.executable, "-m", "chatscreen", "chat", "--server",
                   f"127.0.0.1:{server.chat_port}", "--user", "mod"]
            out = await asyncio.to_thread(
                subprocess.run, cmd, input="/mute bob 10m shush\n/unmute bob\n"
                "/kick bob bye\n/role bob admin\n/quit\n", capture_output=True, text=True,
                timeout=3 * TIMEOUT, cwd=REPO, env={**os.environ, "CHATSCREEN_PASSWORD": PASSWORD})
            assert "* mod muted bob for 10m: shush" in out.stdout
            assert "* mod unmuted bob" in out.stdout
            assert "* mod kicked bob: bye" in out.stdout
            # refused: from a script, that stops it (stderr, status 1)
            assert out.returncode == 1 and out.stderr == "! only admins may role\n", out
            ev = await closed(bob)
            assert ev["reason"] == "You were kicked by mod: bye"

    run(scenario())


def test_private_rooms_admit_only_the_invited(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with client(server, "mel", PASSWORD) as mel, client(server, "ann") as ann, \
                client(server, "eve") as eve:
            await mel.create_room("secret", private=True)
            await mel.say("secret", "for invited eyes only")
            for request in (eve.join("secret"), eve.who("secret"),
                            eve.history(room="secret"), eve.invite("secret", "eve")):
                with pytest.raises(ServerError) as info:
                    await request
                assert info.value.code == "forbidden"
            assert "secret" not in {r["name"] for r in await eve.list_rooms()}
            await mel.invite("secret", "ann")
            ev = await notice(ann)
            assert ev.fields == {"room": "secret",
                                 "text": "mel invited you to secret: /join secret"}
            assert await ann.join("SECRET") == ["ann", "mel"]
            msg = await ann.history(room="secret")
            assert [m["text"] for m in msg["messages"]] == ["for invited eyes only"]
            assert "secret" in {r["name"] for r in await ann.list_rooms()}
            with pytest.raises(ServerError, match="not private"):
                await mel.invite("general", "eve")
            with pytest.raises(ServerError):
                await eve.say("secret", "let me in")
            await mel.invite("secret", "mod")  # registered, not connected: stored

    run(scenario())
    # An invitation to an account outlives a restart; one to a guest (ann) does not: it was
    # that guest's, and whoever is called ann after the restart is another guest.
    with running_server(server.data_dir) as srv:
        async def again() -> None:
            async with client(srv, "mod", PASSWORD) as mod, client(srv, "ann") as ann, \
                    client(srv, "eve") as eve:
                await mod.join("secret")
                for c in (ann, eve):
                    with pytest.raises(ServerError, match="private"):
                        await c.join("secret")

        run(again())


async def shut_out(c: Client, room: str) -> None:
    """c may not join, list, see the members of or read the private room."""
    for request in (c.join, c.who, lambda r: c.history(room=r)):
        with pytest.raises(ServerError) as info:
            await request(room)
        assert info.value.code == "forbidden"
    assert room not in {r["name"] for r in await c.list_rooms()}


def test_an_invitation_to_a_guest_is_that_guests_not_its_names(server: ServerProcess) -> None:
    """Invited, or a private room's creator, a guest keeps the room while it comes back
    with its resume secret; the next guest to take its name gets neither the room nor its
    history. A guest who registers keeps its invitations, stored as an account's are."""
    async def scenario() -> None:
        proxy = await CuttableProxy(server.chat_port).start()
        bob = Client("127.0.0.1", "bob", chat_port=proxy.port, timeout=TIMEOUT)
        try:
            async with client(server, "mel", PASSWORD) as mel:
                await mel.create_room("secret", private=True)
                await mel.say("secret", "for bob's eyes only")
                await bob.connect()
                await mel.invite("secret", "bob")
                proxy.cut()  # the same client coming back is the same guest
                await wait_for(bob, lambda e: e.type == "status"
                               and e["state"] == "reconnecting")
                await wait_for(bob, lambda e: e.type == "status"
                               and e["state"] == "connected")
                assert await bob.join("secret") == ["bob", "mel"]
                await bob.close()
                async with client(server, "bob") as new_bob:  # another guest, same name
                    await shut_out(new_bob, "secret")
                ev = await notice(mel)  # the inviter was told whose the invitation is
                assert ev["text"] == ("bob is a guest: the invitation is theirs, not the name's, "
                                      "and ends when they leave")
                with pytest.raises(ServerError) as info:
                    await mel.invite("secret", "nobody")
                assert info.value.code == "no_such_user"
                async with client(server, "ray") as ray:
                    await mel.invite("secret", "ray")
                    await ray.register("ray's password")
            async with client(server, "ray", "ray's password") as ray:
                assert "ray" in await ray.join("secret")  # stored with the account
            async with client(server, "ann") as ann:  # a guest has no private room to pass on
                with pytest.raises(ServerError) as info:
                    await ann.create_room("den", private=True)
                assert info.value.code == "forbidden"
        finally:
            await bob.close()
            await proxy.close()

    run(scenario())


def test_a_moderator_cannot_lock_an_admin_out(server: ServerProcess) -> None:
    """A moderator's address ban may not hit their rank or higher: refused while an admin
    is connected from that address (the admin stays), and when placed anyway (the admin
    was away) it does not keep the admin (nor a moderator) out, only guests and members."""
    async def scenario() -> None:
        async with client(server, "mod", PASSWORD) as mod:  # from 127.0.0.1
            boss = await RawChat.login(server, "boss", PASSWORD, source="127.0.0.2")
            mel = await RawChat.login(server, "mel", PASSWORD, source="127.0.0.3")
            assert boss.welcomed and mel.welcomed
            with pytest.raises(ServerError) as info:
                await mod.moderate("ban", address="127.0.0.2")
            assert info.value.code == "forbidden"
            assert info.value.message == ("you may not ban 127.0.0.2: boss (admin) is "
                                          "connected from it")
            boss.send({"type": "rooms", "rid": "still"})  # boss is still connected
            assert (await boss.until(lambda h: h.get("rid") == "still"))["type"] == "rooms"
            await mod.moderate("ban", address="127.0.0.3")  # mel is below: she goes
            assert (await mel.until(lambda h: h["type"] == "error"))["code"] == "banned"
            await boss.close()
            await mel.close()
            await mod.moderate("ban", address="127.0.0.2", reason="placed while boss is away")
            assert (await login_answer(server, "boss", PASSWORD))["type"] == "welcome"
            for name, password in (("mel", PASSWORD), ("someone", None)):
                answer = await login_answer(server, name, password)
                assert answer["code"] == "banned", answer
        # a moderator acts on lower ranks only: not on another moderator, away or not
        assert (await login_answer(server, "mod", PASSWORD))["type"] == "welcome"

    run(scenario())


async def _until_login(srv: ServerProcess, name: str, *, welcomed: bool) -> None:
    """Poll (the server picks up `chatscreen admin` within a second) until a login from
    127.0.0.2 is welcomed, or refused."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            if ((await login_answer(srv, name))["type"] == "welcome") == welcomed:
                return
            await asyncio.sleep(0.1)


def test_an_admin_gets_back_in_from_the_local_machine_and_lifts_the_ban(
        server: ServerProcess) -> None:
    """An address ban (here by `chatscreen admin`, which binds everyone) never refuses an
    admin account with its password from the local machine; `chatscreen admin unban
    --address` lifts it for everyone."""
    async def scenario() -> None:
        await asyncio.to_thread(admin_cli, server.data_dir, "ban", "--address", "127.0.0.2")
        await _until_login(server, "someone", welcomed=False)
        for name, password in (("mel", PASSWORD), ("mod", PASSWORD), ("boss", "wrong one")):
            answer = await login_answer(server, name, password)
            assert answer["code"] in ("banned", "bad_password"), answer
        boss = await RawChat.login(server, "boss", PASSWORD)
        assert boss.welcomed, boss.answer
        boss.send({"type": "moderate", "action": "unban", "address": "127.0.0.2", "rid": "u"})
        assert (await boss.until(lambda h: h.get("rid") == "u"))["type"] == "moderated"
        await boss.close()
        assert (await login_answer(server, "someone"))["type"] == "welcome"
        await asyncio.to_thread(admin_cli, server.data_dir, "ban", "--address", "127.0.0.2")
        out = await asyncio.to_thread(admin_cli, server.data_dir, "unban", "--address",
                                      "127.0.0.2")
        assert "Unbanned 127.0.0.2" in out.stdout
        await _until_login(server, "someone", welcomed=True)

    run(scenario())


def test_who_a_ban_binds() -> None:
    """The rule, for addresses that cannot be faked on loopback: a moderator's ban binds
    lower ranks only; an admin's binds everyone but an admin on the server machine."""
    from chatscreen.server.moderation import ban_binds

    far = "203.0.113.7"
    for role, bound in ((None, True), ("member", True), ("moderator", False),
                        ("admin", False)):
        assert ban_binds("moderator", role, far, address=True) is bound, role
    for role in (None, "member", "moderator", "admin"):
        assert ban_binds("admin", role, far, address=True), role
    for local in ("127.0.0.1", "127.3.2.1", "::1", "::ffff:127.0.0.1"):
        assert not ban_binds("admin", "admin", local, address=True), local
        assert ban_binds("admin", "moderator", local, address=True), local
        assert ban_binds("admin", "admin", local, address=False), local  # an account ban


def test_bans_from_an_older_database_bind_everyone(tmp_path: Path) -> None:
    """A bans table from before bans stored the banner's role gains the column; its bans
    count as an admin's (as they acted before)."""
    from chatscreen.server.accounts import AccountDB

    data = tmp_path / "data"
    data.mkdir()
    db = sqlite3.connect(data / "chatscreen.db")
    db.execute("CREATE TABLE bans (kind TEXT NOT NULL, target TEXT NOT NULL, until REAL, "
               "reason TEXT NOT NULL DEFAULT '', by_user TEXT NOT NULL DEFAULT '', "
               "created TEXT NOT NULL DEFAULT '', PRIMARY KEY (kind, target))")
    db.execute("INSERT INTO bans (kind, target, by_user) VALUES ('address', '10.0.0.1', 'm')")
    db.commit()
    db.close()
    accounts = AccountDB.open(data)
    try:
        (ban,) = accounts.bans()
        assert (ban.target, ban.by, ban.by_role) == ("10.0.0.1", "m", "admin")
        assert accounts.ban("account", "x", None, "", "mod", "moderator").by_role == "moderator"
    finally:
        accounts.close()


def test_a_kick_notice_is_in_the_rooms_history_for_later_joins_and_resume(
        server: ServerProcess) -> None:
    """Issue 16, item 9: a moderation notice was sent live only, so whoever joined later (or
    an app restarted) never saw it. It is a stored message of kind "notice" now."""
    async def scenario() -> None:
        async with client(server, "mod", PASSWORD) as mod, client(server, "bob") as bob:
            await mod.join("general")
            before = max((m["id"] for m in (await mod.history(room="general"))["messages"]),
                         default=0)
            await bob.join("general")
            await mod.moderate("kick", "bob", reason="spamming")
            ev = await wait_for(mod, lambda e: e.type == "message")
            assert ev.get("kind") == "notice" and ev["user"] == "mod", ev
            assert ev["text"] == "mod kicked bob: spamming"
        async with client(server, "carl") as carl:  # joins later: the history has it
            await carl.join("general")
            history = (await carl.history(room="general"))["messages"]
            kicks = [m for m in history if m.get("kind") == "notice"]
            assert [m["text"] for m in kicks] == ["mod kicked bob: spamming"], history
            # catching up has it too
            resumed = (await carl.history(room="general", after=before))["messages"]
            assert any(m.get("kind") == "notice" for m in resumed), resumed
        # the CLI shows it as a notice, never as mod's chat line
        cmd = [sys.executable, "-m", "chatscreen", "chat", "--server",
               f"127.0.0.1:{server.chat_port}", "--user", "dora"]
        out = await asyncio.to_thread(subprocess.run, cmd, input="/quit\n", capture_output=True,
                                      text=True, timeout=3 * TIMEOUT, cwd=REPO)
        assert "* mod kicked bob: spamming" in out.stdout, out
        assert "mod: mod kicked" not in out.stdout, out

    run(scenario())
