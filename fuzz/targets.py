"""One fuzz target per decoder: ``check(data)`` for any bytes ``data``.

The property each keeps (issue 9): the decoder returns a value or raises its documented
error, never another exception (``KeyError``, ``TypeError``, ``RecursionError``,
``MemoryError``...); and where there is an encoder, what was decoded encodes back to the
very bytes it came from (every byte form here is canonical, so that is ``encode(decode(b))
== b``). ``check`` returns quietly when the property holds and raises (an
``AssertionError``, or the undocumented exception itself) when it does not: that is the
crash the fuzzer reports and the failure a test shows.

Signed documents are fuzzed twice: as whole envelope bytes (``envelope``, ``entry``), and
as a payload that the target signs itself with the keys its seeds name (``entry_payload``,
``offer``, ``loan``). A mutated payload under a stale signature is refused at the
signature check; signed afresh, it reaches every field check behind it.

No atheris here: the tests import this module, and CI does not install the fuzzer.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from protocol import codec, wire
from protocol import sync as syncrules
from protocol.entry import Entry, parse_entry
from protocol.envelope import SIGNING_PREFIX, open_envelope, peek_document
from protocol.errors import DecodeError, ProtocolError
from protocol.fork import ForkProof
from protocol.keys import SigningKey
from protocol.kinds import core_registry
from protocol.lending import agree, amendment, contract, market, money, offer
from protocol.lending.amendment import AMENDMENT_KINDS
from protocol.lending.contract import LOAN_KINDS

from .seeds import A, B, C

PASSPHRASE = b"fuzz"
"""The passphrase the ``keyfile`` target tries (the sealed seed key file uses it)."""


@dataclass(frozen=True)
class Target:
    name: str
    check: Callable[[bytes], None]
    what: str  # the decoder, and its documented error
    max_len: int = 4096  # libFuzzer's -max_len: inputs longer than any seed by far


def _try(errors: type[BaseException] | tuple, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, or None if it raised one of its documented ``errors``; anything
    else propagates: that is the finding."""
    try:
        return fn(*args)
    except errors:
        return None


def _signed(payload: bytes, *keys: SigningKey) -> bytes:
    """Envelope bytes of ``payload`` with fresh signatures by ``keys``, whatever the payload
    holds (also a non-canonical one: the decoder must refuse that, not the harness)."""
    sigs = sorted((k.public_key, k.sign(SIGNING_PREFIX + payload)) for k in keys)
    return codec.encode([payload, [[pk, sig] for pk, sig in sigs]])


_KEYS = {k.public_key: k for k in (A, B, C)}


def _author(payload: bytes) -> SigningKey:
    """The key of the ``author`` a payload names if it is one of the seeds' keys, else A:
    so that a mutation of any seed document is signed by whom its rules require."""
    try:
        doc = codec.decode(payload)
    except DecodeError:
        return A
    return _KEYS.get(doc.get("author"), A) if type(doc) is dict and type(doc.get("author")) is bytes else A


# -- protocol/ ------------------------------------------------------------------------


def check_codec(data: bytes) -> None:
    try:
        value = codec.decode(data)  # None is a value here (nil), so no _try
    except DecodeError:
        return
    assert codec.encode(value) == data, "decode accepted bytes that are not the canonical encoding"


def check_envelope(data: bytes) -> None:
    _try(ProtocolError, peek_document, data)
    env = _try(ProtocolError, open_envelope, data)
    if env is None:
        return
    assert env.raw == data
    assert codec.encode([env.payload, [list(s) for s in env.signatures]]) == data
    assert codec.encode(env.document) == env.payload


REGISTRY = core_registry()
for _kind in LOAN_KINDS + AMENDMENT_KINDS:
    REGISTRY.register(_kind, "lending")


def _validate(e: Entry) -> None:
    """A kind's validator refuses a body by a ``ProtocolError`` only, and its index of a
    body it accepts is bytes (kinds.py): called directly, since ``classify`` would hide
    any other exception as "its validator failed"."""
    kind = REGISTRY.get(e.kind)
    if kind is None:
        return
    try:
        kind.validate(e)
    except ProtocolError:
        return
    if kind.index is not None:
        keys = list(kind.index(e))
        assert all(type(k) is bytes for k in keys)


def check_entry(data: bytes) -> None:
    e = _try(ProtocolError, parse_entry, data)
    if e is not None:
        assert e.envelope == data
        _validate(e)
        REGISTRY.classify(e)


def check_entry_payload(data: bytes) -> None:
    e = _try(ProtocolError, parse_entry, _signed(data, _author(data)))
    if e is not None:
        assert codec.encode(e.document()) == data
        _validate(e)
        REGISTRY.classify(e)
        REGISTRY.index_keys(e)
        contract.loan_of(e.kind, e.body)
        contract.embedded_id(e.kind, e.body)


def check_fork(data: bytes) -> None:
    proof = _try(ProtocolError, ForkProof.decode, data)
    if proof is not None:
        assert proof.encode() == data


def check_gossip(data: bytes) -> None:
    for topic in (wire.TOPIC_ENTRIES, wire.TOPIC_FRAUD, offer.TOPIC_OFFERS, market.TOPIC_MARKET):
        if topic == offer.TOPIC_OFFERS:
            _try(ProtocolError, offer.check_gossip, data)
        elif topic == market.TOPIC_MARKET:
            _try(ProtocolError, market.check_gossip, data)
        else:
            _try(ProtocolError, wire.check_gossip, topic, data)


def check_wire(data: bytes) -> None:
    n = _try(wire.WireError, wire.frame_length, data[:wire.FRAME_HEADER])
    assert n is None or 1 <= n <= wire.MAX_FRAME
    msg = _try(ProtocolError, wire.decode_message, data)
    if msg is not None:
        assert wire.encode_message(msg) == data


MAX_SYNC_FRAMES = 64


def _peer_events(data: bytes) -> list[syncrules.Event]:
    """``data`` read as a peer's stream the way p2pnode/net/sync.py reads it: frames
    until the bytes end (the peer is gone) or one is garbled."""
    events: list[syncrules.Event] = []
    pos = 0
    while len(events) < MAX_SYNC_FRAMES:
        header = data[pos:pos + wire.FRAME_HEADER]
        if not header:
            break
        try:
            n = wire.frame_length(header)
            payload = data[pos + wire.FRAME_HEADER:pos + wire.FRAME_HEADER + n]
            if len(payload) < n:
                break  # the stream ended inside a frame
            events.append(syncrules.Received(wire.decode_message(payload)))
        except ProtocolError as e:
            events.append(syncrules.BadFrame(wire.WireError(e.message, code=e.code)))
            break
        pos += wire.FRAME_HEADER + n
    return events


def _drive(machine: Any, actions: list, peer: list, node: Callable[[Any], syncrules.Event]) -> None:
    """Run a sync machine to its end on ``peer``'s events and ``node``'s answers; every
    step is one the machine must take without raising (protocol/sync.py, rule 9)."""
    it = iter(peer)
    for _ in range(machine.max_events + 1):
        if machine.ended:
            assert actions and isinstance(actions[-1], syncrules.ENDINGS), actions
            return
        last = actions[-1] if actions else None
        if isinstance(last, syncrules.NODE_WORK):
            event = node(last)
        else:
            assert machine.awaits_peer, f"{machine.state} waits for nothing"
            event = next(it, syncrules.Gone())
        actions = machine.feed(event)
    raise AssertionError("a sync conversation outran its bound")


def _puller_node(action: Any) -> syncrules.Event:
    if isinstance(action, syncrules.ReadHeads):
        return syncrules.HeadsRead({})
    return syncrules.Ingested(added=0)


FEED_MARK = wire.Cursor(b"\x07" * wire.EPOCH_SIZE, 5)  # the fuzzed listener's change feed mark


def _server_node(action: Any) -> syncrules.Event:
    if isinstance(action, syncrules.ReadChanges):
        holds = wire.cursor_holds(action.since, FEED_MARK)
        return syncrules.ChangesRead(FEED_MARK, () if holds else None)
    if isinstance(action, syncrules.ReadHeads):
        return syncrules.HeadsRead({}, FEED_MARK if action.marked else None)
    return syncrules.ChainRead(())


def check_sync(data: bytes) -> None:
    peer = _peer_events(data)
    for since in (None, wire.NO_CURSOR, FEED_MARK):  # (every head; every head with a mark; changes)
        puller = syncrules.Puller(batch=4, max_gets=8, since=since)
        _drive(puller, puller.begin(), peer, _puller_node)
    server = syncrules.Server(max_requests=16)
    _drive(server, [], peer, _server_node)


def check_agree(data: bytes) -> None:
    msg = _try(ProtocolError, agree.decode, data)
    if msg is not None:
        assert agree.encode(msg)[4:] == data


def check_offer(data: bytes) -> None:
    for env in (data, _signed(data, _author(data))):
        got = _try(ProtocolError, offer.check_gossip, env)
        if isinstance(got, offer.Offer):
            offer.offer_json(got)
        _try(ProtocolError, market.check_gossip, env)


def check_loan(data: bytes) -> None:
    openers = (contract.open_proposal, contract.open_agreement, contract.open_receipt, contract.open_transfer,
               lambda env: contract.open_transfer(env, complete=False),
               lambda env: contract.open_transfer(env, complete=False, signed_by="to"), amendment.open_amendment,
               lambda env: amendment.open_amendment(env, complete=False))
    for keys in ((A,), (B,), (A, B), (A, C)):
        env = _signed(data, *keys)
        for opener in openers:
            got = _try(ProtocolError, opener, env)
            if got is not None and got.type == "contract":
                contract.acceptor(got.document)
                _try(ProtocolError, contract.contract_schedule, got.document)
            if got is not None and got.type == "amendment":
                _try(ProtocolError, amendment.amendment_schedule, got.document, 1)


def check_money(data: bytes) -> None:
    # The CLI's texts come from argv: any str Python makes of bytes, lone surrogates too.
    text = data.decode("utf-8", "surrogateescape")
    _try(money.MoneyError, money.exponent, text)
    for cur in ("EUR", "JPY", "BTC", "KWD", text[:3]):
        minor = _try(money.MoneyError, money.parse_amount, text, cur)
        if minor is not None:
            assert money.parse_amount(money.format_amount(minor, cur), cur) == minor
    bp = _try(money.MoneyError, money.parse_rate, text)
    if bp is not None:
        assert money.parse_rate(money.format_rate(bp)) == bp
    term = _try(money.MoneyError, money.parse_term, text)
    if term is not None:
        assert money.format_term(term) == text


def check_jsonform(data: bytes) -> None:
    from protocol import jsonform
    from protocol.errors import EncodeError

    text = data.decode("utf-8", "surrogateescape")  # a --body from argv
    try:
        value = jsonform.parse(text)  # None is a value here (null), so no _try
    except EncodeError:
        return
    assert jsonform.parse(json.dumps(jsonform.to_json(value))) == value


# -- p2pnode/ -------------------------------------------------------------------------

_scratch: Path | None = None


def _scratch_dir() -> Path:
    """A directory for the file decoders' inputs, made once and removed at exit."""
    global _scratch
    if _scratch is None:
        _scratch = Path(tempfile.mkdtemp(prefix="p2pnode-fuzz-"))
        atexit.register(shutil.rmtree, _scratch, True)
    return _scratch


MAX_EXPORT_LINES = 16


def check_export(data: bytes) -> None:
    """An export file's lines through ``read_export`` (``ledger import``, and the node's
    ``ledger.import``): ``ExportFileError`` naming the line, or the verified envelopes."""
    from p2pnode.ledger.export import ExportFileError, read_export

    lines = data.decode("utf-8", "surrogateescape").split("\n")[:MAX_EXPORT_LINES]
    envelopes = _try(ExportFileError, read_export, lines)
    if envelopes is not None:
        assert len(envelopes) <= len(lines)


def check_keyfile(data: bytes) -> None:
    from p2pnode.keyfile import KeyFileError, is_encrypted, read_key, read_public_key

    path = _scratch_dir() / "node.key"
    path.write_bytes(data)
    public = _try(KeyFileError, read_public_key, path)
    _try(KeyFileError, is_encrypted, path)
    for passphrase in (None, PASSPHRASE):
        key = _try(KeyFileError, read_key, path, passphrase)
        if key is not None:
            assert key.public_key == public


def check_record(data: bytes) -> None:
    """A stored proposal record (p2pnode/lending/countersigning.py, ``P`` + loan) through
    ``Record.decode`` and the machine it resumes as: ``RecordError``, or a machine whose
    record encodes back to the same bytes."""
    record = _try(agree.RecordError, agree.Record.decode, bytes(32), data)
    if record is None:
        return
    assert agree.Record.decode(bytes(32), record.encode()) == record
    machine = _try(agree.RecordError, lambda r: agree.conversation(r, sign=lambda proposal: proposal), record)
    if machine is not None:
        assert machine.role == record.role and machine.state == record.state


def check_names(data: bytes) -> None:
    """The CLI's names file (cli/petnames.py ``load``): ``NamesFileError`` naming the line,
    or names that save back to a file that loads the same."""
    from cli import petnames

    home = _scratch_dir()
    petnames.names_path(home).write_bytes(data)
    names = _try(petnames.NamesFileError, petnames.load, home)
    if names is not None:
        names.save()
        assert petnames.load(home).entries == names.entries


def check_testnet(data: bytes) -> None:
    """The testnet's state file (p2pnode/testnet.py ``load``): ``TestnetError``, or members
    whose fields have the types ``save`` writes."""
    from p2pnode import testnet

    path = _scratch_dir() / testnet.STATE_FILE
    path.write_bytes(data)
    members = _try(testnet.TestnetError, testnet.load, path.parent)
    for m in members or ():
        assert type(m.name) is str and type(m.addr) is str and (m.pid is None or type(m.pid) is int)


_loaded: Any = None


def _extensions() -> Any:
    global _loaded
    if _loaded is None:
        from p2pnode.extensions import load

        _loaded = load()
    return _loaded


def check_config(data: bytes) -> None:
    from p2pnode.daemon import extension_settings
    from p2pnode.home import Config, ConfigError, Home

    home = Home(_scratch_dir())
    home.config_file.write_bytes(data)
    cfg = _try(ConfigError, home.config)
    if cfg is None:
        return
    loaded = _extensions()
    _try(ValueError, extension_settings, loaded, cfg.sections, [], str(home.config_file))
    # What init and testnet write must read back as it was (every core setting; the
    # extensions' sections are theirs, checked above).
    again = Config.from_toml(dataclasses.replace(cfg, sections={}).to_toml(), where="again")
    assert dataclasses.replace(again, sections={}) == dataclasses.replace(cfg, sections={})


def check_settings(data: bytes) -> None:
    """One ``p2pnode start --set EXTENSION.SETTING=JSON`` (p2pnode/daemon.py): a
    ``ValueError`` naming it (exit ``bad_setting``), or the settings."""
    from p2pnode.daemon import extension_settings

    item = data.decode("utf-8", "surrogateescape")  # from argv
    _try(ValueError, extension_settings, _extensions(), {}, [item], "--set")


_methods: Any = None


def _method_table() -> Any:
    """Every method a node with the built-in extensions declares, each bound to a handler
    that accepts whatever the declarations let through (the checks are what is fuzzed)."""
    global _methods
    if _methods is None:
        from p2pnode.control.methods import MethodTable

        async def accept(**params: Any) -> dict:
            return {"ok": True}

        loaded = _extensions()
        table = MethodTable()
        for name, method in loaded.methods.methods.items():
            table.declare(method, loaded.methods.owners[name], accept)
        _methods = table
    return _methods


def check_control(data: bytes) -> None:
    """One request line through the server's reading of it (p2pnode/control/server.py):
    every line gets a JSON-RPC answer (or none, for a notification), never an exception
    and never ``internal`` (which is a bug's answer)."""
    from p2pnode.control import server

    if b"\n" in data:  # the server splits lines before it reads one
        data = data[:data.index(b"\n")]
    coro = server._Server(_method_table())._answer(data)
    try:
        coro.send(None)
    except StopIteration as stop:
        response = stop.value
    else:  # pragma: no cover - the handlers here never wait
        coro.close()
        raise AssertionError("answering a request waited on something")
    if response is None:
        return
    line = server._encode(response)
    back = json.loads(line)
    assert back["jsonrpc"] == "2.0" and ("result" in back) != ("error" in back), back
    if "error" in back:
        assert back["error"]["data"]["code"] != "internal", back


def prepare() -> None:
    """Import and build now what the p2pnode targets would on their first input."""
    import p2pnode.daemon  # noqa: F401  (extension_settings)
    import p2pnode.home  # noqa: F401
    import p2pnode.keyfile  # noqa: F401
    import p2pnode.ledger.export  # noqa: F401
    from p2pnode.control import server  # noqa: F401

    _method_table()


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("codec", check_codec, "protocol/codec.py decode: DecodeError"),
    Target("envelope", check_envelope, "protocol/envelope.py open_envelope, peek_document: ProtocolError"),
    Target("entry", check_entry, "protocol/entry.py parse_entry, and each kind's validator: ProtocolError"),
    Target("entry_payload", check_entry_payload, "parse_entry of a payload signed afresh: ProtocolError"),
    Target("fork", check_fork, "protocol/fork.py ForkProof.decode: ProtocolError"),
    Target("gossip", check_gossip, "check_gossip of every topic (wire.py, lending/offer.py, lending/market.py): ProtocolError"),
    Target("wire", check_wire, "protocol/wire.py frame_length, decode_message: WireError, ProtocolError"),
    Target("sync", check_sync, "a frame stream through the sync machines (protocol/sync.py): no SyncMisuse"),
    Target("agree", check_agree, "protocol/lending/agree.py decode: WireError, ProtocolError"),
    Target("offer", check_offer, "protocol/lending/offer.py check_gossip: OfferError, ProtocolError"),
    Target("loan", check_loan, "protocol/lending/contract.py open_*: LoanError, ProtocolError"),
    Target("money", check_money, "protocol/lending/money.py parse_*: MoneyError", max_len=256),
    Target("jsonform", check_jsonform, "protocol/jsonform.py parse (ledger append --body): EncodeError",
           max_len=8192),
    Target("export", check_export, "p2pnode/ledger/export.py read_export (ledger import): ExportFileError"),
    Target("settings", check_settings, "p2pnode/daemon.py extension_settings of one --set: ValueError",
           max_len=512),
    Target("control", check_control, "p2pnode/control/server.py one request line: a JSON-RPC answer"),
    Target("keyfile", check_keyfile, "p2pnode/keyfile.py read_key, read_public_key: KeyFileError"),
    Target("record", check_record, "protocol/lending/agree.py Record.decode, conversation: RecordError"),
    Target("names", check_names, "cli/petnames.py load (the names file): NamesFileError"),
    Target("testnet", check_testnet, "p2pnode/testnet.py load (the testnet state file): TestnetError"),
    Target("config", check_config, "p2pnode/home.py Home.config, then extension settings: ConfigError, "
                                   "ValueError"),
)}
