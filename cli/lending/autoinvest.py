"""``p2pnode autoinvest on|off|status|dry-run``: the node funds matching requests by
itself, by its owner's strategy (``[autoinvest]`` of config.toml; control methods
``autoinvest.*``, docs/api.md; the rules are protocol/lending/autoinvest.py)."""

from __future__ import annotations

from typing import Any

import click

from cli import petnames
from cli.context import Ctx, handles_errors, json_option, node_call, pass_ctx
from cli.output import emit_json, peer_label, table


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def autoinvest() -> None:
    """Fund matching requests by themselves: budget, amount per loan, share per borrower,
    lowest grade, grade mix and longest term come from [autoinvest] in config.toml."""


def _decisions(c: Ctx, title: str, decisions: list[dict[str, Any]]) -> None:
    if not decisions:
        click.echo(f"{title}: none (no request in the book)")
        return
    names = petnames.load(c.home.path)
    table(title, ["request", "borrower", "grade", "amount", "decision", "outcome"],
          [[d["request"][:16], peer_label(d["borrower"], names), d["grade"],
            f"{d['amount_text']} {d['currency']}" if d["amount"] else "-", d["reason"], d.get("outcome", "-")]
           for d in decisions])


def _set(c: Ctx, on: bool, as_json: bool) -> None:
    r = node_call(c, "autoinvest.set", {"on": on})
    if as_json:
        emit_json(r)
        return
    click.echo(f"auto-invest {'on' if r['enabled'] else 'off'}")
    if on:
        _decisions(c, "this run", r["ran"])


@autoinvest.command("on")
@json_option
@pass_ctx
@handles_errors
def on(c: Ctx, as_json: bool) -> None:
    """Turn it on (kept across restarts), and run once now."""
    _set(c, True, as_json)


@autoinvest.command("off")
@json_option
@pass_ctx
@handles_errors
def off(c: Ctx, as_json: bool) -> None:
    """Turn it off (kept across restarts)."""
    _set(c, False, as_json)


@autoinvest.command("status")
@json_option
@pass_ctx
@handles_errors
def status(c: Ctx, as_json: bool) -> None:
    """Whether it is on, its strategy, and its last decisions with their reasons."""
    r = node_call(c, "autoinvest.status", {})
    if as_json:
        emit_json(r)
        return
    click.echo(f"auto-invest {'on' if r['enabled'] else 'off'}")
    if r["strategy"] is None:
        click.echo("no strategy: set [autoinvest] budget and per_loan in config.toml")
    else:
        s = r["strategy"]
        click.echo(f"strategy    budget {s['budget']}, per loan {s['per_loan']}, at most {s['max_share_bp'] / 100:g}% "
                   f"per borrower, lowest grade {s['min_grade'] or 'any'}, grade mix {s['grade_mix'] or 'any'}, "
                   f"longest term {s['max_term_months'] or 'any'} months (minor units)")
    _decisions(c, "last decisions", r["decisions"])


@autoinvest.command("dry-run")
@json_option
@pass_ctx
@handles_errors
def dry_run(c: Ctx, as_json: bool) -> None:
    """What it would do now, decision by decision, doing nothing."""
    r = node_call(c, "autoinvest.dry_run", {})
    if as_json:
        emit_json(r)
        return
    _decisions(c, "would decide", r["decisions"])
