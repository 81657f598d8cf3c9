"""Server settings: defaults, then a TOML file, then ``CHATSCREEN_*`` environment variables,
then command-line flags (flags win)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from chatscreen.durations import parse_duration
from chatscreen.errors import ChatscreenError


@dataclass(frozen=True)
class ServerSettings:
    host: str = "0.0.0.0"
    chat_port: int = 9999
    screen_port: int = 9998
    data_dir: Path = Path("data")
    history: int = 100  # messages a client gets on joining a room
    tls: bool = True  # TLS on both ports; off only when asked for (--no-tls)
    tls_cert: Path | None = None  # a real certificate; default: self-signed, made on first start
    tls_key: Path | None = None
    heartbeat: float = 15.0  # seconds of silence before we ping; 3x that and we hang up
    handshake_timeout: float = 10.0
    max_text: int = 4000
    max_screen_frame: int = 64 << 20
    max_share_pixels: int = 7680 * 4320  # a share's width x height (8K); larger is refused
    max_screen_memory: int = 1 << 30  # bytes all shares' pictures may take together
    screen_rate_bytes: int = 32 << 20  # bytes a second one screen connection may send ...
    screen_rate_bytes_per_address: int = 64 << 20  # ... and all those of one address together
    screen_rate_frames: float = 240.0  # frames (and pointer moves) a second per connection
    durability: str = "normal"  # "normal" (survives kill -9) or "full" (survives power loss)
    storage_check: str = "quick"  # at start: PRAGMA quick_check, "full" integrity_check, "off"
    slow_timeout: float = 10.0  # a chat client that reads nothing this long is cut off
    slow_limit: int = 8 << 20  # bytes a chat client may be behind; more and it is cut off
    send_budget: int = 32 << 20  # bytes queued for all chat clients; past it the slowest go
    rate_messages: float = 20.0  # chat requests a second per user, sustained ...
    rate_burst: int = 60  # ... and in a burst; faster senders are slowed down (not dropped)
    rate_bytes: int = 256 << 10  # bytes a second a user may send on the chat port
    flood_timeout: float = 30.0  # slowed down without a pause this long: disconnected
    max_connections_per_address: int = 32
    # requests that make the server keep something (a new room, an invitation, a registration)
    create_rate: float = 0.2  # a second, per address and per account, sustained ...
    create_burst: int = 10  # ... and in a burst (then: rate_limited, not fatal)
    max_rooms: int = 10_000  # rooms the server holds in all
    max_rooms_per_guest: int = 20  # rooms the guests of one address may have (until they expire)
    max_rooms_per_member: int = 100  # rooms one account may create (admins: no cap)
    room_expiry: float = 600.0  # seconds a guest's room may stay empty before it goes
    max_joined: int = 100  # rooms one connection may be in at once
    max_invitations: int = 1000  # names invited to one private room
    max_handshakes: int = 256  # connections not yet logged in (more: see Server._make_room)
    login_queue: int = 1024  # ... and more waiting for one of those slots; past it, refused
    metrics_host: str = "127.0.0.1"
    metrics_port: int = -1  # -1: no /health and /metrics endpoint; 0: any free port
    server_password: str | None = None  # asked in every hello; config file or environment
    require_accounts: bool = False  # no guests: only registered names may log in
    share_roles: str = "everyone"  # or a comma list of roles (admin, moderator, member, guest)
    login_delay: float = 0.5  # a failed login's answer waits this long, doubling ...
    login_delay_max: float = 30.0  # ... up to this, per address and per account
    log_level: str = "info"
    log_format: str = "text"  # or "json": one JSON object per line
    # files in chat (docs/protocol.md, "Files"); sizes in bytes, times in seconds
    max_file_size: int = 100 * 1000 * 1000  # one file at most
    file_quota: int = 1000 * 1000 * 1000  # per user: files posted and uploads under way
    file_rooms: str = "*"  # where files may be posted: "*" (everywhere), or rooms and "@"
    #                        (private messages), comma-separated; "" turns files off
    file_retention: float = 0.0  # files older than this go (their messages stay); 0: never
    file_partial_keep: float = 86400.0  # a dropped upload's bytes are kept this long
    uploads_per_user: int = 4  # uploads under way at once, per user ...
    uploads_per_connection: int = 2  # ... and per connection
    upload_rate_bytes: int = 512 << 20  # bytes a second of chunks, per connection ...
    upload_rate_bytes_per_address: int = 1 << 30  # ... and per address (not screen_rate_*)


class ConfigError(ChatscreenError):
    pass


# settings in seconds that also take a duration as people type it: "30d", "12h"
DURATION_SETTINGS = frozenset({"file_retention", "file_partial_keep"})


def _coerce(name: str, value: Any, kind: type) -> Any:
    if name in DURATION_SETTINGS and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        try:
            return float(parse_duration(value))
        except ValueError as exc:
            raise ConfigError(f"setting {name}: {exc}") from None
    try:
        if kind is Path:
            return Path(value).expanduser()
        if kind is bool:
            return str(value).lower() in ("1", "true", "yes", "on")
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name}: {value!r} is not a valid {kind.__name__}") from None


_TYPES = {"str": str, "int": int, "float": float, "Path": Path, "bool": bool}


def load_settings(config_file: Path | None = None, env: dict[str, str] | None = None,
                  **flags: Any) -> ServerSettings:
    env = dict(os.environ) if env is None else env
    values: dict[str, Any] = {}
    kinds = {f.name: _TYPES[str(f.type).removesuffix(" | None")] for f in fields(ServerSettings)}
    if config_file is None and env.get("CHATSCREEN_CONFIG"):
        config_file = Path(env["CHATSCREEN_CONFIG"])
    if config_file is not None:
        try:
            data = tomllib.loads(config_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {config_file}: {exc}") from None
        section = data.get("server", data)
        for key, value in section.items():
            name = key.replace("-", "_")
            if name not in kinds:
                raise ConfigError(f"{config_file}: unknown setting {key!r}")
            values[name] = _coerce(name, value, kinds[name])
    for name, kind in kinds.items():
        raw = env.get(f"CHATSCREEN_{name.upper()}")
        if raw is not None and raw != "":
            values[name] = _coerce(name, raw, kind)
    for name, value in flags.items():
        if value is not None:
            values[name] = _coerce(name, value, kinds[name])
    settings = replace(ServerSettings(), **values)
    if settings.log_format not in ("text", "json"):
        raise ConfigError("log_format must be 'text' or 'json'")
    if settings.durability not in ("normal", "full"):
        raise ConfigError("durability must be 'normal' or 'full'")
    if settings.storage_check not in ("quick", "full", "off"):
        raise ConfigError("storage_check must be 'quick', 'full' or 'off'")
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise ConfigError("give both tls_cert and tls_key, or neither")
    roles = {r.strip() for r in settings.share_roles.split(",") if r.strip()}
    if roles != {"everyone"} and not roles <= {"admin", "moderator", "member", "guest"}:
        raise ConfigError("share_roles must be 'everyone' or a comma list of admin, moderator, "
                          "member, guest")
    if min(settings.create_rate, settings.create_burst, settings.room_expiry) <= 0:
        raise ConfigError("create_rate, create_burst and room_expiry must be positive")
    if settings.max_share_pixels < 1 or settings.max_screen_memory < 1:
        raise ConfigError("max_share_pixels and max_screen_memory must be positive")
    for name in ("screen_rate_bytes", "screen_rate_bytes_per_address", "screen_rate_frames"):
        if getattr(settings, name) <= 0:
            raise ConfigError(f"{name} must be positive")
    for name in ("max_file_size", "file_quota", "uploads_per_user", "uploads_per_connection",
                 "upload_rate_bytes", "upload_rate_bytes_per_address"):
        if getattr(settings, name) <= 0:
            raise ConfigError(f"{name} must be positive")
    if settings.file_retention < 0 or settings.file_partial_keep <= 0:
        raise ConfigError("file_retention must be 0 (keep) or more, file_partial_keep positive")
    if settings.server_password == "":
        raise ConfigError("server_password is empty")
    for port in (settings.chat_port, settings.screen_port, max(settings.metrics_port, 0)):
        if not 0 <= port <= 65535:
            raise ConfigError(f"port {port} is out of range")
    return settings
