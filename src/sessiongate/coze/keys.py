"""Key and token helpers behind ``sessiongate keygen`` and ``sessiongate token``.

Coze OAuth JWT apps verify RS256 signatures against a public key the operator uploads
in the Coze console (which then shows the key's id, ``COZE_OAUTH_PUBLIC_KEY_ID``).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ..errors import ConfigurationError
from .auth import CozeTokenManager
from .settings import CozeSettings

PRIVATE_KEY_NAME = "coze_oauth_private_key.pem"
PUBLIC_KEY_NAME = "coze_oauth_public_key.pem"
#: RSA modulus size in bits; 2048 is what Coze's console generates itself.
KEY_BITS = 2048


def generate_keypair(out_dir: Path) -> tuple[Path, Path]:
    """Write a new RSA key pair for a Coze OAuth JWT app into ``out_dir``.

    Returns ``(private_path, public_path)``: the private key as unencrypted PKCS#8 PEM
    with mode 0600 (point ``COZE_OAUTH_PRIVATE_KEY_FILE`` at it) and the public key as
    SubjectPublicKeyInfo PEM (upload it to the OAuth app). ``out_dir`` is created (mode
    0700) if missing. Raises ``FileExistsError`` rather than overwrite either file:
    replacing a key in use would break every token exchange until the app is updated.
    """
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    private_path = out_dir / PRIVATE_KEY_NAME
    public_path = out_dir / PUBLIC_KEY_NAME
    for path in (private_path, public_path):
        if path.exists():
            raise FileExistsError(f"{path} already exists; refusing to overwrite a key")
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    private_pem = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    # O_EXCL: never follow or clobber a file created meanwhile; 0600 from the first
    # byte, so the key is never readable by others, not even briefly.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem)
    fd = os.open(public_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(public_pem)
    return private_path, public_path


async def exchange_once(
    settings: CozeSettings, session_name: str, *, timeout: float = 10.0
) -> tuple[str, int]:
    """Perform one OAuth JWT exchange for ``session_name``; return ``(token, expires_at)``.

    ``expires_at`` is unix seconds (Coze's absolute ``expires_in``). For
    ``sessiongate token``: it proves the OAuth app, key and ``COZE_API_BASE`` work.
    Raises ``ConfigurationError`` for missing settings or ``COZE_AUTH_MODE=PAT``, and
    ``CozeAuthError``/``UpstreamError`` for what Coze answered (after bounded retries).
    """
    if settings.auth_mode != "OAUTH_JWT":
        raise ConfigurationError("Token exchange needs COZE_AUTH_MODE=OAUTH_JWT.")
    manager = CozeTokenManager.from_settings(settings, connect_timeout=timeout, timeout=timeout)
    try:
        return await manager.issue_token(session_name)
    finally:
        await manager.aclose()


__all__ = ["KEY_BITS", "PRIVATE_KEY_NAME", "PUBLIC_KEY_NAME", "exchange_once", "generate_keypair"]
