"""The desktop app (``chatscreen client``, ``python client.py``): Connection, Chat and
Screen Share tabs on top of the client library. See docs/gui.md for its structure."""

from __future__ import annotations

import sys


def run_app(server: str | None = None, user: str | None = None,
            screen_port: int | None = None, fingerprint: str | None = None) -> int:
    """Open the window and run until it is closed. Arguments pre-fill the Connection tab
    (otherwise the values remembered from the last successful connection are used)."""
    import tkinter as tk

    from chatscreen.gui.app import App
    from chatscreen.gui.settings import load_settings

    settings = load_settings()
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
    root.mainloop()
    app.quit()
    # The window is gone; let the logout finish (stop sharing, close the connections).
    app.wait_closed(timeout=10.0)
    return 0


__all__ = ["run_app"]
