"""The node key on disk: a small JSON file, its seed in clear or sealed by a passphrase.

    {"format": "p2pnode-key", "version": 1, "peer_id": "12D3KooW...", "public_key": hex,
     "seed": hex}                                                       (no passphrase)
    {..., "encryption": {"kdf": "scrypt", "n": 32768, "r": 8, "p": 1, "salt": hex,
     "cipher": "chacha20-poly1305", "nonce": hex}, "ciphertext": hex}    (with passphrase)

The AEAD's associated data is the public key, so a ciphertext cannot be moved under another
identity. The public key stays readable without the passphrase, so read-only commands
never ask for it. The file is created with mode 0600, written to a temporary name,
fsynced and renamed, so a crash leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

from protocol.errors import CodedError

import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from protocol.keys import KeyFormatError, SigningKey, peer_id

FORMAT = "p2pnode-key"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 15, 8, 1
MAX_SCRYPT_COST = 8 * 128 * SCRYPT_N * SCRYPT_R * SCRYPT_P
"""Bytes of scrypt work (128 * n * r * p: its memory, and its time) a key file may ask
for: 8 times what ``write_key`` uses (256 MiB). A file asking more is refused before any
derivation, so that a damaged or hostile file cannot make the node allocate gigabytes."""


class KeyFileError(CodedError):
    code = "bad_key_file"


class PassphraseNeeded(KeyFileError):
    code = "passphrase_needed"


class WrongPassphrase(KeyFileError):
    code = "wrong_passphrase"


def _kdf(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)


def write_key(path: Path, key: SigningKey, passphrase: bytes | None = None) -> None:
    """Write ``key`` to a new file at ``path`` (mode 0600); refuses to replace one."""
    doc: dict = {"format": FORMAT, "version": 1, "peer_id": key.peer_id, "public_key": key.public_key.hex()}
    if passphrase:
        salt, nonce = os.urandom(16), os.urandom(12)
        sealed = ChaCha20Poly1305(_kdf(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)).encrypt(
            nonce, key.seed, key.public_key
        )
        doc["encryption"] = {
            "kdf": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P, "salt": salt.hex(),
            "cipher": "chacha20-poly1305", "nonce": nonce.hex(),
        }
        doc["ciphertext"] = sealed.hex()
    else:
        doc["seed"] = key.seed.hex()
    data = (json.dumps(doc, indent=2) + "\n").encode()
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if path.exists():
        tmp.unlink()
        raise KeyFileError(f"{path} exists; refusing to overwrite a key")
    os.rename(tmp, path)
    # The rename is durable only once the directory is synced: without this, a power loss
    # just after `init` could leave the (synced) store and no key file at all.
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _load(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise KeyFileError(f"no key file at {path}: run `p2pnode init` first") from None
    except (OSError, ValueError) as e:
        raise KeyFileError(f"key file {path} cannot be read: {e}") from None
    except RecursionError:  # json nests arrays and objects recursively, unbounded
        raise KeyFileError(f"key file {path} cannot be read: it nests too deep") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != 1:
        raise KeyFileError(f"{path} is not a p2pnode key file (format {FORMAT}, version 1)")
    return doc


def read_public_key(path: Path) -> bytes:
    """The public key in the key file at ``path``; needs no passphrase."""
    doc = _load(path)
    try:
        pk = bytes.fromhex(doc["public_key"])
        peer_id(pk)
    except (KeyError, TypeError, ValueError, KeyFormatError):
        raise KeyFileError(f"key file {path} has no valid public_key") from None
    return pk


def is_encrypted(path: Path) -> bool:
    return "encryption" in _load(path)


def _scrypt_params(enc: dict, path: Path) -> tuple[int, int, int]:
    """``(n, r, p)`` of a sealed key file: integers as ``write_key`` writes them (a float
    such as 1e300 or Infinity is not one), costing at most ``MAX_SCRYPT_COST``."""
    n, r, p = enc["n"], enc["r"], enc["p"]
    if not all(type(v) is int and v >= 1 for v in (n, r, p)) or 128 * n * r * p > MAX_SCRYPT_COST:
        raise KeyFileError(f"key file {path} has scrypt parameters out of range (n, r, p: positive integers "
                           f"costing at most {MAX_SCRYPT_COST >> 20} MiB)")
    return n, r, p


def read_key(path: Path, passphrase: bytes | None = None) -> SigningKey:
    """The signing key in the file at ``path``, unsealed with ``passphrase`` if it is sealed."""
    doc = _load(path)
    public_key = read_public_key(path)
    try:
        if "encryption" in doc:
            if not passphrase:
                raise PassphraseNeeded(
                    f"the key in {path} is encrypted: give --passphrase-file FILE or set P2PNODE_PASSPHRASE"
                )
            enc = doc["encryption"]
            if not isinstance(enc, dict) or enc.get("kdf") != "scrypt" or enc.get("cipher") != "chacha20-poly1305":
                raise KeyFileError(f"key file {path} uses an unknown encryption")
            secret = _kdf(passphrase, bytes.fromhex(enc["salt"]), *_scrypt_params(enc, path))
            try:
                seed = ChaCha20Poly1305(secret).decrypt(bytes.fromhex(enc["nonce"]), bytes.fromhex(doc["ciphertext"]), public_key)
            except InvalidTag:
                raise WrongPassphrase(f"wrong passphrase for the key in {path}") from None
        else:
            seed = bytes.fromhex(doc["seed"])
        key = SigningKey.from_seed(seed)
    except KeyFileError:
        raise
    except (KeyError, TypeError, ValueError, KeyFormatError) as e:
        raise KeyFileError(f"key file {path} is damaged: {e}") from None
    if key.public_key != public_key:
        raise KeyFileError(f"key file {path} is damaged: its seed does not match its public key")
    return key
