"""DICOM TLS: the :class:`ssl.SSLContext` of the node's listener (``[tls]``).

PS3.15 Annex B defines the secure transport connection profiles.  The node
implements the BCP 195 TLS Secure Transport Connection Profile (B.9, with the
non-downgrading variant B.10 satisfied as well): TLS 1.2 or later only
(RFC 9325 / BCP 195), and for TLS 1.2 only ECDHE or DHE key exchange with an
AEAD cipher (AES-GCM, ChaCha20-Poly1305), which includes every suite B.9 lists
(``TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256``, ``..._AES_256_GCM_SHA384`` and their
DHE twins).  TLS 1.3 suites are all AEAD and are left at OpenSSL's defaults.

The retired Basic TLS profile (B.1: ``TLS_RSA_WITH_3DES_EDE_CBC_SHA``, SSL 3 or
TLS 1.0) and the AES profile (B.2) are deliberately *not* offered: a peer that
only speaks them fails the handshake and is logged.  Compression and
renegotiation are off.  With ``require_client_cert`` the peer must present a
certificate that chains to ``ca_file`` (mutual authentication, PS3.15 B.9
"the Application Entity shall authenticate the peer"); with a ``ca_file`` but
without ``require_client_cert`` a presented certificate is verified, and a peer
without one is still accepted (the AE title policy of :mod:`scp.net.policy`
applies either way).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from scp.config import ConfigError, TlsConfig

#: TLS 1.2 suites of BCP 195 (RFC 9325 4.2): forward secrecy and AEAD only.
TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
    )
)


def _resolve(value: str, base_dir: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base_dir / path)


def tls_files(tls: TlsConfig, base_dir: Path) -> tuple[Path, Path, Path | None]:
    """``(cert, key, ca or None)`` with relative paths resolved; checks they exist.

    Raises :class:`~scp.config.ConfigError` naming the key when a file is missing.
    """
    if not tls.cert_file or not tls.key_file:
        raise ConfigError("tls.cert_file and tls.key_file: required when tls.enabled = true")
    if tls.require_client_cert and not tls.ca_file:
        raise ConfigError("tls.ca_file: required when tls.require_client_cert = true")
    cert = _resolve(tls.cert_file, base_dir)
    key = _resolve(tls.key_file, base_dir)
    ca = _resolve(tls.ca_file, base_dir) if tls.ca_file else None
    for name, path in (("cert_file", cert), ("key_file", key), ("ca_file", ca)):
        if path is not None and not path.is_file():
            raise ConfigError(f"tls.{name}: {path} does not exist")
    return cert, key, ca


def harden(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """TLS 1.2+ and BCP 195 suites on ``ctx`` (either side)."""
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return ctx


def server_context(tls: TlsConfig, base_dir: Path) -> ssl.SSLContext:
    """The listener's context (PS3.15 B.9); raises ConfigError on unusable files."""
    cert, key, ca = tls_files(tls, base_dir)
    ctx = harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_SINGLE_ECDH_USE
    try:
        ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"tls.cert_file/tls.key_file: cannot be loaded: {exc}") from None
    if ca is not None:
        try:
            ctx.load_verify_locations(cafile=str(ca))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"tls.ca_file: cannot be loaded: {exc}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_context(
    ca_file: Path | str,
    cert_file: Path | str | None = None,
    key_file: Path | str | None = None,
) -> ssl.SSLContext:
    """A requestor's context with the same settings (peers, tests, forwarding)."""
    ctx = harden(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    ctx.load_verify_locations(cafile=str(ca_file))
    if cert_file is not None:
        ctx.load_cert_chain(
            certfile=str(cert_file), keyfile=str(key_file) if key_file is not None else None
        )
    return ctx


def describe(sock: ssl.SSLSocket) -> str:
    """``TLSv1.3 TLS_AES_256_GCM_SHA384 peer=CN=...`` for the association log."""
    cipher = sock.cipher()
    peer: dict[str, Any] = dict(sock.getpeercert() or {})
    names = [pair for rdn in peer.get("subject", ()) for pair in rdn]
    subject = ",".join(f"CN={pair[1]}" for pair in names if pair[0] == "commonName")
    text = f"{sock.version()} {cipher[0] if cipher else '?'}"
    return text + (f" peer {subject}" if subject else "")
