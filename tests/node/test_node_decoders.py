"""The node's decoders of what people and clients write: the key file, config.toml,
export files and control-API request lines. On any bytes each yields a value or its
documented refusal (``KeyFileError``, ``ConfigError`` or a setting's ``ValueError``,
``ExportFileError``, a JSON-RPC error answer), never a traceback (issue 9). The checks
are the fuzz targets' (fuzz/targets.py).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings

from fuzz.strategies import inputs
from fuzz.targets import TARGETS

NODE_TARGETS = ["keyfile", "config", "settings", "control", "export", "names", "testnet"]


@pytest.mark.parametrize("name", NODE_TARGETS)
def test_decoder_returns_a_value_or_its_documented_error(name):
    check = TARGETS[name].check

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(inputs(name))
    def run(data: bytes) -> None:
        check(data)

    run()


# -- findings: each input once made its decoder raise something else (docs/fuzzing.md) ----


def _config(tmp_path, data: bytes):
    from p2pnode.home import Home

    home = Home(tmp_path)
    home.config_file.write_bytes(data)
    return home.config()


@pytest.mark.parametrize("data, says", [
    (b'[node]\nname = "caf\xe9"\n', r"not UTF-8 text \(byte 18\)"),  # was UnicodeDecodeError (Latin-1 file)
    (b"node = 1\n", "node must be a table"),  # was AttributeError: 'int' object has no attribute 'get'
    (b"network = 1\n", "network must be a table"),
    (b"extensions = []\n", "extensions must be a table"),
    (b"a = " + b"[" * 5000 + b"]" * 5000, "nest too deep"),  # was RecursionError inside tomllib
    (b"[network]\nping_interval_s = 0\n", "ping_interval_s must be a number of seconds, 0.5 to 300"),
    (b"[network]\nping_timeout_s = \"5\"\n", "ping_timeout_s must be a number of seconds, 0.5 to 120"),
    (b"[network]\nping_timeout_s = true\n", "ping_timeout_s must be"),
])
def test_a_config_the_node_cannot_use_is_bad_config_naming_why(tmp_path, data, says):
    from p2pnode.home import ConfigError

    with pytest.raises(ConfigError, match=says) as e:
        _config(tmp_path, data)
    assert e.value.code == "bad_config"


def _sealed_key_file(**changes) -> bytes:
    """The sealed seed key file of the corpus (passphrase ``fuzz``) with ``encryption``
    fields replaced by raw JSON texts."""
    from fuzz.seeds import _key_files

    text = _key_files()[1].decode()
    for name, raw in changes.items():
        if name == "encryption":
            start = text.index('"encryption": {')
            text = text[:start] + f'"encryption": {raw}' + text[text.index("}", start) + 1:]
        else:
            text = text.replace(f'"{name}": {json.dumps(_SEED_PARAMS[name])}', f'"{name}": {raw}')
    return text.encode()


_SEED_PARAMS = {"n": 1024, "r": 8, "p": 1}


@pytest.mark.parametrize("changes, says", [
    ({"encryption": "[]"}, "unknown encryption"),  # was AttributeError: 'list' object has no attribute 'get'
    ({"n": "Infinity"}, "scrypt parameters out of range"),  # was OverflowError (int(inf))
    ({"n": "1e300"}, "scrypt parameters out of range"),  # was OverflowError in the KDF
    ({"n": "1073741824"}, "scrypt parameters out of range"),  # was MemoryError: 1 TiB of scrypt
    ({"r": "100000000"}, "scrypt parameters out of range"),  # was MemoryError
    ({"n": '"1024"'}, "scrypt parameters out of range"),  # a text is no integer (write_key writes ints)
    ({"p": "true"}, "scrypt parameters out of range"),
])
def test_a_damaged_sealed_key_file_is_bad_key_file_before_any_derivation(tmp_path, changes, says):
    from p2pnode.keyfile import KeyFileError, read_key

    path = tmp_path / "node.key"
    path.write_bytes(_sealed_key_file(**changes))
    with pytest.raises(KeyFileError, match=says) as e:
        read_key(path, b"fuzz")
    assert e.value.code == "bad_key_file"


def test_the_sealed_key_file_of_the_corpus_opens(tmp_path):
    """The control case of the test above: unchanged, the same file opens."""
    from fuzz.seeds import A
    from p2pnode.keyfile import read_key

    path = tmp_path / "node.key"
    path.write_bytes(_sealed_key_file())
    assert read_key(path, b"fuzz").public_key == A.public_key


def test_a_key_file_nested_too_deep_is_bad_key_file(tmp_path):
    from p2pnode.keyfile import KeyFileError, read_public_key

    path = tmp_path / "node.key"
    path.write_bytes(b"[" * 100_000)  # was RecursionError inside json
    with pytest.raises(KeyFileError, match="nests too deep"):
        read_public_key(path)


def test_an_export_line_nested_too_deep_is_bad_export_file():
    """``ledger import`` of a line of 3000 '[' was a RecursionError from json (an
    ``internal error`` from the node's ``ledger.import``)."""
    from p2pnode.ledger.export import ExportFileError, read_export

    with pytest.raises(ExportFileError, match="line 2: .*nests too deep") as e:
        read_export(["", "[" * 3000])
    assert e.value.code == "bad_export_file"


def test_a_set_value_nested_too_deep_is_a_setting_error():
    """``p2pnode start --set lending.review=[[[...`` (3000 deep) was a RecursionError
    traceback: json raises it, not the ValueError that start turns into bad_setting."""
    from p2pnode.daemon import extension_settings
    from p2pnode.extensions import load

    with pytest.raises(ValueError, match="--set lending.review=.*not JSON"):
        extension_settings(load(), {}, ["lending.review=" + "[" * 3000], "--set")


@pytest.mark.parametrize("data, says", [
    (b"[" * 100_000, "nested too deep"),  # was RecursionError inside json
    (b'{"nodes": [{"name": 1, "home": "h", "peer_id": "p", "addr": "a"}]}', "are text"),  # was taken as it was
    (b'{"nodes": [{"name": "n", "home": "h", "peer_id": "p", "addr": "a", "pid": "42"}]}', "process id"),
])
def test_a_damaged_testnet_state_file_is_a_testnet_error(tmp_path, data, says):
    from p2pnode.testnet import STATE_FILE, TestnetError, load

    (tmp_path / STATE_FILE).write_bytes(data)
    with pytest.raises(TestnetError, match=says):
        load(tmp_path)
