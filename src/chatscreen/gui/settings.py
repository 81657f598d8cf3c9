"""What the app remembers between runs: username, server, and the certificate fingerprint
given for each server, in the user's config dir; whether it connects by itself at launch,
and whether that needs a password (never the password itself).

``$CHATSCREEN_CONFIG_DIR/client.toml`` if set (tests use it), else
``$XDG_CONFIG_HOME/chatscreen/client.toml``, else ``~/.config/chatscreen/client.toml``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SERVER = "localhost"
DEFAULT_SCREEN_PORT = 9998


@dataclass
class ClientSettings:
    user: str = ""
    server: str = DEFAULT_SERVER  # HOST or HOST:CHAT_PORT
    screen_port: int = DEFAULT_SCREEN_PORT
    # server (as above) -> the fingerprint given for it (SHA256:...), checked on connecting
    fingerprints: dict[str, str] = field(default_factory=dict)
    # connect at launch as the user who connected last (see App.auto_connect)
    auto_connect: bool = True
    password: bool = False  # that user logs in with a password (CHATSCREEN_PASSWORD) ...
    server_password: bool = False  # ... and the server asks for one (its variable)
    # these settings are those of a connection that worked (read from the file, not saved)
    connected_before: bool = field(default=False, compare=False)


def server_key(host: str, chat_port: int) -> str:
    """How a server is remembered: HOST, or HOST:PORT for another port than 9999."""
    return host if chat_port == 9999 else f"{host}:{chat_port}"


def config_path() -> Path:
    explicit = os.environ.get("CHATSCREEN_CONFIG_DIR")
    if explicit:
        return Path(explicit) / "client.toml"
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "chatscreen" / "client.toml"


def load_settings(path: Path | None = None) -> ClientSettings:
    """The remembered settings; defaults for anything missing or unreadable."""
    path = path or config_path()
    settings = ClientSettings()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8")).get("client", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return settings
    if isinstance(data.get("user"), str):
        settings.user = data["user"]
        settings.connected_before = bool(data["user"])  # saved only once connected
    if isinstance(data.get("server"), str) and data["server"]:
        settings.server = data["server"]
    port = data.get("screen_port")
    if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
        settings.screen_port = port
    for flag in ("auto_connect", "password", "server_password"):
        if isinstance(data.get(flag), bool):
            setattr(settings, flag, data[flag])
    given = data.get("fingerprints")
    if isinstance(given, dict):
        settings.fingerprints = {k: v for k, v in given.items() if isinstance(v, str)}
    return settings


def save_settings(settings: ClientSettings, path: Path | None = None) -> None:
    """Write the settings (best effort: an unwritable config dir is not an error)."""
    path = path or config_path()
    lines = ["[client]"]
    # A JSON string is a valid TOML basic string (and quoted key) for a name or host.
    for key, value in (("user", settings.user), ("server", settings.server),
                       ("screen_port", settings.screen_port)):
        lines.append(f"{key} = {json.dumps(value, ensure_ascii=False)}")
    for key, flag, default in (("auto_connect", settings.auto_connect, True),
                               ("password", settings.password, False),
                               ("server_password", settings.server_password, False)):
        if flag != default:
            lines.append(f"{key} = {json.dumps(flag)}")
    if settings.fingerprints:
        lines.append("[client.fingerprints]")
        lines.extend(f"{json.dumps(k, ensure_ascii=False)} = {json.dumps(v)}"
                     for k, v in sorted(settings.fingerprints.items()))
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        tmp.replace(path)
