"""Registration: a guest makes its name an account's (``register``). What may refuse it, and
the account made; the chat service (through :class:`Service`) keeps its rooms and markers."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from chatscreen.errors import ErrorCode
from chatscreen.server.accounts import MIN_PASSWORD, Account, AccountStore, hash_password
from chatscreen.server.storage import utc_now

if TYPE_CHECKING:
    from chatscreen.server.peer import Peer
    from chatscreen.server.session import Session


class Service(Protocol):
    """What registration reads and changes of the chat service (ChatService is one)."""

    @property
    def account_store(self) -> AccountStore | None: ...
    @property
    def accounts(self) -> dict[str, Account]: ...
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
