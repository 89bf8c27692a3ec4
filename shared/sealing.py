"""Sealed PDF passwords: a requester encrypts a reader's password to the renderer's public key.

A request carries `pdf.password` only as `sealed1:<base64url>`: an ephemeral X25519 key, a
nonce and the AES-256-GCM ciphertext of the password (padded, so its length does not show).
Only the renderer's render process, holding the private key (PRESSROOM_PDF_SEAL_KEY_FILE),
unseals it, just before it encrypts the PDF; the bus, the ledger, logs, traces and dead
letters only ever see the token. `pressroom pdf keys` makes a key pair, `pressroom pdf seal`
seals a password.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shared.events import SEALED_PREFIX

_INFO = b"pressroom pdf password v1"
_PAD = 64  # the sealed length says only "under 62 bytes", "under 126 bytes" …
MAX_PASSWORD_BYTES = 127  # AES-256 PDF passwords are at most 127 UTF-8 bytes


class SealError(ValueError):
    """A token that is not a sealed password for this key (the message holds no secret)."""


def generate_key() -> tuple[bytes, bytes]:
    """A new key pair: the private key (PEM, for the renderer) and the public key (PEM)."""
    private = X25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def public_key_of(pem: bytes) -> bytes:
    """The public key (PEM) of a private or public key file's content."""
    return _public(pem).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _public(pem: bytes) -> X25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        key = _private(pem).public_key()
    if not isinstance(key, X25519PublicKey):
        raise SealError("not an X25519 key (make one with `pressroom pdf keys`)")
    return key


def _private(pem: bytes) -> X25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise SealError("not a PEM private key (make one with `pressroom pdf keys`)") from None
    if not isinstance(key, X25519PrivateKey):
        raise SealError("not an X25519 key (make one with `pressroom pdf keys`)")
    return key


def _cipher(shared: bytes, ephemeral: bytes, recipient: bytes) -> AESGCM:
    key = HKDF(hashes.SHA256(), 32, salt=ephemeral + recipient, info=_INFO).derive(shared)
    return AESGCM(key)


def _raw(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def seal(password: str, public_pem: bytes) -> str:
    """`sealed1:…`: the password, readable only with the private key of `public_pem`."""
    data = password.encode("utf-8")
    if not data:
        raise SealError("the password is empty")
    if len(data) > MAX_PASSWORD_BYTES:
        raise SealError(f"the password is over {MAX_PASSWORD_BYTES} bytes (PDF's limit)")
    recipient = _public(public_pem)
    ephemeral = X25519PrivateKey.generate()
    ephemeral_raw = _raw(ephemeral.public_key())
    size = len(data) + 2
    padded = len(data).to_bytes(2, "big") + data + b"\0" * (-size % _PAD)
    nonce = os.urandom(12)
    sealed = _cipher(ephemeral.exchange(recipient), ephemeral_raw, _raw(recipient)).encrypt(
        nonce, padded, _INFO
    )
    return SEALED_PREFIX + base64.urlsafe_b64encode(ephemeral_raw + nonce + sealed).decode()


def unseal(token: str, private_pem: bytes) -> str:
    """The password of a sealed token; SealError when it was not sealed to this key."""
    if not token.startswith(SEALED_PREFIX):
        raise SealError("not a sealed password")
    try:
        blob = base64.urlsafe_b64decode(token[len(SEALED_PREFIX) :])
    except ValueError:
        raise SealError("a sealed password that is not base64") from None
    if len(blob) < 32 + 12 + 16 + 2:
        raise SealError("a sealed password too short to be one")
    private = _private(private_pem)
    ephemeral_raw, nonce, sealed = blob[:32], blob[32:44], blob[44:]
    try:
        ephemeral = X25519PublicKey.from_public_bytes(ephemeral_raw)
        shared = private.exchange(ephemeral)
        padded = _cipher(shared, ephemeral_raw, _raw(private.public_key())).decrypt(
            nonce, sealed, _INFO
        )
    except (InvalidTag, ValueError):
        raise SealError("the password was not sealed to this renderer's key") from None
    size = int.from_bytes(padded[:2], "big")
    if size == 0 or size > len(padded) - 2:
        raise SealError("a sealed password with a bad length")
    return padded[2 : 2 + size].decode("utf-8")


_BLOB_INFO = b"pressroom sealed blob v1"
BLOB_MAGIC = b"PRSB1"


def seal_bytes(data: bytes, public_pem: bytes) -> bytes:
    """Any bytes sealed to a public key (X25519 + HKDF + AES-256-GCM, like `seal`): whoever
    writes them (the renderer recording a payload) cannot read them back; the holder of the
    private key (the console) can."""
    recipient = _public(public_pem)
    ephemeral = X25519PrivateKey.generate()
    ephemeral_raw = _raw(ephemeral.public_key())
    recipient_raw = _raw(recipient)
    nonce = os.urandom(12)
    key = HKDF(hashes.SHA256(), 32, salt=ephemeral_raw + recipient_raw, info=_BLOB_INFO).derive(
        ephemeral.exchange(recipient)
    )
    return BLOB_MAGIC + ephemeral_raw + nonce + AESGCM(key).encrypt(nonce, data, _BLOB_INFO)


def unseal_bytes(blob: bytes, private_pem: bytes) -> bytes:
    """The bytes of `seal_bytes`; SealError when they were not sealed to this key."""
    if not blob.startswith(BLOB_MAGIC) or len(blob) < len(BLOB_MAGIC) + 32 + 12 + 16:
        raise SealError("not a sealed blob")
    body = blob[len(BLOB_MAGIC) :]
    ephemeral_raw, nonce, sealed = body[:32], body[32:44], body[44:]
    private = _private(private_pem)
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(ephemeral_raw))
        key = HKDF(
            hashes.SHA256(), 32, salt=ephemeral_raw + _raw(private.public_key()), info=_BLOB_INFO
        ).derive(shared)
        return AESGCM(key).decrypt(nonce, sealed, _BLOB_INFO)
    except (InvalidTag, ValueError):
        raise SealError("the blob was not sealed to this key") from None
