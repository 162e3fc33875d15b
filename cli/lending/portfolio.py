"""``p2pnode portfolio``: this node's loans as a lender, per currency, and what it owes as
a borrower (control method ``portfolio.show``, docs/api.md; the model is
docs/portfolio.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cli import petnames
from cli.context import Ctx, handles_errors, json_option, node_call, pass_ctx
from cli.output import emit_json, fail, peer_label, table


def _money(minor: int, currency: str) -> str:
    from protocol.lending.money import format_amount

    return f"{format_amount(minor, currency)} {currency}"


def _pct(bp: int | None) -> str:
    return "-" if bp is None else f"{bp / 100:.2f}%"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--at", metavar="YYYY-MM-DD", help="The day to compute it for (default today).")
@click.option("--plot", type=click.Path(dir_okay=False, writable=True, path_type=Path), metavar="FILE.png",
              help="Also draw the allocation and the expected monthly cash flows into this PNG file.")
@click.option("--chart", is_flag=True, help="Also draw the same charts in the terminal.")
@json_option
@pass_ctx
@handles_errors
def portfolio(c: Ctx, at: str | None, plot: Path | None, chart: bool, as_json: bool) -> None:
    """Show this node's portfolio: as a lender, per currency, the outstanding principal by
    borrower, grade and state, concentration (top borrower, HHI), the NPL ratio, the
    expected loss by provisioning category, the realized net annualized return and the
    cash flows expected per month; as a borrower, what it owes and when."""
    p = node_call(c, "portfolio.show", {"at": at} if at else {})
    names = petnames.load(c.home.path)
    if plot is not None:
        from cli.lending.portfolio_plot import write_png

        try:
            n = write_png(p, plot, lambda k: peer_label(k, names))
        except OSError as e:
            fail(f"cannot write {plot}: {e.strerror or e}", code="write_failed")
        if not as_json:
            click.echo(f"{n} charts drawn into {plot}")
    if as_json:
        emit_json(p)
        return
    if chart:
        from cli.lending.portfolio_plot import terminal_chart

        click.echo(terminal_chart(p, lambda k: peer_label(k, names)))
    if not p["lender"] and not p["borrower"]:
        click.echo(f"no loans as of {p['as_of']}")
    for cur, v in p["lender"].items():
        _lender(cur, v, names)
    for cur, v in p["borrower"].items():
        _borrower(cur, v)


def _lender(cur: str, v: dict[str, Any], names: Any) -> None:
    click.echo(f"as a lender, {cur}, as of {v['as_of']}: {v['loans']} loans")
    click.echo(f"  outstanding   {_money(v['outstanding'], cur)}"
               + (f", written off {_money(v['written_off'], cur)}" if v["written_off"] else ""))
    top = peer_label(v["top_borrower"], names) if v["top_borrower"] else "-"
    click.echo(f"  concentration top borrower {top} {_pct(v['top_share_bp'])}, HHI {_pct(v['hhi_bp'])}")
    click.echo(f"  NPL           {_money(v['npl'], cur)} ({_pct(v['npl_bp'])})")
    click.echo(f"  NAR           {_pct(v['nar_bp'])}   received: interest {_money(v['interest_received'], cur)}, "
               f"fees {_money(v['fees_received'], cur)}, principal {_money(v['principal_received'], cur)}")
    if v["by_borrower"]:
        table(None, ["borrower", "outstanding"], [[peer_label(k, names), _money(a, cur)]
                                                 for k, a in v["by_borrower"].items()])
    if v["by_grade"]:
        table(None, ["grade", "outstanding"], [[g, _money(a, cur)] for g, a in v["by_grade"].items()])
    loss = v["expected_loss"]["by_category"]
    if loss:
        table(None, ["category", "loans", "outstanding", "provision"],
              [[k, str(line["loans"]), _money(line["outstanding"], cur), _money(line["provision"], cur)]
               for k, line in loss.items()])
    if v["cash_flows"]:
        table(None, ["month", "expected"], [[m, _money(a, cur)] for m, a in v["cash_flows"].items()])


def _borrower(cur: str, v: dict[str, Any]) -> None:
    click.echo(f"as a borrower, {cur}, as of {v['as_of']}: outstanding {_money(v['outstanding'], cur)}, "
               f"due now {_money(v['due_now'], cur)}, payoff {_money(v['payoff'], cur)}")
    if v["by_month"]:
        table(None, ["month", "due"], [[m, _money(a, cur)] for m, a in v["by_month"].items()])
