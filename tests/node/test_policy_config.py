"""Lending's ``[policy]`` section: a second config section an extension owns
(``Setting.section``), read at start and written back by ``save_settings``."""

from __future__ import annotations

import pytest

from p2pnode.extensions import load, settings_of
from p2pnode.home import Config, ConfigError, save_settings
from p2pnode.lending.settings import policy_of

LENDING = load().get("lending")


def test_the_policy_section_is_read_with_the_loans_section():
    s = settings_of(LENDING, {"review": True}, where="t", others={"policy": {"preset": "cn-2016", "lpr": "3%"}})
    assert s["review"] is True and s["preset"] == "cn-2016"
    assert policy_of(s).rate_cap_bp() == 1200
    assert policy_of(settings_of(LENDING, {}, where="t")).name == "default"  # no [policy]: the default preset
    with pytest.raises(ValueError, match=r"\[policy\] has no setting colour"):
        settings_of(LENDING, {}, where="t", others={"policy": {"colour": "red"}})
    with pytest.raises(ValueError, match="policy.preset"):
        settings_of(LENDING, {}, where="t", others={"policy": {"preset": "lax"}})
    with pytest.raises(ValueError, match=r"\[loans\] has no setting preset"):
        settings_of(LENDING, {"preset": "default"}, where="t")


def test_max_rate_is_retired(caplog):
    assert "max_rate" not in settings_of(LENDING, {"max_rate": "10%"}, where="t")
    assert "no longer a setting" in caplog.text


def test_save_settings_rewrites_its_section_and_keeps_the_rest(tmp_path):
    path = tmp_path / "config.toml"
    text = Config(name="alice").to_toml([LENDING]) + "\n[other]\nx = 1\n"
    path.write_text(text)
    assert "[policy]" in text and 'preset = "default"' in text
    save_settings(path, LENDING, {"preset": "cn-2016", "lpr": "3.50%"})
    cfg = Config.from_toml(path.read_text(), where="t")
    assert cfg.name == "alice" and cfg.sections["other"] == {"x": 1} and cfg.sections["loans"] == {"review": False}
    assert cfg.sections["policy"] == {"preset": "cn-2016", "lpr": "3.50%", "apr_cap": "", "min_grade": "",
                                      "max_term": ""}
    save_settings(path, LENDING, {"lpr": ""})  # one setting: the section's others keep their values
    assert Config.from_toml(path.read_text(), where="t").sections["policy"]["preset"] == "cn-2016"
    with pytest.raises(ConfigError):
        save_settings(path, LENDING, {"preset": "lax"})
    assert Config.from_toml(path.read_text(), where="t").sections["policy"]["preset"] == "cn-2016"


def test_save_settings_appends_a_missing_section(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[node]\nname = "bob"')
    save_settings(path, LENDING, {"preset": "permissive"})
    cfg = Config.from_toml(path.read_text(), where="t")
    assert cfg.name == "bob" and cfg.sections["policy"]["preset"] == "permissive"
