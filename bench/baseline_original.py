"""A minimal reproduction of the ORIGINAL app's pipeline, for benchmarks only.

############################################################################################
#  WARNING: THIS IS THE ORIGINAL'S INSECURE DESIGN, REPRODUCED ON PURPOSE FOR COMPARISON.  #
#  It unpickles whatever arrives on the wire (remote code execution for anyone who can     #
#  connect), has no authentication and no length limits. It is NEVER imported by the      #
#  product (``src/chatscreen``); only ``bench/`` uses it, and only on 127.0.0.1.           #
############################################################################################

What it reproduces (from the original README, ``/work/shared/spec/original-readme.md``):

* a threaded socket server: one thread per connection, chat on one port (9999 in the original),
  screen on another (9998);
* chat: the server does a bare ``recv(1024)``, ``pickle.loads`` it, and broadcasts the pickled
  dict with a blocking ``sendall`` to every chat client in turn, the sender included;
* screen: frames are ``struct.pack(">L", len(data)) + data`` where ``data`` is the pickled
  JPEG buffer; the server relays each frame with a blocking ``sendall`` to each other screen
  client in turn (a slow receiver stalls the sharer's thread, hence the sharer);
* the sharer loop: capture the screen, ``cv2.resize`` to 800x600, JPEG, pickle, send,
  ``time.sleep(0.1)``.

Differences, all in the original's favour or unknowable from the README:

* capture uses mss (XShm, ~3 ms per 1920x1080 grab) instead of PyAutoGUI, which is not
  installed here and is much slower on X11;
* JPEG quality 80: the README does not give the original's value;
* pickle uses the default protocol (the original's choice is unknown), with TCP_NODELAY off as
  in the original (plain ``socket.socket``);
* how the original told sharers from viewers on the screen port is not documented: here every
  other screen connection receives every frame.

Run the pieces as processes::

    python -m bench.baseline_original server [--chat-port 0] [--screen-port 0]
    DISPLAY=:5 python -m bench.baseline_original share --screen-port PORT
"""

from __future__ import annotations

import argparse
import contextlib
import pickle
import signal
import socket
import struct
import sys
import threading
import time
from datetime import datetime
from types import FrameType
from typing import Any

HOST = "127.0.0.1"
CHAT_PORT = 9999
SCREEN_PORT = 9998
JPEG_QUALITY = 80  # unknown in the original: see the module docstring
FRAME_SIZE = (800, 600)
SLEEP = 0.1
LEN = struct.Struct(">L")


# -- wire helpers ---------------------------------------------------------------------------


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Read exactly ``n`` bytes; raise ConnectionError on EOF."""
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionError("closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock: socket.socket) -> bytes:
    """One ``>L``-length-prefixed frame body (the pickled JPEG buffer)."""
    (size,) = LEN.unpack(recv_exact(sock, LEN.size))
    return recv_exact(sock, size)


def frame_bytes(body: bytes) -> bytes:
    return LEN.pack(len(body)) + body


# -- the server --------------------------------------------------------------------------


class OriginalServer:
    """The original's ``ChatScreenServer``: two listeners, one thread per client."""

    def __init__(self, host: str, chat_port: int, screen_port: int) -> None:
        self.chat_clients: list[socket.socket] = []
        self.screen_clients: list[socket.socket] = []
        self.lock = threading.Lock()
        self.chat_sock = self._listen(host, chat_port)
        self.screen_sock = self._listen(host, screen_port)
        self.chat_port = self.chat_sock.getsockname()[1]
        self.screen_port = self.screen_sock.getsockname()[1]

    @staticmethod
    def _listen(host: str, port: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(128)
        return s

    def start(self) -> None:
        threading.Thread(target=self._accept, args=(self.chat_sock, self._chat_client),
                         daemon=True).start()
        threading.Thread(target=self._accept, args=(self.screen_sock, self._screen_client),
                         daemon=True).start()

    @staticmethod
    def _accept(listener: socket.socket, handler: Any) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    # chat: recv(1024) -> pickle.loads -> broadcast pickle.dumps with sendall to everyone
    def _chat_client(self, conn: socket.socket) -> None:
        with self.lock:
            self.chat_clients.append(conn)
        try:
            while True:
                data = conn.recv(1024)  # the original's framing: none
                if not data:
                    break
                message = pickle.loads(data)  # INSECURE: the original's design
                if message.get("type") == "join":
                    message = {"type": "system", "message": f"{message['username']} joined",
                               "timestamp": datetime.now().strftime("%H:%M:%S")}
                self._broadcast_chat(message)
        except (OSError, pickle.UnpicklingError, EOFError, ValueError, KeyError,
                AttributeError):
            pass
        finally:
            with self.lock:
                if conn in self.chat_clients:
                    self.chat_clients.remove(conn)
            conn.close()

    def _broadcast_chat(self, message: dict[str, Any]) -> None:
        data = pickle.dumps(message)
        with self.lock:
            clients = list(self.chat_clients)
        for client in clients:  # blocking sendall to each client in turn
            try:
                client.sendall(data)
            except OSError:
                with self.lock:
                    if client in self.chat_clients:
                        self.chat_clients.remove(client)

    # screen: >L framed pickled JPEG, relayed with blocking sendall to each receiver in turn
    def _screen_client(self, conn: socket.socket) -> None:
        with self.lock:
            self.screen_clients.append(conn)
        try:
            while True:
                body = recv_frame(conn)
                data = frame_bytes(body)
                with self.lock:
                    receivers = [c for c in self.screen_clients if c is not conn]
                for receiver in receivers:
                    try:
                        receiver.sendall(data)
                    except OSError:
                        with self.lock:
                            if receiver in self.screen_clients:
                                self.screen_clients.remove(receiver)
        except (OSError, ConnectionError):
            pass
        finally:
            with self.lock:
                if conn in self.screen_clients:
                    self.screen_clients.remove(conn)
            conn.close()

    def close(self) -> None:
        for s in (self.chat_sock, self.screen_sock):
            with contextlib.suppress(OSError):
                s.close()


# -- the sharer --------------------------------------------------------------------------


def capture_frame(sct: Any, monitor: dict[str, int]) -> bytes:
    """Screenshot -> cv2.resize(800x600) -> JPEG -> pickle, as in the original."""
    import cv2
    import numpy as np

    shot = np.asarray(sct.grab(monitor))  # BGRA; the original: PyAutoGUI RGB -> BGR
    frame = cv2.cvtColor(shot, cv2.COLOR_BGRA2BGR)
    frame = cv2.resize(frame, FRAME_SIZE)
    ok, buffer = cv2.imencode(".jpg", frame, [int(cv2.IMWRITE_JPEG_QUALITY), JPEG_QUALITY])
    if not ok:
        raise RuntimeError("cv2.imencode failed")
    return pickle.dumps(buffer)  # the original pickles the encoded frame


def decode_frame(body: bytes) -> Any:
    """What the original's receiver does with a frame body: unpickle, cv2.imdecode (BGR)."""
    import cv2

    buffer = pickle.loads(body)  # INSECURE: the original's design
    return cv2.imdecode(buffer, cv2.IMREAD_COLOR)


def share(host: str, port: int, stop: threading.Event, max_seconds: float) -> int:
    import mss

    frames = 0
    deadline = time.monotonic() + max_seconds
    with socket.create_connection((host, port), timeout=10) as sock, mss.MSS() as sct:
        monitor = sct.monitors[1]
        while not stop.is_set() and time.monotonic() < deadline:
            sock.sendall(frame_bytes(capture_frame(sct, monitor)))
            frames += 1
            time.sleep(SLEEP)
    return frames


# -- command line ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline_original")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("server")
    p.add_argument("--host", default=HOST)
    p.add_argument("--chat-port", type=int, default=CHAT_PORT)
    p.add_argument("--screen-port", type=int, default=SCREEN_PORT)
    p.add_argument("--max-seconds", type=float, default=600.0)
    p = sub.add_parser("share")
    p.add_argument("--host", default=HOST)
    p.add_argument("--screen-port", type=int, default=SCREEN_PORT)
    p.add_argument("--max-seconds", type=float, default=600.0)
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.command == "server":
        server = OriginalServer(args.host, args.chat_port, args.screen_port)
        server.start()
        print(f"chat {server.chat_port} screen {server.screen_port}", flush=True)
        stop.wait(args.max_seconds)
        server.close()
        return 0
    try:
        frames = share(args.host, args.screen_port, stop, args.max_seconds)
    except OSError as exc:
        print(f"share: {exc}", file=sys.stderr)
        return 1
    print(f"sent {frames} frames", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
