"""``p2pnode reserve show|update``: this node's own loss reserve (control methods
``reserve.show`` and ``reserve.update``, docs/api.md; the model is docs/portfolio.md)."""

from __future__ import annotations

from typing import Any

import click

from cli.context import Ctx, handles_errors, json_option, node_call, pass_ctx
from cli.output import emit_json, table


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def reserve() -> None:
    """This node's own loss reserve: money its owner sets aside against losses, recorded
    as signed entries in its chain (no pooled fund)."""


def _print(r: dict[str, Any]) -> None:
    if not r["reserves"]:
        click.echo(f"no reserve and no loans to provision for, as of {r['as_of']}")
    for cur, v in r["reserves"].items():
        cov = "-" if v["coverage_bp"] is None else f"{v['coverage_bp'] / 100:.2f}%"
        click.echo(f"{cur}: balance {v['balance_text']}, required {v['required_text']}, coverage {cov}, "
                   f"shortfall {v['shortfall_text']}")
        if v["uncovered"]:
            from protocol.lending.money import format_amount

            click.echo(f"  write-offs left {format_amount(v['uncovered'], cur)} {cur} uncovered")
        if v["by_category"]:
            from protocol.lending.money import format_amount

            table(None, ["category", "loans", "outstanding", "provision"],
                  [[k, str(line["loans"]), format_amount(line["outstanding"], cur), format_amount(line["provision"], cur)]
                   for k, line in v["by_category"].items()])


@reserve.command("show")
@json_option
@pass_ctx
@handles_errors
def show(c: Ctx, as_json: bool) -> None:
    """The balance, the provisions required now, the coverage and any shortfall."""
    r = node_call(c, "reserve.show", {})
    if as_json:
        emit_json(r)
        return
    _print(r)


@reserve.command("update")
@json_option
@pass_ctx
@handles_errors
def update(c: Ctx, as_json: bool) -> None:
    """Bring the reserve up to date now (it is after each receipt and write-off, and hourly)."""
    r = node_call(c, "reserve.update", {})
    if as_json:
        emit_json(r)
        return
    for b in r["appended"]:
        click.echo(f"recorded {b['kind']} of {b['amount']} minor units {b['currency']}, balance {b['balance_after']}")
    _print(r)
