"""TLS for both ports: the server's certificate, and the client's trust on first use.

With no certificate configured, the server makes a self-signed one (ECDSA P-256, ten years)
in its data directory on first start and prints its SHA-256 fingerprint in the banner.
Clients pin a server's fingerprint the first time they connect, as SSH does with
known_hosts, and refuse, naming both fingerprints, when it changes. A certificate that the
system's trust store (or ``--ca``) validates for the host name is accepted without pinning,
so real certificates can be renewed freely.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import socket
import ssl
from pathlib import Path

from chatscreen.errors import ChatscreenError


class TLSError(ChatscreenError):
    pass


def fingerprint(der: bytes) -> str:
    """``SHA256:AB:CD:...`` of a DER certificate."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return "SHA256:" + ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def cert_fingerprint(cert_path: Path) -> str:
    return fingerprint(ssl.PEM_cert_to_DER_cert(cert_path.read_text()))


_HEX = frozenset("0123456789ABCDEF")


def parse_fingerprint(text: str) -> str:
    """A fingerprint as a person may type or paste it (``SHA256:ab:cd...``, any case, with
    or without the colons or the ``SHA256:`` prefix) in the form :func:`fingerprint` gives.
    ValueError if it is not 32 bytes of hex."""
    value = text.strip().upper()
    if value.startswith("SHA256:"):
        value = value[len("SHA256:") :]
    digits = value.replace(":", "")
    if len(digits) != 64 or not _HEX.issuperset(digits):
        raise ValueError(f"{text!r} is not a certificate fingerprint: SHA256: and 32 "
                         "two-digit hex numbers, e.g. SHA256:3F:C0:...")
    return "SHA256:" + ":".join(digits[i : i + 2] for i in range(0, 64, 2))


# -- server side ---------------------------------------------------------------------------


def ensure_self_signed(data_dir: Path) -> tuple[Path, Path]:
    """The server's own certificate and key in ``data_dir``, made on first use."""
    cert, key = data_dir / "tls-cert.pem", data_dir / "tls-key.pem"
    if cert.exists() and key.exists():
        return cert, key
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # it holds the messages too
    private = ec.generate_private_key(ec.SECP256R1())
    host = socket.gethostname()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"chatscreen on {host}")])
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.DNSName(host),
                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                         x509.IPAddress(ipaddress.ip_address("::1"))]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    key_pem = private.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    # readable by the owner only, before anything is in them (the certificate is public, but
    # like every file in the data directory it is the owner's: nothing there to warn about)
    _write_private(key, key_pem)
    _write_private(cert, certificate.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise TLSError(f"cannot load the TLS certificate {cert} / key {key}: {exc}") from None
    return ctx


# -- client side ---------------------------------------------------------------------------


def config_dir() -> Path:
    """The user's chatscreen config directory (``CHATSCREEN_CONFIG_DIR`` overrides it)."""
    explicit = os.environ.get("CHATSCREEN_CONFIG_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "chatscreen"


class KnownHosts:
    """``known_hosts``: one ``host:port SHA256:...`` line per server."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config_dir() / "known_hosts"

    def _read(self) -> dict[str, str]:
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return {}
        out = {}
        for line in lines:
            parts = line.split()
            if len(parts) == 2 and not line.startswith("#"):
                out[parts[0]] = parts[1]
        return out

    def get(self, where: str) -> str | None:
        return self._read().get(where)

    def pin(self, where: str, fp: str) -> None:
        entries = self._read()
        entries[where] = fp
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(f"{k} {v}\n" for k, v in sorted(entries.items())))
        tmp.replace(self.path)


def verifying_context(ca: Path | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def pinning_context() -> ssl.SSLContext:
    """Encrypts and authenticates by the pinned fingerprint, checked after the handshake."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def wrong_fingerprint_message(where: str, expected: str, now: str) -> str:
    return (f"Failed to connect to {where}: its certificate is {now}, not {expected} as "
            "given (--fingerprint, or the app's Fingerprint field). Someone may be "
            "intercepting the connection, or the fingerprint given is not this server's: "
            "compare it with the server's banner.")


def changed_certificate_message(where: str, pinned: str, now: str, path: Path) -> str:
    return (f"WARNING: the certificate of {where} has changed! It was {pinned}, it is now "
            f"{now}. Someone may be intercepting the connection, or the server's certificate "
            f"was replaced. If you know it was replaced, remove the line for {where} from "
            f"{path} and connect again.")
