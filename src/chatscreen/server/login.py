"""Login: the hello of a chat connection, the server's and the account's password (checked
off the event loop, one check at a time per account, failures slowed down: LoginGuard), the
bans and lookalike names that refuse it, a guest's identity (Guest, since) and resume, and the
welcome (an account's rooms and read markers, pending invitations). Carried out on the chat
service through the Service interface (ChatService is one), which keeps the sessions.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from chatscreen.errors import ErrorCode, RemoteProtocolError
from chatscreen.protocol.lookalike import name_skeleton
from chatscreen.server import rooms
from chatscreen.server.accounts import verify_password
from chatscreen.server.rooms import DEFAULT_ROOM, MAX_PEER_MARKS, may_enter
from chatscreen.server.session import Guest, Session

if TYPE_CHECKING:
    from chatscreen.protocol import Message
    from chatscreen.server.accounts import Account, Ban
    from chatscreen.server.fanout import Fanout
    from chatscreen.server.metrics import Counters
    from chatscreen.server.moderation import CheckQueue, LoginGuard
    from chatscreen.server.peer import Peer

log = logging.getLogger("chatscreen.chat")

ALL = "all"  # topic every logged-in chat connection subscribes to (share announcements)
GUEST_SINCE_KEPT = 10_000  # guest names whose last guest (resume, since, Guest) is remembered
WELCOME_INVITATIONS = 100  # pending invitations listed in a welcome, at most


def user_topic(key: str) -> str:
    return f"user:{key}"


@dataclass(frozen=True)
class LoginPolicy:
    server_password: str | None = None
    require_accounts: bool = False
    share_roles: frozenset[str] | None = None  # None: everyone may share
    login_delay: float = 0.5  # first failed login's delay, doubling ...
    login_delay_max: float = 30.0  # ... up to this
    handshake_timeout: float = 10.0  # a login is answered within this, slowed down or not
    refresh: float = 1.0  # seconds between checks for changes made by `chatscreen admin`


class Service(rooms.Service, Protocol):
    """What a login reads and changes of the chat service (ChatService is one): the room
    requests' Service, and the sessions, the caches of accounts and bans, the login guard."""

    @property
    def sessions(self) -> dict[str, Session[Peer]]: ...  # casefolded name -> session
    @property
    def skeletons(self) -> dict[str, Session[Peer]]: ...  # name_skeleton -> session
    @property
    def tokens(self) -> dict[str, Session[Peer]]: ...
    @property
    def guest_since(self) -> OrderedDict[str, tuple[str, int, Guest]]: ...
    @property
    def lookalikes(self) -> dict[str, Account]: ...
    @property
    def policy(self) -> LoginPolicy: ...
    @property
    def guard(self) -> LoginGuard: ...
    @property
    def checks(self) -> CheckQueue: ...
    @property
    def counters(self) -> Counters: ...
    @property
    def fanout(self) -> Fanout: ...
    @property
    def heartbeat(self) -> float: ...
    @property
    def history(self) -> int: ...
    @property
    def file_limits(self) -> dict[str, int]: ...  # for the welcome: max_file_size
    def binding(self, kind: str, target: str, role: str | None, ip: str) -> Ban | None: ...
    def logout(self, session: Session[Peer]) -> None: ...
    def send_shares(self, session: Session[Peer]) -> None: ...


def hello(service: Service, peer: Peer, msg: Message) -> None:
    name = msg.get("user")
    if name is None:
        raise RemoteProtocolError(ErrorCode.INVALID_NAME, "hello on the chat port needs a user")
    claimed = service.accounts.get(name.casefold())  # its password is checked later
    ban = service.binding("address", peer.ip, claimed.role if claimed else None, peer.ip)
    if ban is not None:
        refuse_address(peer, name, ban)
        return
    if service.policy.server_password is None and name.casefold() not in service.accounts:
        finish_login(service, peer, msg, None)  # a guest: no password to check
    else:
        service.spawn(check_login(service, peer, msg))


async def check_login(service: Service, peer: Peer, msg: Message) -> None:
    """Check the server password, then the account's (argon2id, off the event loop).
    Failures are slowed down per address, and per account at that address (see
    LoginGuard): strangers' failures on an account never hold its owner back."""
    name: str = msg["user"]
    key = name.casefold()
    ip_key = f"ip:{peer.ip}"
    loop = asyncio.get_running_loop()
    server_password = service.policy.server_password
    if server_password is not None:
        given = msg.get("server_password")
        if given is None:
            peer.fail(ErrorCode.BAD_PASSWORD,
                      "This server needs a password: give the server password")
            return
        if not await guard_wait(service, [ip_key], peer):
            return
        service.guard.reserve([ip_key], loop.time())
        if not hmac.compare_digest(given.encode(), server_password.encode()):
            delay = service.guard.failed([ip_key], loop.time())
            await login_failed(service, peer, delay, name, "Wrong server password")
            return
        service.guard.succeeded([], release=[ip_key])
    account = service.accounts.get(key)
    if account is not None:
        password = msg.get("password")
        if password is None:
            peer.fail(ErrorCode.BAD_PASSWORD, f"'{account.name}' is registered: "
                      "give its password")
            return
        pair = f"user:{key}@{peer.ip}"
        # the owner of a live session, coming back with its secret, is not held back
        # by what others did from the same (shared) address
        keys = [pair] if owner_back(service, key, msg) else [ip_key, pair]
        checked = await check_password(service, peer, key, keys, account.hash, password)
        if checked is None:
            return
        if checked > 0:
            await login_failed(service, peer, checked, name,
                                     f"Wrong password for '{account.name}'")
            return
        service.guard.succeeded([pair], release=[k for k in keys if k == ip_key])
        state = await account_state(service, key)
        account = service.accounts.get(key, account)  # its role may have changed meanwhile
        finish_login(service, peer, msg, account, state)
        return
    finish_login(service, peer, msg, account)


async def account_state(service: Service, key: str) -> tuple[list[str], dict[str, int]]:
    """An account's stored rooms and read markers (none if they cannot be read)."""
    if service.account_store is None:
        return [], {}
    try:
        return await service.account_store.state(key)
    except Exception:
        log.exception("could not read the rooms and read markers of %s", key)
        return [], {}


def owner_back(service: Service, key: str, msg: Message) -> bool:
    """Does this hello carry the secret of the name's live session (``resume``, or its
    ``token``)? Only its owner has either."""
    session = service.sessions.get(key)
    if session is None:
        return False
    given = [(msg.get("resume"), session.resume), (msg.get("token"), session.token)]
    return any(a is not None and b is not None and hmac.compare_digest(a, b)
               for a, b in given)


async def check_password(service: Service, peer: Peer, key: str, keys: list[str], stored: str,
                         password: str) -> float | None:
    """Check a password, one check at a time per account, each once ``keys`` are no
    longer slowed down (a failure just before may have slowed them down: then wait
    again). Returns 0.0 if it matches, else the delay its failure earned (recorded
    before the next check of the account starts); None if the peer went away or was
    told to come back later."""
    loop = asyncio.get_running_loop()
    while True:
        if not await guard_wait(service, keys, peer):
            return None
        async with service.checks.turn(key):
            if service.guard.wait(keys, loop.time()) > 0:
                continue  # the check before ours failed: its delay applies to us
            if peer.closing:
                return None
            service.guard.reserve(keys, loop.time())
            service.counters.login_checks += 1
            ok = await asyncio.to_thread(verify_password, stored, password)
            if peer.closing:
                return None
            return 0.0 if ok else service.guard.failed(keys, loop.time())


def answer_within(service: Service, peer: Peer) -> float:
    """Seconds left to answer this login before its handshake timeout (less a margin):
    the server's own slowing down must end in a clear answer, never in a timeout."""
    left = peer.opened_at + service.policy.handshake_timeout - asyncio.get_running_loop().time()
    return max(0.0, left * 0.8 - 0.05)


async def guard_wait(service: Service, keys: list[str], peer: Peer) -> bool:
    """Wait while these keys are slowed down; False if the peer went away or was told
    to come back later (when the wait would outlast its handshake)."""
    loop = asyncio.get_running_loop()
    while (wait := service.guard.wait(keys, loop.time())) > 0:
        if wait > answer_within(service, peer):
            peer.fail(ErrorCode.RATE_LIMITED, "Too many failed logins from this address "
                      f"or for this name: try again in {math.ceil(wait)} s")
            return False
        await asyncio.sleep(wait)
    return not peer.closing


async def login_failed(service: Service, peer: Peer, delay: float, name: str, message: str) -> None:
    """Answer a failed login (recorded already), after ``delay``."""
    log.warning("failed login as %s from %s (%s); next attempt in %.1f s", name, peer.addr,
                message, delay)
    answer = min(delay, answer_within(service, peer))
    await asyncio.sleep(answer)  # the answer is slowed down, nothing else
    if delay > answer + 0.5:
        message += f" (the next try is looked at in {math.ceil(delay - answer)} s)"
    peer.fail(ErrorCode.BAD_PASSWORD, message)


def finish_login(service: Service, peer: Peer, msg: Message, account: Account | None,
                 state: tuple[list[str], dict[str, int]] | None = None) -> None:
    if peer.closing:
        return
    name: str = account.name if account is not None else msg["user"]
    key = name.casefold()
    if account is None and service.policy.require_accounts:
        peer.fail(ErrorCode.ACCOUNT_REQUIRED, "This server admits registered users only: "
                  f"'{name}' has no account")
        return
    role = account.role if account is not None else None
    ban = service.binding("account", key, role, peer.ip)
    if ban is not None:
        log.info("refused banned user %s from %s", name, peer.addr)
        peer.fail(ErrorCode.BANNED, f"'{name}' is banned {ban.until_text()}"
                  + (f": {ban.reason}" if ban.reason else ""))
        return
    ban = service.binding("address", peer.ip, role, peer.ip)
    if ban is not None:
        refuse_address(peer, name, ban)
        return
    skeleton = name_skeleton(name)
    refusal = lookalike(service, name, key, skeleton, account)
    if refusal is not None:
        log.info("refused %s from %s: %s", name, peer.addr, refusal)
        peer.fail(ErrorCode.NAME_TAKEN, refusal)
        return
    old = service.sessions.get(key)
    if old is not None:
        if old.resume is not None and msg.get("resume") == old.resume:
            # The same client coming back before we noticed it had gone.
            old.chat.fail(ErrorCode.REPLACED, "replaced by a new connection of yours")
            service.logout(old)
        else:
            peer.fail(ErrorCode.NAME_TAKEN, f"Username '{name}' is already taken")
            return
    since, guest = since_of(service, key, account, msg.get("resume"))
    session = Session(name, peer, resume=msg.get("resume"), role=role, skeleton=skeleton,
                      since=since, guest=guest)
    peer.session = session
    service.sessions[key] = session
    service.skeletons[skeleton] = session
    service.tokens[session.token] = session
    if account is not None and state is not None:
        restore(service, session, *state)
    elif guest is not None:
        session.marks = guest.marks  # kept while this guest comes back (resume)
    service.fanout.subscribe(user_topic(key), peer)
    service.fanout.subscribe(ALL, peer)
    peer.accept(
        user=name,
        token=session.token,
        room=DEFAULT_ROOM,
        heartbeat=service.heartbeat,
        **({"role": role} if role else {}),
        limits={"max_text": peer.conn.limits.max_text, "max_frame": peer.conn.limits.max_frame,
                "history": service.history, **service.file_limits},
        **welcome_state(service, session),
    )
    service.send_shares(session)
    log.info("%s logged in from %s%s", name, peer.addr, f" as {role}" if role else "")


def restore(service: Service, session: Session[Peer], rooms: list[str],
            marks: dict[str, int]) -> None:
    """An account's stored rooms and read markers, for its new session: those of rooms
    that are gone (a guest's room expired) or closed to it are forgotten."""
    keep = [r for r in rooms if r in service.rooms and may_enter(service, session, r)]
    session.member_of = set(keep[: service.limits.max_joined])
    for room in set(rooms) - session.member_of:
        service.store_member(session, room, member=False)
    peers = sorted((c for c in marks if c.startswith("@")), key=marks.__getitem__)
    kept = [c for c in marks if c[0] == "#" and c[1:] in session.member_of]
    kept += peers[-MAX_PEER_MARKS:]
    session.marks = {c: marks[c] for c in kept}


def welcome_state(service: Service, session: Session[Peer]) -> dict[str, Any]:
    """What the welcome tells of the user's own state: an account's rooms (to join
    again), the read markers, the private rooms it is invited to and not in."""
    state: dict[str, Any] = {
        "read": [{"room" if c[0] == "#" else "peer": c[1:], "id": i}
                 for c, i in sorted(session.marks.items())],
        "invitations": pending_invitations(service, session)[:WELCOME_INVITATIONS],
    }
    if session.role is not None:
        state["rooms"] = sorted(session.member_of)
    return state


def pending_invitations(service: Service, session: Session[Peer]) -> list[str]:
    """The private rooms this user is invited to and not in."""
    invited: Iterable[str]
    if session.role is None:
        invited = session.guest.invited if session.guest is not None else ()
    else:
        invited = service.invited_to.get(session.key, ())
    return sorted(r for r in invited if r in service.rooms and r not in session.rooms
                  and r not in session.member_of)


def lookalike(service: Service, name: str, key: str, skeleton: str,
              account: Account | None) -> str | None:
    """Why this login would impersonate someone (its name looks like a registered one,
    or like a connected user's: Unicode TS #39 skeletons), or None."""
    other = service.skeletons.get(skeleton)
    if other is not None and other.key != key:
        return f"name '{name}' looks like '{other.name}', which is taken"
    owner = service.lookalikes.get(skeleton)
    if account is None and owner is not None:
        return f"name '{name}' looks like '{owner.name}', which is registered"
    return None


def since_of(service: Service, key: str, account: Account | None,
             resume: str | None) -> tuple[int, Guest | None]:
    """The id after which private messages are this new session's (see Session.since),
    and, for a guest, who it is (see Guest): an account's own since; for a guest, the id
    of now and a new Guest, unless it is the last guest of this name coming back (the
    same resume secret)."""
    if account is not None:
        return (account.since if account.since is not None else service.newest_id), None
    kept = service.guest_since.pop(key, None)
    since, guest = service.newest_id, Guest()
    if kept is not None and resume is not None and hmac.compare_digest(
            kept[0].encode(), resume.encode()):
        since, guest = kept[1], kept[2]
    if resume is not None:
        service.guest_since[key] = (resume, since, guest)
        while len(service.guest_since) > GUEST_SINCE_KEPT:
            service.guest_since.popitem(last=False)
    return since, guest


def refuse_address(peer: Peer, name: str, ban: Ban) -> None:
    log.info("refused %s from banned address %s", name, peer.ip)
    peer.fail(ErrorCode.BANNED, f"This address is banned {ban.until_text()}"
              + (f": {ban.reason}" if ban.reason else ""))
