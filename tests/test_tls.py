"""TLS by default: trust on first use, a changed certificate refused, a real CA honoured."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from chatscreen.client import Client
from chatscreen.errors import ConnectError
from chatscreen.tls import KnownHosts, cert_fingerprint, server_context
from tests.helpers.server import REPO, TIMEOUT, ServerProcess, raw_socket, running_server


def connect(srv: ServerProcess, user: str, **kw: object) -> Client:
    return Client("127.0.0.1", user, chat_port=srv.chat_port, screen_port=srv.screen_port,
                  timeout=TIMEOUT, reconnect=False, **kw)  # type: ignore[arg-type]


def test_first_use_pins_and_a_changed_certificate_is_refused(tmp_path: Path,
                                                             private_config_dir: Path) -> None:
    with running_server(tmp_path / "a") as first:
        port, screen = first.chat_port, first.screen_port
        fp_a = cert_fingerprint(first.data_dir / "tls-cert.pem")

        async def talk() -> None:
            async with connect(first, "alice") as c:
                await c.join("general")
                await c.say("general", "over TLS")
                screen_channel = await c.open_screen()  # the screen port is TLS too
                await screen_channel.close()

        asyncio.run(talk())
    known = KnownHosts(private_config_dir / "known_hosts")
    assert known.get(f"127.0.0.1:{port}") == fp_a
    assert known.get(f"127.0.0.1:{screen}") == fp_a
    # Another server (another certificate) now answers on the same address.
    with running_server(tmp_path / "b", chat_port=port, screen_port=screen) as second:
        fp_b = cert_fingerprint(second.data_dir / "tls-cert.pem")
        assert fp_b != fp_a
        with pytest.raises(ConnectError) as err:
            asyncio.run(connect(second, "alice").connect())
        message = str(err.value)
        assert "has changed" in message and fp_a in message and fp_b in message
        assert str(private_config_dir / "known_hosts") in message
        out = subprocess.run(
            [sys.executable, "-m", "chatscreen", "chat", "--server", f"127.0.0.1:{port}",
             "--user", "bob"], input="hi\n", capture_output=True, text=True, cwd=REPO,
            timeout=3 * TIMEOUT)
        assert out.returncode == 1 and "WARNING: the certificate of" in out.stderr


def test_plain_client_against_tls_server_gets_a_hint(tmp_path: Path) -> None:
    with running_server(tmp_path / "d") as srv, \
            pytest.raises(ConnectError, match="does the server use TLS"):
        asyncio.run(connect(srv, "x", tls=False).connect())


def test_tls_client_against_plain_server_says_so(tmp_path: Path) -> None:
    with running_server(tmp_path / "d", tls=False) as srv, \
            pytest.raises(ConnectError, match="TLS failed"):
        asyncio.run(connect(srv, "x").connect())


def test_only_tls_12_or_newer(tmp_path: Path) -> None:
    with running_server(tmp_path / "d") as srv:
        ctx = server_context(srv.data_dir / "tls-cert.pem", srv.data_dir / "tls-key.pem")
        assert ctx.minimum_version is ssl.TLSVersion.TLSv1_2
        with raw_socket(srv, srv.chat_port) as sock:
            assert isinstance(sock, ssl.SSLSocket)
            assert sock.version() in ("TLSv1.2", "TLSv1.3")


def make_ca_and_cert(tmp: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate it signed for 127.0.0.1 (like a real one)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = tmp / "ca.pem", tmp / "cert.pem", tmp / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def test_real_certificate_with_ca(tmp_path: Path, private_config_dir: Path) -> None:
    ca, cert, key = make_ca_and_cert(tmp_path)
    with running_server(tmp_path / "d", "--tls-cert", str(cert), "--tls-key", str(key)) as srv:
        assert cert_fingerprint(cert) in "".join(srv.output)

        async def talk() -> None:
            async with connect(srv, "alice", ca=ca) as c:
                await c.join("general")

        asyncio.run(talk())
        assert not (private_config_dir / "known_hosts").exists()  # verified, not pinned
        other_ca, _, _ = make_ca_and_cert(tmp_path / "..")
        with pytest.raises(ConnectError, match="not trusted"):
            asyncio.run(connect(srv, "bob", ca=other_ca).connect())
