"""Registration: a guest makes its name an account's (``register``). What may refuse it, and
the account made; the chat service (through :class:`Service`) keeps its rooms and markers."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Protocol

from chatscreen.errors import ErrorCode
from chatscreen.server import rooms
from chatscreen.server.accounts import MIN_PASSWORD, Account, hash_password
from chatscreen.server.rooms import rid_of
from chatscreen.server.storage import utc_now

if TYPE_CHECKING:
    from chatscreen.protocol import Message
    from chatscreen.server.peer import Peer
    from chatscreen.server.session import Session

log = logging.getLogger("chatscreen.chat")


class Service(rooms.Service, Protocol):
    """What registration reads and changes of the chat service (ChatService is one); a
    registration is charged to the create quota (rooms.take_quota)."""

    @property
    def lookalikes(self) -> dict[str, Account]: ...
    def forget_guest(self, key: str) -> None: ...
    async def registered(self, session: Session[Peer]) -> None: ...


def refusal(service: Service, session: Session[Peer],
            password: str) -> tuple[ErrorCode, str] | None:
    """Why ``session`` may not register now (code, text), else None."""
    if service.account_store is None:
        return ErrorCode.FORBIDDEN, "this server has no accounts"
    if session.role is not None or session.key in service.accounts or session.registering:
        return ErrorCode.FORBIDDEN, f"'{session.name}' is already registered"
    if (owner := service.lookalikes.get(session.skeleton)) is not None:
        return ErrorCode.FORBIDDEN, (f"'{session.name}' looks like '{owner.name}', which is "
                                     "registered")
    if len(password) < MIN_PASSWORD:
        return ErrorCode.BAD_PASSWORD, f"a password needs at least {MIN_PASSWORD} characters"
    return None


async def register(service: Service, session: Session[Peer], password: str) -> str | None:
    """Make ``session``'s name an account (the password hashed off the event loop); None, or
    the registered name that took it first (the same, or one it looks like)."""
    store = service.account_store
    assert store is not None
    hashed = await asyncio.to_thread(hash_password, password)
    # The account's private messages are those of this session on
    taken = await store.create(session.name, hashed, "member", session.since)
    if taken is None:
        account = Account(session.key, session.name, hashed, "member", utc_now(),
                          session.skeleton, session.since)
        service.accounts[session.key] = account
        service.lookalikes.setdefault(session.skeleton, account)
        service.forget_guest(session.key)
        session.role = "member"
        await service.registered(session)
    return taken


def request(service: Service, session: Session[Peer], msg: Message) -> None:
    """A ``register`` request: refused at once, or charged to the quota and carried out."""
    rid = rid_of(msg)
    refused = refusal(service, session, msg["password"])
    if refused is not None:
        session.chat.error(*refused, re="register", **rid)
    elif rooms.take_quota(service, session, msg):
        session.registering = True
        service.spawn(_request(service, session, msg["password"], rid))


async def _request(service: Service, session: Session[Peer], password: str,
                   rid: dict[str, Any]) -> None:
    try:
        taken = await register(service, session, password)
    finally:
        session.registering = False
    if taken is not None:
        what = ("is already registered" if taken.casefold() == session.key
                else f"looks like '{taken}', which is registered")
        session.chat.error(ErrorCode.FORBIDDEN, f"'{session.name}' {what}",
                           re="register", **rid)
        return
    log.info("%s registered their name", session.name)
    session.chat.send("registered", user=session.name, role="member", **rid)
