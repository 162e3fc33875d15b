"""``p2pnode market list``: loans for sale (control method ``market.list``, docs/api.md;
the rules are protocol/lending/market.py, docs/portfolio.md)."""

from __future__ import annotations

import click

from cli import petnames
from cli.context import Ctx, handles_errors, json_option, node_call, pass_ctx
from cli.output import emit_json, peer_label, table


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def market() -> None:
    """The secondary market: loans their lenders sell (`loan sell`), and buying one
    (`loan buy`)."""


@market.command("list")
@click.option("--loan", "loan_id", metavar="ID", help="Only listings of this loan (an id prefix).")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True,
              help="Listings shown at most: your own first, then the newest.")
@json_option
@pass_ctx
@handles_errors
def list_(c: Ctx, loan_id: str | None, limit: int, as_json: bool) -> None:
    """Loans for sale, with their days past due, the borrower's grade, the principal
    remaining and the yield to maturity at the asking price."""
    names = None if as_json else petnames.load(c.home.path)
    answer = node_call(c, "market.list", dict({"loan": loan_id.lower()} if loan_id else {}, limit=limit))
    if as_json:
        emit_json(answer)
        return
    rows = [[x["id"][:16] + (" (yours)" if x["mine"] else ""), x["loan"][:16], peer_label(x["seller"], names),
             x["state"], str(x["days_past_due"]), x["grade"] or "-",
             f"{x['remaining_principal_text']} {x['currency']}", f"{x['price_text']} {x['currency']}",
             "-" if x["ytm_bp"] is None else f"{x['ytm_bp'] / 100:.2f}%"] for x in answer["listings"]]
    table(f"loans for sale as of {answer['as_of']} ({len(rows)})",
          ["listing", "loan", "seller", "state", "dpd", "grade", "remaining", "price", "ytm"], rows)
    if answer["more"]:
        click.echo(f"{answer['more']} more listings past --limit {limit}")
    if answer["unknown_loans"]:
        click.echo(f"{answer['unknown_loans']} more listings of loans whose documents this node does not hold yet")
