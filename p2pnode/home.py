"""A node's home directory: where its key, configuration and store live.

    HOME/                 mode 0700 (default ~/.p2pnode; --home or P2PNODE_HOME)
      node.key            the Ed25519 key, mode 0600 (keyfile.py)
      config.toml         settings a person may edit while the node is stopped
      store/              the LevelDB database (store.py)

``init_home`` creates all of it, with a genesis entry, or nothing: it refuses to touch a
home that already holds any of these files.
"""

from __future__ import annotations

from protocol.errors import CodedError

import json
import os
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from protocol.keys import SigningKey
from protocol.kinds import KindRegistry, genesis_body

from p2pnode.homepath import DEFAULT_HOME, resolve_home  # noqa: F401  (the CLI imports them alone)
from p2pnode.walltime import now_ms
from p2pnode.keyfile import read_key, read_public_key, write_key
from p2pnode.ledger.store import DEFAULT_RESERVE_OTHERS, DEFAULT_RESERVE_OWN, MIB, Reserve, Store

KEY_FILE = "node.key"
CONFIG_FILE = "config.toml"
STORE_DIR = "store"
DEFAULT_PORT = 7420


class HomeError(CodedError):
    code = "home_error"


class NotInitialised(HomeError):
    code = "not_initialised"


class AlreadyInitialised(HomeError):
    code = "already_initialised"


class ConfigError(HomeError):
    code = "bad_config"


CORE_SECTIONS = ("node", "network", "ledger", "extensions")
DEFAULT_RESERVE_MIB = DEFAULT_RESERVE_OWN // MIB
DEFAULT_OTHERS_RESERVE_MIB = DEFAULT_RESERVE_OTHERS // MIB
DEFAULT_OWN_CHAIN_WAIT = 10.0  # seconds appends wait at start while peers are asked for the own chain
MAX_RESERVE_MIB = 1 << 30  # 1 PiB: far above any disk, low enough that bytes fit in 64 bits
MAX_OWN_CHAIN_WAIT = 20.0  # below the CLI's 30 s call timeout, so that an append that waited still answers
DEFAULT_STRANGER_CHAINS = 1_000  # chains of strangers held (net/interest.py)
MAX_VERIFY_WORKERS = 8  # signature worker processes at most (p2pnode/ledger/sigpool.py's MAX_WORKERS)
MAX_STRANGER_CHAINS = 1_000_000  # strangers' chains held at most, whatever the config says: each costs memory
DEFAULT_PING_INTERVAL = 5.0  # seconds between keepalive pings of each peer (net/keepalive.py)
DEFAULT_PING_TIMEOUT = 5.0  # seconds a ping may take before its connection is taken for dead
PING_INTERVAL_RANGE = (0.5, 300.0)  # what a configured interval may be
PING_TIMEOUT_RANGE = (0.5, 120.0)


@dataclass
class Config:
    """What config.toml says: the core's sections (``[node]``, ``[network]``, ``[ledger]``,
    ``[extensions]``) and, untouched, every other section: each extension's own, checked
    by its declared settings when the extension loads (``extensions.settings_of``)."""

    name: str = ""
    listen: list[str] = field(default_factory=lambda: [f"/ip4/0.0.0.0/tcp/{DEFAULT_PORT}"])
    bootstrap: list[str] = field(default_factory=list)
    mdns: bool = False
    ping_interval_s: float = DEFAULT_PING_INTERVAL
    ping_timeout_s: float = DEFAULT_PING_TIMEOUT
    reserve_mib: int = DEFAULT_RESERVE_MIB
    others_reserve_mib: int = DEFAULT_OTHERS_RESERVE_MIB
    own_chain_wait_s: float = DEFAULT_OWN_CHAIN_WAIT
    stranger_chains: int = DEFAULT_STRANGER_CHAINS
    verify_workers: int | None = None  # None: one per core, at most MAX_VERIFY_WORKERS
    disabled: list[str] = field(default_factory=list)
    sections: dict[str, dict] = field(default_factory=dict)

    def to_toml(self, extensions: Iterable[Any] = ()) -> str:
        """The file's text, with a section for each of ``extensions`` (declarations)
        holding its settings (the values of ``sections``, else the defaults) and their help."""
        q = json.dumps  # a JSON string with ASCII escapes is a valid TOML basic string
        out = (
            "# p2pnode configuration. Edit while the node is stopped; command-line flags override it.\n\n"
            "[node]\n"
            f"# A display name, written into the genesis entry at init.\nname = {q(self.name)}\n\n"
            "[network]\n"
            "# Multiaddrs the libp2p host listens on.\n"
            f"listen = [{', '.join(q(a) for a in self.listen)}]\n"
            "# Peers to dial at start (multiaddrs ending in /p2p/<peer id>).\n"
            f"bootstrap = [{', '.join(q(a) for a in self.bootstrap)}]\n"
            "# Find peers on the local network by mDNS.\n"
            f"mdns = {'true' if self.mdns else 'false'}\n"
            "# Seconds between keepalive pings of each connected peer, and seconds a ping may take\n"
            "# before its connection is taken for dead, closed and dialled again (docs/operations.md).\n"
            f"ping_interval_s = {_toml(self.ping_interval_s)}\n"
            f"ping_timeout_s = {_toml(self.ping_timeout_s)}\n\n"
            "[ledger]\n"
            "# Free disk space (MiB) below which the node refuses to sign its own new entries,\n"
            "# before the disk fills and a write fails (docs/operations.md, \"The disk\").\n"
            f"reserve_mib = {self.reserve_mib}\n"
            "# Free disk space (MiB) below which it stores no other author's entries (sync, gossip):\n"
            "# larger than reserve_mib, so that peers cannot use up the room its own chain needs.\n"
            f"others_reserve_mib = {self.others_reserve_mib}\n"
            "# Seconds its appends wait at start while it asks its peers for entries of its own chain\n"
            "# that its store lacks (a restored backup); 0: no wait.\n"
            f"own_chain_wait_s = {_toml(self.own_chain_wait_s)}\n"
            "# Chains of strangers (authors no extension vouches for) it holds at most; past it,\n"
            "# a stranger's fresh chain pushes out the one stored to least recently.\n"
            f"stranger_chains = {self.stranger_chains}\n"
            "# Worker processes that verify the signatures of big synced batches, 0 to 8; 0: none,\n"
            "# every check in the node's own process. Default (left out): one per core, at most 8.\n"
            + (f"verify_workers = {self.verify_workers}\n\n" if self.verify_workers is not None else
               "# verify_workers = 2\n\n") +
            "[extensions]\n"
            "# Installed extensions this node leaves out, by name (`p2pnode extensions` lists them).\n"
            f"disabled = [{', '.join(q(n) for n in self.disabled)}]\n"
        )
        for ext in extensions:
            for name in ext.config_sections:
                out += "\n" + section_text(ext, name, self.sections.get(name, {}))
        return out

    @classmethod
    def from_toml(cls, text: str, *, where: str) -> "Config":
        """The config ``text`` holds; ``ConfigError`` naming what is wrong, for any text."""
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{where}: {e}") from None
        except RecursionError:  # tomllib parses nested arrays and tables recursively, unbounded
            raise ConfigError(f"{where}: arrays or tables nest too deep") from None
        for section in CORE_SECTIONS:
            if not isinstance(doc.get(section, {}), dict):
                raise ConfigError(f"{where}: {section} must be a table ([{section}])")
        node, net, ext = doc.get("node", {}), doc.get("network", {}), doc.get("extensions", {})
        led = doc.get("ledger", {})
        if not isinstance(led, dict):
            raise ConfigError(f"{where}: [ledger] must be a table")
        cfg = cls(
            name=node.get("name", ""),
            listen=net.get("listen", cls().listen),
            bootstrap=net.get("bootstrap", []),
            mdns=net.get("mdns", False),
            ping_interval_s=net.get("ping_interval_s", DEFAULT_PING_INTERVAL),
            ping_timeout_s=net.get("ping_timeout_s", DEFAULT_PING_TIMEOUT),
            reserve_mib=led.get("reserve_mib", DEFAULT_RESERVE_MIB),
            others_reserve_mib=led.get("others_reserve_mib", DEFAULT_OTHERS_RESERVE_MIB),
            own_chain_wait_s=led.get("own_chain_wait_s", DEFAULT_OWN_CHAIN_WAIT),
            stranger_chains=led.get("stranger_chains", DEFAULT_STRANGER_CHAINS),
            verify_workers=led.get("verify_workers"),
            disabled=ext.get("disabled", []),
            sections={k: v for k, v in doc.items() if k not in CORE_SECTIONS and isinstance(v, dict)},
        )
        if not isinstance(cfg.name, str):
            raise ConfigError(f"{where}: node.name must be a string")
        for k, section in (("listen", "network"), ("bootstrap", "network"), ("disabled", "extensions")):
            v = getattr(cfg, k)
            if not isinstance(v, list) or not all(isinstance(a, str) for a in v):
                raise ConfigError(f"{where}: {section}.{k} must be a list of strings")
        if not isinstance(cfg.mdns, bool):
            raise ConfigError(f"{where}: network.mdns must be true or false")
        for k, (low, high) in (("ping_interval_s", PING_INTERVAL_RANGE), ("ping_timeout_s", PING_TIMEOUT_RANGE)):
            v = getattr(cfg, k)
            if type(v) not in (int, float) or not low <= v <= high:
                raise ConfigError(f"{where}: network.{k} must be a number of seconds, {low:g} to {high:g}")
        for k in ("reserve_mib", "others_reserve_mib"):
            v = getattr(cfg, k)
            if type(v) is not int or not 0 <= v <= MAX_RESERVE_MIB:
                raise ConfigError(f"{where}: ledger.{k} must be a whole number of MiB, 0 to {MAX_RESERVE_MIB}")
        w = cfg.own_chain_wait_s
        if type(w) not in (int, float) or not 0 <= w <= MAX_OWN_CHAIN_WAIT:
            raise ConfigError(f"{where}: ledger.own_chain_wait_s must be a number of seconds, 0 to {MAX_OWN_CHAIN_WAIT:g}")
        if type(cfg.stranger_chains) is not int or not 0 <= cfg.stranger_chains <= MAX_STRANGER_CHAINS:
            raise ConfigError(f"{where}: ledger.stranger_chains must be a whole number, 0 to {MAX_STRANGER_CHAINS}")
        w = cfg.verify_workers
        if w is not None and (type(w) is not int or not 0 <= w <= MAX_VERIFY_WORKERS):
            raise ConfigError(f"{where}: ledger.verify_workers must be a whole number, 0 to {MAX_VERIFY_WORKERS}")
        return cfg

    @property
    def reserve(self) -> Reserve:
        """The free-space reserve of the store's writes, in bytes."""
        return Reserve(own=self.reserve_mib * MIB, others=self.others_reserve_mib * MIB)


def section_text(ext: Any, name: str, values: dict) -> str:
    """Section ``[name]`` of extension ``ext`` (a declaration) as config.toml holds it:
    each of its settings with its help, at ``values``' value or its default."""
    out = f"[{name}]\n"
    for setting in ext.settings:
        if ext.section_of(setting) == name:
            out += f"# {setting.help}\n{setting.name} = {_toml(values.get(setting.name, setting.default))}\n"
    return out


def save_settings(config_file: Path, ext: Any, values: dict) -> None:
    """Write ``values`` (settings of ``ext`` by name, checked) into ``config_file``: each
    section they live in is written anew (its other settings at their current values),
    every other line is kept, and the file is replaced atomically. ``ConfigError`` if the
    file cannot be read or written."""
    from p2pnode.extensions import check_setting

    declared = {s.name: s for s in ext.settings}
    try:
        text = config_file.read_text(encoding="utf-8") if config_file.exists() else ""
        current = Config.from_toml(text, where=str(config_file)).sections
        touched = {ext.section_of(declared[k]) for k in values}
        for k, v in values.items():
            check_setting(declared[k], v, where=f"{config_file}: {ext.section_of(declared[k])}.{k}")
        for name in sorted(touched):
            section = {**current.get(name, {}), **{k: v for k, v in values.items()
                                                    if ext.section_of(declared[k]) == name}}
            text = _replace_section(text, name, section_text(ext, name, section))
        Config.from_toml(text, where=str(config_file))  # what is written reads back
        tmp = config_file.with_name(config_file.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, config_file)
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"{config_file}: cannot save settings: {e}") from None


def _replace_section(text: str, name: str, new: str) -> str:
    """``text`` with the lines of table ``[name]`` (from its header to the next header)
    replaced by ``new``, or ``new`` appended if it has none."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if ln.strip() == f"[{name}]"), None)
    if start is None:
        return text + ("" if not text or text.endswith("\n") else "\n") + "\n" + new
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
    while end > start + 1 and not lines[end - 1].strip():  # keep the blank line before the next header
        end -= 1
    return "".join(lines[:start]) + new + "".join(lines[end:])


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    return json.dumps(value)


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
            text = self.config_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return Config()
        except OSError as e:
            raise ConfigError(f"{self.config_file}: {e}") from None
        except UnicodeDecodeError as e:  # TOML is UTF-8; a ValueError, not an OSError
            raise ConfigError(f"{self.config_file}: not UTF-8 text (byte {e.start})") from None
        return Config.from_toml(text, where=str(self.config_file))

    def open_store(self, reserve: Reserve | None = None) -> Store:
        """The store, keeping ``reserve`` free (default: this home's config's, or the
        defaults if the config cannot be read: `p2pnode start` reports a broken config,
        and the commands that work without a node still open the store)."""
        self.require()
        if reserve is None:
            try:
                reserve = self.config().reserve
            except ConfigError:
                reserve = Reserve()
        return Store(self.store_dir, reserve=reserve)

    def disabled_extensions(self) -> list[str]:
        """The extensions this home's config leaves out (none if there is no config)."""
        return self.config().disabled if self.config_file.exists() else []


def init_home(
    path: Path, *, registry: KindRegistry, name: str = "", passphrase: bytes | None = None, key: SigningKey | None = None,
    extensions: Iterable[Any] = (),
) -> tuple[Home, Any]:
    """Create a node home at ``path``: key, config (with a section for each of
    ``extensions``), store and genesis entry, or nothing.

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
    extensions = list(extensions)
    created_dir = not path.exists()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)  # the home holds the key: owner only, also when it already existed
    key = key or SigningKey.generate()
    try:
        with Store(home.store_dir, create=True) as store:
            genesis = store.append_one(key, "genesis", genesis_body(name or None), now_ms=now_ms(), registry=registry)
            # the extensions' indexes start complete: there is nothing to index yet
            store.use(registry, versions={e.name: e.index_version for e in extensions})
        home.config_file.write_text(Config(name=name).to_toml(extensions))
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
