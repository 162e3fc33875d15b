"""The node as a program: ``python -m p2pnode --home DIR [options]`` runs a node in the
foreground until SIGINT, SIGTERM or ``p2pnode stop``. ``p2pnode start`` checks its options
and becomes this program (the CLI itself never imports libp2p or trio).

Options (``--help`` lists them): ``--listen`` and ``--bootstrap`` (repeatable), ``--mdns``
/ ``--no-mdns``, ``--reserve-mib``, ``--others-reserve-mib``, ``--own-chain-wait``,
``--stranger-chains`` and ``--verify-workers`` (over the config's ``[ledger]``), ``--set EXTENSION.SETTING=JSON`` (repeatable: an extension's setting,
over its config section), ``--log-level``, ``--log-file``, ``--passphrase-file``
(default: ``$P2PNODE_PASSPHRASE``).

Exit statuses are those of the CLI (docs/cli.md): 0 after a clean stop; 1 if the node
cannot start (``port_in_use``, ``start_failed``, a bad setting); 3, 4, 5 for home, store
and key problems. A failure is one line on stderr, ``p2pnode: error: ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, NoReturn

from protocol.errors import CodedError

from p2pnode.errors import exit_status
from p2pnode.extensions import check_setting, load, settings_of
from p2pnode.home import MAX_OWN_CHAIN_WAIT, MAX_RESERVE_MIB, MAX_STRANGER_CHAINS, MAX_VERIFY_WORKERS, Home, resolve_home
from p2pnode.ledger.store import MIB, Reserve


class _UtcFormatter(logging.Formatter):
    converter = __import__("time").gmtime
    default_msec_format = "%s.%03dZ"


def setup_logging(level: str, log_file: Path | None) -> None:
    handler: logging.Handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(_UtcFormatter("%(asctime)s %(levelname)s %(message)s", datefmt="%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)  # libp2p's own chatter: warnings and worse only
    logging.getLogger("p2pnode").setLevel(level.upper())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m p2pnode", description="Run a p2pnode node in the foreground.")
    p.add_argument("--home", help="node home directory (default ~/.p2pnode; env P2PNODE_HOME)")
    p.add_argument("--listen", action="append", default=[], metavar="MULTIADDR")
    p.add_argument("--bootstrap", action="append", default=[], metavar="MULTIADDR")
    p.add_argument("--mdns", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--reserve-mib", type=int, default=None, metavar="MIB")
    p.add_argument("--others-reserve-mib", type=int, default=None, metavar="MIB")
    p.add_argument("--own-chain-wait", type=float, default=None, metavar="SECONDS")
    p.add_argument("--stranger-chains", type=int, default=None, metavar="N")
    p.add_argument("--verify-workers", type=int, default=None, metavar="N")
    p.add_argument("--set", action="append", default=[], metavar="EXTENSION.SETTING=JSON", dest="settings")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    p.add_argument("--log-file", type=Path)
    p.add_argument("--passphrase-file", type=Path)
    return p


def fail(message: str, code: str) -> NoReturn:
    print(f"p2pnode: error: {message}", file=sys.stderr)
    sys.exit(exit_status(code))


def read_passphrase(path: Path | None) -> bytes | None:
    import os

    if path is not None:
        try:
            lines = path.read_bytes().splitlines()
        except OSError as e:
            fail(f"cannot read passphrase file {path}: {e.strerror}", "bad_passphrase_file")
        if not lines or not lines[0]:
            fail(f"passphrase file {path} is empty", "bad_passphrase_file")
        return lines[0]
    env = os.environ.get("P2PNODE_PASSPHRASE")
    return env.encode() if env else None


def extension_settings(loaded: Any, sections: dict[str, dict], overrides: list[str], where: str) -> dict[str, dict]:
    """Each loaded extension's settings: its config section, then ``--set`` overrides;
    ``ValueError`` naming what is wrong."""
    out = {e.name: settings_of(e, sections.get(e.config_section, {}), where=where,
                               others={s: sections.get(s, {}) for s in e.config_sections[1:]})
           for e in loaded.extensions}
    for item in overrides:
        name, _, rest = item.partition(".")
        key, eq, raw = rest.partition("=")
        ext = loaded.get(name)
        if ext is None or not eq:
            raise ValueError(f"--set {item}: expected EXTENSION.SETTING=JSON for a loaded extension")
        setting = next((s for s in ext.settings if s.name == key), None)
        if setting is None:
            raise ValueError(f"--set {item}: {name} has no setting {key}")
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):  # json nests recursively, unbounded
            raise ValueError(f"--set {item}: the value is not JSON (or nests too deep)") from None
        out[name][key] = check_setting(setting, value, where=f"--set {name}.{key}")
    return out


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    import trio

    from p2pnode.net.addresses import PortInUse, check_multiaddr, split_p2p_addr
    from p2pnode.node import Node, NodeSettings

    try:
        home = Home(resolve_home(args.home))
        config = home.config()
        home.require()
        key = home.signing_key(read_passphrase(args.passphrase_file))
        loaded = load(config.disabled)
        try:
            for a in args.bootstrap:
                split_p2p_addr(a)
            listen = list(args.listen) or list(config.listen)
            for a in listen:
                check_multiaddr(a)
            per_extension = extension_settings(loaded, config.sections, args.settings, str(home.config_file))
            reserve_mib = config.reserve_mib if args.reserve_mib is None else args.reserve_mib
            others_mib = config.others_reserve_mib if args.others_reserve_mib is None else args.others_reserve_mib
            wait = config.own_chain_wait_s if args.own_chain_wait is None else args.own_chain_wait
            strangers = config.stranger_chains if args.stranger_chains is None else args.stranger_chains
            workers = config.verify_workers if args.verify_workers is None else args.verify_workers
            if not (0 <= reserve_mib <= MAX_RESERVE_MIB and 0 <= others_mib <= MAX_RESERVE_MIB):
                raise ValueError(f"a reserve is 0 to {MAX_RESERVE_MIB} MiB")
            if not 0 <= wait <= MAX_OWN_CHAIN_WAIT:
                raise ValueError(f"--own-chain-wait is 0 to {MAX_OWN_CHAIN_WAIT:g} seconds")
            if not 0 <= strangers <= MAX_STRANGER_CHAINS:
                raise ValueError(f"--stranger-chains is 0 to {MAX_STRANGER_CHAINS}")
            if workers is not None and not 0 <= workers <= MAX_VERIFY_WORKERS:
                raise ValueError(f"--verify-workers is 0 to {MAX_VERIFY_WORKERS}")
        except ValueError as e:
            fail(str(e), "bad_setting")
        settings = NodeSettings(
            listen=listen,
            bootstrap=list(dict.fromkeys(list(config.bootstrap) + list(args.bootstrap))),
            mdns=config.mdns if args.mdns is None else args.mdns,
            extensions=per_extension,
            reserve=Reserve(own=reserve_mib * MIB, others=others_mib * MIB),
            own_chain_wait=wait,
            stranger_budget=strangers,
            verify_workers=workers,
            ping_interval=float(config.ping_interval_s),
            ping_timeout=float(config.ping_timeout_s),
        )
        setup_logging(args.log_level, args.log_file)
        for f in loaded.failures:
            logging.getLogger("p2pnode").warning("extension %s left out: %s", f.name, f.reason)
        trio.run(Node(home, key, settings, loaded).run)
    except PortInUse as e:
        fail(str(e.strerror), "port_in_use")
    except CodedError as e:
        fail(e.message, e.code)
    except OSError as e:
        fail(f"cannot start the node: {e.strerror or e}", "start_failed")
    except KeyboardInterrupt:
        pass
