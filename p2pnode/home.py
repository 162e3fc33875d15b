"""A node's home directory: where its key, configuration and store live.

    HOME/                 mode 0700 (default ~/.p2pnode; --home or P2PNODE_HOME)
      node.key            the Ed25519 key, mode 0600 (keyfile.py)
      config.toml         settings a person may edit while the node is stopped
      store/              the LevelDB database (store.py)

``init_home`` creates all of it, with a genesis entry, or nothing: it refuses to touch a
home that already holds any of these files.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.keys import SigningKey
from protocol.kinds import KindRegistry, genesis_body

from p2pnode.keyfile import read_key, read_public_key, write_key
from p2pnode.ledger.store import Store

KEY_FILE = "node.key"
CONFIG_FILE = "config.toml"
STORE_DIR = "store"
DEFAULT_PORT = 7420
DEFAULT_HOME = "~/.p2pnode"


class HomeError(Exception):
    code = "home_error"


class NotInitialised(HomeError):
    code = "not_initialised"


class AlreadyInitialised(HomeError):
    code = "already_initialised"


class ConfigError(HomeError):
    code = "bad_config"


def now_ms() -> int:
    """The wall clock in milliseconds since the Unix epoch (the protocol's ``ts`` unit)."""
    return time.time_ns() // 1_000_000


def resolve_home(home: str | os.PathLike | None) -> Path:
    """The home directory named by ``--home``, else ``P2PNODE_HOME``, else the default."""
    raw = home or os.environ.get("P2PNODE_HOME") or DEFAULT_HOME
    return Path(raw).expanduser().absolute()


@dataclass
class Config:
    name: str = ""
    listen: list[str] = field(default_factory=lambda: [f"/ip4/0.0.0.0/tcp/{DEFAULT_PORT}"])
    bootstrap: list[str] = field(default_factory=list)
    mdns: bool = False
    review: bool = False
    auto_confirm: bool = False
    max_rate: str = ""

    def to_toml(self) -> str:
        q = json.dumps  # a JSON string with ASCII escapes is a valid TOML basic string
        return (
            "# p2pnode configuration. Edit while the node is stopped; command-line flags override it.\n\n"
            "[node]\n"
            f"# A display name, written into the genesis entry at init.\nname = {q(self.name)}\n\n"
            "[network]\n"
            "# Multiaddrs the libp2p host listens on.\n"
            f"listen = [{', '.join(q(a) for a in self.listen)}]\n"
            "# Peers to dial at start (multiaddrs ending in /p2p/<peer id>).\n"
            f"bootstrap = [{', '.join(q(a) for a in self.bootstrap)}]\n"
            "# Find peers on the local network by mDNS.\n"
            f"mdns = {'true' if self.mdns else 'false'}\n\n"
            "[loans]\n"
            "# Hold incoming loan proposals for the owner (`p2pnode loan pending`).\n"
            f"review = {'true' if self.review else 'false'}\n"
            "# Sign the disbursement receipt as soon as the lender declares it.\n"
            f"auto_confirm = {'true' if self.auto_confirm else 'false'}\n"
            "# Refuse proposals above this yearly rate, e.g. \"20%\" (empty: no cap).\n"
            f"max_rate = {q(self.max_rate)}\n"
        )

    @classmethod
    def from_toml(cls, text: str, *, where: str) -> "Config":
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{where}: {e}") from None
        node, net, loans = doc.get("node", {}), doc.get("network", {}), doc.get("loans", {})
        cfg = cls(
            name=node.get("name", ""),
            listen=net.get("listen", cls().listen),
            bootstrap=net.get("bootstrap", []),
            mdns=net.get("mdns", False),
            review=loans.get("review", False),
            auto_confirm=loans.get("auto_confirm", False),
            max_rate=loans.get("max_rate", ""),
        )
        for k in ("review", "auto_confirm"):
            if not isinstance(getattr(cfg, k), bool):
                raise ConfigError(f"{where}: loans.{k} must be true or false")
        if not isinstance(cfg.max_rate, str):
            raise ConfigError(f'{where}: loans.max_rate must be a string such as "20%"')
        if not isinstance(cfg.name, str):
            raise ConfigError(f"{where}: node.name must be a string")
        for k in ("listen", "bootstrap"):
            v = getattr(cfg, k)
            if not isinstance(v, list) or not all(isinstance(a, str) for a in v):
                raise ConfigError(f"{where}: network.{k} must be a list of multiaddr strings")
        if not isinstance(cfg.mdns, bool):
            raise ConfigError(f"{where}: network.mdns must be true or false")
        return cfg


class Home:
    """Paths and loaders of one node home; opening the store is the caller's to close."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.key_file = path / KEY_FILE
        self.config_file = path / CONFIG_FILE
        self.store_dir = path / STORE_DIR

    def exists(self) -> bool:
        return self.key_file.exists() and self.store_dir.exists()

    def require(self) -> None:
        if not self.exists():
            raise NotInitialised(f"no node at {self.path}: run `p2pnode --home {self.path} init` first")

    def public_key(self) -> bytes:
        self.require()
        return read_public_key(self.key_file)

    def signing_key(self, passphrase: bytes | None) -> SigningKey:
        self.require()
        return read_key(self.key_file, passphrase)

    def config(self) -> Config:
        try:
            text = self.config_file.read_text()
        except FileNotFoundError:
            return Config()
        except OSError as e:
            raise ConfigError(f"{self.config_file}: {e}") from None
        return Config.from_toml(text, where=str(self.config_file))

    def open_store(self) -> Store:
        self.require()
        return Store(self.store_dir)


def init_home(
    path: Path, *, registry: KindRegistry, name: str = "", passphrase: bytes | None = None, key: SigningKey | None = None
) -> tuple[Home, Any]:
    """Create a node home at ``path``: key, config, store and genesis entry, or nothing.

    Returns the home and the genesis entry. Raises ``AlreadyInitialised`` if ``path``
    already holds a key, config or store.
    """
    home = Home(path)
    found = [p.name for p in (home.key_file, home.config_file, home.store_dir) if p.exists()]
    if found:
        raise AlreadyInitialised(
            f"{path} already holds a node ({', '.join(found)}); refusing to overwrite it. "
            "Use another --home, or move the old one away first."
        )
    created_dir = not path.exists()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)  # the home holds the key: owner only, also when it already existed
    key = key or SigningKey.generate()
    try:
        with Store(home.store_dir, create=True) as store:
            genesis = store.append_one(key, "genesis", genesis_body(name or None), now_ms=now_ms(), registry=registry)
        home.config_file.write_text(Config(name=name).to_toml())
        write_key(home.key_file, key, passphrase)
    except BaseException:
        # All or nothing: remove what this call created.
        for p in (home.key_file, home.config_file):
            p.unlink(missing_ok=True)
        shutil.rmtree(home.store_dir, ignore_errors=True)
        if created_dir:
            shutil.rmtree(path, ignore_errors=True)
        raise
    return home, genesis
