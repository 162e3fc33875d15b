"""The store and the disk (issue 9): the free-space reserve, and a real full disk.

The full disk is a 3 MiB tmpfs mounted in a user and mount namespace of a child process
(`unshare -rm`, no privilege needed where unprivileged user namespaces are allowed; the
test skips, saying why, where they are not). tests/cli/test_disk.py makes the same write
error without any namespace, by a file size limit on a node process.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from framework.console import ROOT, child_env
from p2pnode.extensions import load
from p2pnode.ledger.store import Reserve, Store, StoreFull, free_bytes
from p2pnode.walltime import now_ms
from protocol.keys import SigningKey
from protocol.kinds import genesis_body

REGISTRY = load().registry
TIB = 1 << 40


def note(store: Store, key: SigningKey, text: str):
    """Append a note to ``key``'s chain (opened by its genesis entry first)."""
    if store.head(key.public_key) is None:
        store.append_one(key, "genesis", genesis_body(None), now_ms=now_ms(), registry=REGISTRY)
    return store.append_one(key, "note", {"text": text}, now_ms=now_ms(), registry=REGISTRY)


def test_below_the_own_reserve_nothing_is_signed_or_written(tmp_path):
    key = SigningKey.generate()
    with Store(tmp_path / "s", create=True, reserve=Reserve(own=0, others=0)) as store:
        note(store, key, "room")
        store.reserve = Reserve(own=free_bytes(store.path) + TIB, others=0)
        with pytest.raises(StoreFull) as ei:
            note(store, key, "no room")
        assert ei.value.code == "disk_full" and "below the reserve" in ei.value.message
        assert store.head(key.public_key).seq == 2 and store.failure is None  # refused, not failed
        store.reserve = Reserve(own=0, others=0)
        assert note(store, key, "room again").seq == 3


def test_others_entries_keep_a_larger_reserve_than_own_ones(tmp_path):
    mine, theirs = SigningKey.generate(), SigningKey.generate()
    with Store(tmp_path / "t", create=True, reserve=Reserve(own=0, others=0)) as other:
        note(other, theirs, "theirs")
        chain = list(other.chain(theirs.public_key))
    with Store(tmp_path / "s", create=True) as store:
        store.reserve = Reserve(own=0, others=free_bytes(store.path) + TIB)
        with pytest.raises(StoreFull):
            store.ingest(chain, registry=REGISTRY)
        assert store.head(theirs.public_key) is None
        assert note(store, mine, "own entries still fit").seq == 2
        assert len(store.ingest(chain, registry=REGISTRY, own=True).added) == 2  # own reserve: fetched back, import
        assert store.ingest(chain, registry=REGISTRY).duplicates == 2  # nothing to write: never refused


FULL_DISK = r"""
import json, os, sys
from pathlib import Path
from p2pnode.extensions import load
from p2pnode.ledger.store import Reserve, Store, StoreError
from p2pnode.ledger.verify import verify_store
from p2pnode.walltime import now_ms
from protocol.keys import SigningKey
from protocol.kinds import genesis_body

mnt = Path(sys.argv[1])
registry, key = load().registry, SigningKey.generate()
filler = mnt / "filler"
filler.write_bytes(os.urandom(2 << 20))  # freed later: room for the log to become a table at the next open
out = {}
store = Store(mnt / "store", create=True, reserve=Reserve(own=0, others=0))  # no reserve: let the disk fill
store.append_one(key, "genesis", genesis_body(None), now_ms=now_ms(), registry=registry)
acked = 1
for i in range(20_000):  # a 3 MiB disk fills long before
    try:
        store.append_one(key, "note", {"text": os.urandom(600).hex()}, now_ms=now_ms(), registry=registry)
        acked += 1
    except StoreError as e:
        out["first"] = [e.code, e.message]
        break
filler.unlink()
try:
    store.append_one(key, "note", {"text": "after space was freed"}, now_ms=now_ms(), registry=registry)
    acked += 1
    out["after"] = ["acknowledged", ""]
except StoreError as e:
    out["after"] = [e.code, e.message]
store.close()
out["acked"] = acked  # the acknowledged entries are seqs 1..acked
try:
    with Store(mnt / "store") as store:
        head = store.head(key.public_key)
        out["reopened_head"] = head.seq if head else 0
        out["verify_ok"] = verify_store(store, registry).ok
except StoreError as e:
    out["reopen_error"] = e.message
print(json.dumps(out))
"""


def test_a_full_disk_fails_the_store_stop_and_loses_no_acknowledged_entry(tmp_path):
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) here to make a user+mount namespace with a small tmpfs")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    probe = subprocess.run(["unshare", "-rm", "mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
                           capture_output=True, text=True, timeout=10)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in an unprivileged user namespace here: {probe.stderr.strip()}")
    script = tmp_path / "full_disk.py"
    script.write_text(FULL_DISK)
    shell = 'mount -t tmpfs -o size=3m tmpfs "$1" && exec "$2" "$3" "$1"'
    run = subprocess.run(["unshare", "-rm", "sh", "-c", shell, "sh", str(mnt), sys.executable, str(script)],
                         capture_output=True, text=True, timeout=60, env=child_env(), cwd=ROOT)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.splitlines()[-1])
    assert out["first"][0] == "disk_full" and "No space left" in out["first"][1], out
    assert out["after"][0] == "store_failed", out  # before the fix: acknowledged once space was freed
    assert "reopen_error" not in out, out  # before the fix: Corruption: checksum mismatch
    assert out["acked"] > 0 and out["reopened_head"] == out["acked"] and out["verify_ok"], out


def test_the_reserves_the_wait_the_stranger_budget_and_the_workers_are_read_from_config_toml_and_checked():
    from p2pnode.home import Config, ConfigError

    default = Config.from_toml(Config().to_toml(), where="c")
    assert default.reserve == Reserve() and default.own_chain_wait_s == 10  # init writes the defaults
    assert default.stranger_chains == 1000
    cfg = Config.from_toml("[ledger]\nreserve_mib = 1\nothers_reserve_mib = 2\nown_chain_wait_s = 0.5\n"
                           "stranger_chains = 3\n", where="c")
    assert cfg.reserve == Reserve(own=1 << 20, others=2 << 20) and cfg.own_chain_wait_s == 0.5
    assert cfg.stranger_chains == 3
    again = Config.from_toml(cfg.to_toml(), where="c")
    assert again.reserve == cfg.reserve and again.stranger_chains == 3
    assert default.verify_workers is None and again.verify_workers is None  # left out: one per core
    two = Config.from_toml("[ledger]\nverify_workers = 2\n", where="c")
    assert two.verify_workers == 2 and Config.from_toml(two.to_toml(), where="c").verify_workers == 2
    assert Config.from_toml("[ledger]\nverify_workers = 0\n", where="c").verify_workers == 0
    for bad in ("verify_workers = -1", "verify_workers = 9", "verify_workers = 2.0", 'verify_workers = "2"',
                "reserve_mib = -1", "others_reserve_mib = 1.5", "reserve_mib = true", "own_chain_wait_s = 21",
                'own_chain_wait_s = "10"', "stranger_chains = -1", "stranger_chains = 1e9", "stranger_chains = 1000001"):
        with pytest.raises(ConfigError) as ei:
            Config.from_toml(f"[ledger]\n{bad}\n", where="c")
        assert "ledger." in ei.value.message
