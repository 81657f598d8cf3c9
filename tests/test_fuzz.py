"""Fuzzing the protocol core (pure, stateful) and the real server (live, over TLS).

Budgets: ``CHATSCREEN_FUZZ_EXAMPLES`` (default 60) examples per pure test and
``CHATSCREEN_FUZZ_LIVE_EXAMPLES`` (default 25) live examples, small enough for ``make test``;
``make fuzz`` runs this file with large budgets and a random seed.

Properties: only a RemoteProtocolError with an ErrorCode ever escapes ``Connection``; valid
messages are accepted with their fields; the handshake is enforced as documented (nothing but
hello before the welcome, nothing between hello and accept, no second hello; a client takes
nothing but welcome or error first). Live: the server answers fuzzed peers with schema-valid
frames and, when it hangs up, a fatal error with a stable code other than ``internal``; it logs
no error, never dies or hangs, and a well-behaved client still joins, says and gets its echo.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import ssl
import struct
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from chatscreen.client import Client
from chatscreen.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from chatscreen.protocol import (
    PROTOCOL_VERSION,
    Connection,
    Frame,
    FrameDecoder,
    Limits,
    Message,
    Role,
    State,
    encode_frame,
)
from chatscreen.protocol.schema import (
    CLIENT_MESSAGES,
    DERIVED,
    SERVER_MESSAGES,
    Spec,
    parse_message,
)
from tests.helpers.fuzz import (
    Header,
    bad_frame,
    chunks_of,
    expected_keys,
    valid_message,
    value_strategy,
)
from tests.helpers.server import TIMEOUT, ServerProcess, raw_socket, running_server

EXAMPLES = int(os.environ.get("CHATSCREEN_FUZZ_EXAMPLES", "60"))
LIVE_EXAMPLES = int(os.environ.get("CHATSCREEN_FUZZ_LIVE_EXAMPLES", "25"))
STEPS = int(os.environ.get("CHATSCREEN_FUZZ_STEPS", "30"))

FUZZ = settings(max_examples=EXAMPLES, deadline=None, stateful_step_count=STEPS,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
LIVE = settings(max_examples=LIVE_EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture,
                                       HealthCheck.filter_too_much])

LIMITS = Limits(max_frame=1 << 20, max_header=256 << 10, max_text=200)  # valid headers fit
CODES = frozenset(ErrorCode)


def test_every_schema_field_has_a_strategy() -> None:
    """A validator the fuzz strategies do not know fails here (extend tests/helpers/fuzz.py)."""
    for table in (CLIENT_MESSAGES, SERVER_MESSAGES):
        for spec in table.values():
            for key, check in (*spec.required.items(), *spec.optional.items()):
                if key != "rects":  # drawn with the frame's size and payload
                    value_strategy(check, LIMITS)


# -- the pure protocol core, as a state machine ----------------------------------------------


@dataclass
class Queued:
    end: int  # stream offset just past this frame
    header: Header
    payload: bytes


class ConnectionMachine(RuleBasedStateMachine):
    """Queue valid and broken frames, feed them in random pieces, take the messages one at a
    time as the server's Peer does (accepting a hello in between, or not), and compare with a
    model of the documented state machine. The model stays exact until a broken frame is
    queued; after that only the invariants are checked."""

    role: ClassVar[Role]
    inbound: ClassVar[Mapping[str, Spec]]
    outbound: ClassVar[Mapping[str, Spec]]

    def __init__(self) -> None:
        super().__init__()
        self.conn = Connection(self.role, LIMITS)
        self.model = self.conn.state
        self.exact = True
        self.wire = bytearray()  # queued, not fed yet
        self.queued = 0  # bytes queued in all
        self.fed = 0
        self.pending: deque[Queued] = deque()
        self.messages = 0

    # the model -------------------------------------------------------------------------

    def predict(self, state: State, kind: str, header: Header) -> tuple[ErrorCode | None, State]:
        """What the documented state machine does with a valid message of this type."""
        if self.role is Role.SERVER:
            if state is State.AWAIT_HELLO:
                if kind != "hello":
                    return ErrorCode.UNEXPECTED, state
                if header["v"] != PROTOCOL_VERSION:
                    return ErrorCode.UNSUPPORTED_VERSION, state
                return None, State.HELLO_RECEIVED
            if state is State.HELLO_RECEIVED or kind == "hello":
                return ErrorCode.UNEXPECTED, state
            return None, state
        if state is State.AWAIT_WELCOME:
            if kind == "welcome":
                return None, State.OPEN
            return (None, state) if kind == "error" else (ErrorCode.UNEXPECTED, state)
        return None, state

    def check_transition(self, before: State, msg: Message) -> None:
        """Holds for every message taken, valid stream or not."""
        after = self.conn.state
        assert msg.type in self.inbound
        assert before is not State.CLOSED, "a closed connection yielded a message"
        if self.role is Role.SERVER:
            assert before is not State.HELLO_RECEIVED, f"took {msg.type} before accept()"
            if before is State.AWAIT_HELLO:
                assert msg.type == "hello" and msg["v"] == PROTOCOL_VERSION
                assert after is State.HELLO_RECEIVED
            else:
                assert msg.type != "hello" and after is State.OPEN
        elif before is State.AWAIT_WELCOME:
            assert msg.type in ("welcome", "error")
            assert after is (State.OPEN if msg.type == "welcome" else State.AWAIT_WELCOME)
        else:
            assert after is State.OPEN

    # queueing --------------------------------------------------------------------------

    def queue(self, header: Header, payload: bytes) -> None:
        data = encode_frame(header, payload)
        self.wire += data
        self.queued += len(data)
        self.pending.append(Queued(self.queued, header, payload))

    @rule(msg=st.data())
    def queue_valid(self, msg: st.DataObject) -> None:
        header, payload = msg.draw(valid_message(self.inbound, LIMITS))
        self.queue(header, payload)

    @rule(raw=st.data())
    def queue_broken(self, raw: st.DataObject) -> None:
        data = raw.draw(bad_frame(self.inbound, LIMITS, self.outbound))
        self.wire += data
        self.queued += len(data)
        self.exact = False

    # feeding ---------------------------------------------------------------------------

    @rule(data=st.data())
    def feed_some(self, data: st.DataObject) -> None:
        n = data.draw(st.integers(0, len(self.wire)) | st.just(min(1, len(self.wire))),
                      label="bytes")
        self.feed(n, data)

    @rule(data=st.data())
    def feed_all(self, data: st.DataObject) -> None:
        self.feed(len(self.wire), data)

    def feed(self, n: int, data: st.DataObject) -> None:
        chunk = bytes(self.wire[:n])
        del self.wire[:n]
        self.fed += n
        messages = self.conn.receive_data(chunk)
        while True:
            before = self.conn.state
            try:
                msg = next(messages)
            except StopIteration:
                break
            except RemoteProtocolError as exc:
                assert exc.code in CODES
                if self.exact and self.model is not State.CLOSED:
                    head = self.pending.popleft()
                    code, _ = self.predict(self.model, head.header["type"], head.header)
                    assert exc.code is code, (exc.code, exc.message, head.header)
                self.close_like_a_peer()
                return
            self.check_transition(before, msg)
            self.messages += 1
            if self.exact:
                head = self.pending.popleft()
                assert head.end <= self.fed
                code, self.model = self.predict(self.model, head.header["type"], head.header)
                assert code is None, f"{head.header} was accepted, expected {code}"
                assert msg.type == head.header["type"] and msg.payload == head.payload
                spec = self.inbound[msg.type]
                assert set(msg.fields) - DERIVED == expected_keys(head.header, spec)
            if (self.conn.state is State.HELLO_RECEIVED
                    and data.draw(st.booleans(), label="accept at once")):
                self.do_accept()
        if self.exact and self.model is not State.CLOSED:
            assert not self.pending or self.pending[0].end > self.fed, "a frame was not taken"

    def close_like_a_peer(self) -> None:
        self.conn.close()
        self.model = State.CLOSED
        self.exact = True
        self.pending.clear()

    # our own side ----------------------------------------------------------------------

    def do_accept(self) -> None:
        self.conn.accept(user="alice", token="t", room="general")
        self.model = State.OPEN

    @rule(kind=st.sampled_from(sorted(CLIENT_MESSAGES.keys() | SERVER_MESSAGES.keys())))
    def try_send(self, kind: str) -> None:
        state = self.conn.state
        if self.role is Role.SERVER:
            if kind == "welcome":
                return  # accept() is the way to send it (see test_welcome_only_via_accept)
            refused = state is not State.OPEN and kind != "error"
        else:  # a client never sends welcome
            refused = (state is State.AWAIT_WELCOME and kind != "hello") or kind == "welcome"
        if state is State.CLOSED:
            refused = True
        if refused:
            with pytest.raises(LocalProtocolError):
                self.conn.send(kind)
        else:
            assert FrameDecoder(LIMITS).feed(self.conn.send(kind))[0].header == {"type": kind}
        assert self.conn.state is state

    @rule(fatal=st.booleans())
    def close(self, fatal: bool) -> None:
        if fatal:
            self.conn.error(ErrorCode.SHUTDOWN, "bye", fatal=True)
        else:
            self.conn.close()
        assert self.conn.state is State.CLOSED
        self.close_like_a_peer()

    @invariant()
    def state_matches(self) -> None:
        if self.exact:
            assert self.conn.state is self.model


class ServerSide(ConnectionMachine):
    role = Role.SERVER
    inbound = CLIENT_MESSAGES
    outbound = SERVER_MESSAGES

    @initialize(handshake=st.booleans(), user=valid_message(CLIENT_MESSAGES, LIMITS, ("hello",)))
    def start(self, handshake: bool, user: tuple[Header, bytes]) -> None:
        if handshake:  # so that broken frames often come after a completed handshake
            header, _ = user
            header["v"] = PROTOCOL_VERSION
            [hello] = self.conn.receive_data(encode_frame(header))
            assert hello.type == "hello"
            self.do_accept()

    @rule(hello=valid_message(CLIENT_MESSAGES, LIMITS, ("hello",)), v1=st.booleans())
    def queue_hello(self, hello: tuple[Header, bytes], v1: bool) -> None:
        header, payload = hello
        if v1:
            header["v"] = PROTOCOL_VERSION
        self.queue(header, payload)

    @precondition(lambda self: self.conn.state is not State.HELLO_RECEIVED)
    @rule()
    def accept_refused(self) -> None:
        with pytest.raises(LocalProtocolError):
            self.conn.accept(user="a", token="t", room="general")

    @precondition(lambda self: self.conn.state is State.HELLO_RECEIVED)
    @rule()
    def accept_later(self) -> None:
        self.do_accept()


class ClientSide(ConnectionMachine):
    role = Role.CLIENT
    inbound = SERVER_MESSAGES
    outbound = CLIENT_MESSAGES

    @initialize(handshake=st.booleans(),
                welcome=valid_message(SERVER_MESSAGES, LIMITS, ("welcome",)))
    def start(self, handshake: bool, welcome: tuple[Header, bytes]) -> None:
        if handshake:
            [msg] = self.conn.receive_data(encode_frame(welcome[0]))
            assert msg.type == "welcome"
            self.model = State.OPEN

    @rule(msg=valid_message(SERVER_MESSAGES, LIMITS, ("welcome", "error")))
    def queue_welcome_or_error(self, msg: tuple[Header, bytes]) -> None:
        self.queue(*msg)


TestServerConnection = ServerSide.TestCase
TestServerConnection.settings = FUZZ
TestClientConnection = ClientSide.TestCase
TestClientConnection.settings = FUZZ


@given(
    table=st.sampled_from([CLIENT_MESSAGES, SERVER_MESSAGES]),
    frames=st.data(),
)
@FUZZ
def test_valid_messages_parse_with_their_fields(table: Mapping[str, Spec],
                                                frames: st.DataObject) -> None:
    header, payload = frames.draw(valid_message(table, LIMITS))
    msg = parse_message(Frame(header, payload), table, LIMITS)
    assert msg.type == header["type"]
    assert set(msg.fields) - DERIVED == expected_keys(header, table[msg.type])


def test_welcome_only_via_accept() -> None:
    server = Connection(Role.SERVER, LIMITS)
    with pytest.raises(LocalProtocolError):
        server.send("welcome", v=1, user="a", token="t", room="general")


def test_broken_frame_behind_valid_ones_is_reported_at_once() -> None:
    server = Connection(Role.SERVER, LIMITS)
    list(server.receive_data(encode_frame({"type": "hello", "v": 1, "user": "a"})))
    server.accept(user="a", token="t", room="general")
    wire = encode_frame({"type": "ping"}) + struct.pack(">II", 4, 0)  # an empty header
    with pytest.raises(RemoteProtocolError) as err:
        list(server.receive_data(wire))
    assert err.value.code is ErrorCode.BAD_FRAME


# -- the live server --------------------------------------------------------------------------

CHAT_LIMITS = Limits(max_frame=1 << 20, max_header=1 << 20, max_text=4000)
SCREEN_LIMITS = Limits(max_frame=64 << 20, max_header=1 << 20, max_text=4000)
CLIENT_LIMITS = Limits(max_frame=256 << 20, max_header=16 << 20, max_text=4000)
_names = itertools.count(1)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"CHATSCREEN_MAX_CONNECTIONS_PER_ADDRESS": "100000",
           "CHATSCREEN_MAX_HANDSHAKES": "100000"}
    with running_server(tmp_path_factory.mktemp("fuzz") / "data", env=env) as srv:
        yield srv
        assert srv.proc is not None and srv.proc.poll() is None, srv.stderr_text()


class Reader:
    """Frames from a raw socket, read as they come."""

    def __init__(self, sock: socket.socket, srv: ServerProcess) -> None:
        self.sock = sock
        self.srv = srv
        self.decoder = FrameDecoder(CLIENT_LIMITS)
        self.headers: list[Header] = []
        self.closed = False

    def until(self, done: Callable[[Header], bool]) -> Header | None:
        """Read until a frame satisfies ``done`` (returned) or the server hangs up (None)."""
        for h in self.headers:
            if done(h):
                return h
        while not self.closed:
            try:
                data = self.sock.recv(1 << 16)
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
                data = b""
            except TimeoutError:
                log = self.srv.stderr_text()[-1500:]
                raise AssertionError(f"the server neither answered nor hung up in {TIMEOUT}s; "
                                     f"got {self.headers[-5:]}; server log: {log}") from None
            if not data:
                self.closed = True
                break
            found = None
            for frame in self.decoder.feed(data):
                # whatever the server sends must follow the schema
                parse_message(frame, SERVER_MESSAGES, CLIENT_LIMITS)
                self.headers.append(frame.header)
                if found is None and done(frame.header):
                    found = frame.header
            if found is not None:
                return found
        return None


def send_quietly(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
        return False
    return True


def login(srv: ServerProcess, port: int, stack: contextlib.ExitStack,
          **hello: Any) -> tuple[socket.socket, Reader, Header]:
    sock = stack.enter_context(raw_socket(srv, port))
    reader = Reader(sock, srv)
    sock.sendall(encode_frame({"type": "hello", "v": PROTOCOL_VERSION, **hello}))
    welcome = reader.until(lambda h: h["type"] in ("welcome", "error"))
    assert welcome is not None and welcome["type"] == "welcome", reader.headers
    return sock, reader, welcome


def oracle(limits: Limits, wire: bytes, handshake: bool) -> tuple[ErrorCode | None, bool]:
    """What the protocol core makes of the bytes: the fatal code (if any) and whether the
    stream ends on a frame boundary."""
    conn = Connection(Role.SERVER, limits)
    if handshake:
        list(conn.receive_data(encode_frame({"type": "hello", "v": 1, "user": "x"})))
        conn.accept()
    try:
        for _ in conn.receive_data(wire):
            if conn.state is State.HELLO_RECEIVED:
                conn.accept()
    except RemoteProtocolError as exc:
        return exc.code, False
    return None, conn._decoder.buffered == 0


@st.composite
def live_cases(draw: st.DrawFn) -> tuple[str, bool, list[bytes]]:
    port = draw(st.sampled_from(("chat", "screen")))
    handshake = draw(st.booleans())
    limits = CHAT_LIMITS if port == "chat" else SCREEN_LIMITS
    kinds = tuple(k for k in CLIENT_MESSAGES if k != "hello" or not handshake)
    item = st.one_of(
        valid_message(CLIENT_MESSAGES, limits, kinds).map(lambda m: encode_frame(*m)),
        bad_frame(CLIENT_MESSAGES, limits, SERVER_MESSAGES),
    )
    wire = b"".join(draw(st.lists(item, max_size=6)))
    return port, handshake, draw(chunks_of(wire))


async def well_behaved(srv: ServerProcess, n: int) -> None:
    async with asyncio.timeout(3 * TIMEOUT):
        async with Client("127.0.0.1", f"steady-{n}", chat_port=srv.chat_port,
                          screen_port=srv.screen_port, timeout=TIMEOUT) as c:
            await c.join("general")
            echo = await c.say("general", f"still here {n}")
            assert echo["text"] == f"still here {n}" and echo["user"] == f"steady-{n}"


@given(case=live_cases())
@LIVE
def test_live_server_survives_fuzzed_peers(fuzz_server: ServerProcess,
                                           case: tuple[str, bool, list[bytes]]) -> None:
    srv = fuzz_server
    port_kind, handshake, chunks = case
    n = next(_names)
    log_path = srv.stderr_path
    log_offset = log_path.stat().st_size
    wire = b"".join(chunks)
    limits = CHAT_LIMITS if port_kind == "chat" else SCREEN_LIMITS
    fatal, on_boundary = oracle(limits, wire, handshake)
    note(f"wire={wire!r}\nprotocol core: fatal={fatal} on_boundary={on_boundary}")
    with contextlib.ExitStack() as stack:
        if port_kind == "chat":
            port = srv.chat_port
            if handshake:
                sock, reader, _ = login(srv, port, stack, user=f"fuzz-{n}")
            else:
                sock = stack.enter_context(raw_socket(srv, port))
                reader = Reader(sock, srv)
        else:
            port = srv.screen_port
            if handshake:
                _, _, welcome = login(srv, srv.chat_port, stack, user=f"fuzz-{n}")
                sock, reader, _ = login(srv, port, stack, token=welcome["token"])
            else:
                sock = stack.enter_context(raw_socket(srv, port))
                reader = Reader(sock, srv)
        for chunk in chunks:
            if not send_quietly(sock, chunk):
                break
        if fatal is not None:
            # a broken stream: the server must hang up, with a fatal error
            assert reader.until(lambda h: False) is None
        elif on_boundary:
            # a well-formed stream: a ping behind it is answered, unless the server hung up
            send_quietly(sock, encode_frame({"type": "ping", "n": n}))
            reader.until(lambda h: h["type"] == "pong" and h.get("n") == n)
        # else: cut in the middle of a frame; we hang up, the server copes
        errors = [h for h in reader.headers if h["type"] == "error"]
        for e in errors:
            assert e["code"] in CODES and e["code"] != ErrorCode.INTERNAL, e
        if reader.closed:
            assert errors and errors[-1]["fatal"] is True, (wire[:200], reader.headers)
        if fatal is not None:
            assert errors[-1]["code"] in CODES
    assert srv.proc is not None and srv.proc.poll() is None, srv.stderr_text()
    asyncio.run(well_behaved(srv, n))
    with open(log_path, "rb") as log:
        log.seek(log_offset)
        new = log.read().decode("utf-8", "replace")
    assert "Traceback" not in new and " ERROR " not in new, (wire[:300], new[-3000:])


def test_lone_surrogate_in_cid_is_refused_or_stored(fuzz_server: ServerProcess) -> None:
    with contextlib.ExitStack() as stack:
        sock, reader, _ = login(fuzz_server, fuzz_server.chat_port, stack, user="surrogate")
        sock.sendall(encode_frame({"type": "join", "room": "general"})
                     + encode_frame({"type": "say", "room": "general", "text": "hi",
                                     "cid": "\ud800"}))
        answer = reader.until(lambda h: h["type"] in ("message", "error"))
    assert answer is not None
    assert answer["type"] == "message" or answer["code"] == ErrorCode.BAD_MESSAGE, answer
