"""``p2pnode schedule`` run as the real console script: table, JSON, usage errors, and
no node, home, libp2p or trio needed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from framework.console import ROOT, child_env
from framework.console import run_cli as run

ARGS = ["schedule", "--principal", "10000.00", "--currency", "EUR", "--rate", "12%", "--term", "12m",
        "--start", "2026-01-31"]


def test_table(tmp_path):
    rc, out, err = run(*ARGS, home=tmp_path / "nohome")
    assert rc == 0, err
    assert "10000.00 EUR at 12% a year, 12m, annuity, from 2026-01-31" in out
    lines = out.splitlines()
    assert any(line.split()[:6] == ["1", "2026-02-28", "888.49", "100.00", "788.49", "9211.51"] for line in lines)
    assert any(line.split()[:6] == ["12", "2027-01-31", "888.47", "8.80", "879.67", "0.00"] for line in lines)
    assert any(line.split()[:4] == ["total", "10661.86", "661.86", "10000.00"] for line in lines)
    assert not (tmp_path / "nohome").exists()


def test_json():
    rc, out, err = run(*ARGS, "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["inputs"] == {"principal": 1000000, "currency": "EUR", "rate_bp": 1200, "term": "12m",
                             "kind": "annuity", "period_days": None, "start": "2026-01-31"}
    rows = doc["installments"]
    assert len(rows) == 12
    assert rows[0] == {"n": 1, "due": "2026-02-28", "payment": 88849, "interest": 10000, "principal": 78849,
                       "balance": 921151}
    assert rows[-1]["balance"] == 0
    assert doc["totals"]["principal"] == 1000000 == sum(r["principal"] for r in rows)


def test_other_kinds_and_periods():
    rc, out, err = run("schedule", "--principal", "1000", "--currency", "JPY", "--rate", "5", "--term", "90d",
                       "--period-days", "30", "--kind", "equal-principal", "--start", "2026-01-01", "--json")
    assert rc == 0, err
    rows = json.loads(out)["installments"]
    assert [r["due"] for r in rows] == ["2026-01-31", "2026-03-02", "2026-04-01"]
    rc, out, err = run("schedule", "--principal", "1", "--currency", "BTC", "--rate", "0%", "--term", "26w",
                       "--kind", "bullet", "--json")
    assert rc == 0, err
    (row,) = json.loads(out)["installments"]
    assert row["payment"] == row["principal"] == 100_000_000


@pytest.mark.parametrize("change,words", [
    (["--principal", "10000.001"], "--principal"),
    (["--principal", "-5"], "negative"),
    (["--currency", "XYZ"], "unknown currency"),
    (["--rate", "7.555%"], "--rate"),
    (["--rate", "2000%"], "--rate"),
    (["--term", "12y"], "--term"),
    (["--term", "100d"], "whole number"),
    (["--start", "31/01/2026"], "--start"),
    (["--kind", "balloon"], "--kind"),
])
def test_bad_input_is_a_usage_error(change, words):
    args = list(ARGS)
    for i in range(0, len(change), 2):
        if change[i] in args:
            args[args.index(change[i]) + 1] = change[i + 1]
        else:
            args += change[i:i + 2]
    rc, out, err = run(*args)
    assert rc == 2 and out == ""
    assert words in err and "Traceback" not in err
    rc, out, err = run(*args, "--json")
    assert rc == 2
    if change[0] != "--kind":  # click refuses a bad choice before the command runs
        assert json.loads(err)["error"]["code"] == "usage_error"


def test_imports_neither_libp2p_nor_trio():
    probe = ("import sys\nfrom click.testing import CliRunner\nfrom cli.main import cli\n"
             f"r = CliRunner().invoke(cli, {ARGS!r})\nassert r.exit_code == 0, r.output\n"
             "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('libp2p', 'trio', 'multiaddr'))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT,
                         env=child_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
