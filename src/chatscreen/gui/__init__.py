"""The desktop app (``chatscreen client``, ``python client.py``): Connection, Chat and
Screen Share tabs on top of the client library. See docs/gui.md for its structure."""

from __future__ import annotations

import sys
from typing import Any


def run_app(server: str | None = None, user: str | None = None,
            screen_port: int | None = None, fingerprint: str | None = None) -> int:
    """Open the window and run until it is closed. Arguments pre-fill the Connection tab
    (otherwise the values remembered from the last successful connection are used)."""
    import tkinter as tk

    from chatscreen.gui.app import App
    from chatscreen.gui.settings import load_settings

    settings = load_settings()
    if (server and server != settings.server) or (
            user and user.casefold() != settings.user.casefold()):
        settings.connected_before = False  # not what connected last: no connecting at launch
    if server:
        settings.server = server
    if user:
        settings.user = user
    if screen_port:
        settings.screen_port = screen_port
    if fingerprint:
        settings.fingerprints[settings.server] = fingerprint
    try:
        root = tk.Tk(className="chatscreen")
    except tk.TclError as exc:
        print(f"chatscreen client: cannot open a window ({exc}); is DISPLAY set?",
              file=sys.stderr)
        return 1
    app = App(root, settings)
    quit_on_signals(root, app)
    root.mainloop()
    app.quit()
    # The window is gone; let the logout finish (stop sharing, close the connections).
    app.wait_closed(timeout=10.0)
    return 0


def quit_on_signals(root: Any, app: Any) -> None:
    """Ctrl+C in the terminal (SIGINT) or SIGTERM (`chatscreen server --app` stopping)
    close the app as Ctrl+Q does. Python runs the handler between two of the app's
    callbacks (it polls every few milliseconds); a SIGINT ignored from the start (`&` in a
    script) stays ignored."""
    import signal

    def handler(_sig: int, _frame: object) -> None:
        root.after_idle(app.quit)

    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) != signal.SIG_IGN:
            signal.signal(sig, handler)


__all__ = ["run_app"]
