"""``p2pnode schedule``: print a loan's repayment schedule; needs no node and no home.

The rules are those of ``protocol/lending/schedule.py`` (docs/protocol.md, "Schedules"). Bad
input exits 2 (a usage error) naming the option at fault.
"""

from __future__ import annotations

import re
from datetime import date

import click

from protocol.errors import ProtocolError
from protocol.lending.money import format_amount, format_rate, format_term, parse_amount, parse_rate, parse_term
from protocol.lending.schedule import KINDS, schedule as make_schedule

from cli.context import handles_errors, json_option
from cli.output import emit_json, table

_OPTION_OF_CODE = {
    "bad_amount": "--principal",
    "bad_currency": "--currency",
    "bad_rate": "--rate",
    "bad_term": "--term",
    "bad_schedule": "--start",
}


def _parsed(option: str, parse, *args):
    """``parse(*args)``, or a usage error naming ``option``."""
    try:
        return parse(*args)
    except ProtocolError as e:
        raise click.BadParameter(e.message, param_hint=f"'{option}'") from None


def _start(text: str | None) -> date:
    if text is None:
        return date.today()
    try:
        if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a date YYYY-MM-DD", param_hint="'--start'") from None


@click.command("schedule")
@click.option("--principal", required=True, metavar="AMOUNT", help="Amount lent, e.g. 10000.00.")
@click.option("--currency", required=True, metavar="CODE", help="Currency code, e.g. EUR, JPY, BTC.")
@click.option("--rate", required=True, metavar="PERCENT", help="Yearly rate, e.g. 12% or 7.5.")
@click.option("--term", required=True, metavar="TERM", help="Term: 12m (months), 26w (weeks), 90d (days).")
@click.option("--kind", type=click.Choice(KINDS), default="annuity", show_default=True, help="How it is repaid.")
@click.option("--period-days", type=click.IntRange(1), metavar="N",
              help="Days per period for terms in days or weeks (default 30 for days, 7 for weeks).")
@click.option("--start", metavar="YYYY-MM-DD", help="Start date; due dates count from it (default today).")
@json_option
@handles_errors
def schedule(principal: str, currency: str, rate: str, term: str, kind: str, period_days: int | None,
             start: str | None, as_json: bool) -> None:
    """Print the repayment schedule of a loan: due date, payment, interest, principal and
    balance of each installment, and the totals.

    Amounts are exact (integer minor units, one round-half-up rule; see
    docs/protocol.md, "Schedules"). Needs no node.
    """
    minor = _parsed("--principal", parse_amount, principal, currency)
    bp = _parsed("--rate", parse_rate, rate)
    term_t = _parsed("--term", parse_term, term)
    start_date = _start(start)
    try:
        rows = make_schedule(minor, bp, term_t, kind, start_date, period_days=period_days)
    except ProtocolError as e:
        option = _OPTION_OF_CODE.get(e.code, "--term")
        if e.code == "bad_term" and period_days is not None:
            option = "--term' / '--period-days"
        raise click.BadParameter(e.message, param_hint=f"'{option}'") from None

    totals = {k: sum(getattr(r, k) for r in rows) for k in ("payment", "interest", "principal")}
    if as_json:
        emit_json({
            "inputs": {"principal": minor, "currency": currency, "rate_bp": bp, "term": format_term(term_t),
                       "kind": kind, "period_days": period_days, "start": start_date.isoformat()},
            "installments": [{"n": i, "due": r.due.isoformat(), "payment": r.payment, "interest": r.interest,
                              "principal": r.principal, "balance": r.balance} for i, r in enumerate(rows, 1)],
            "totals": totals,
        })
        return

    def fmt(v: int) -> str:
        return format_amount(v, currency)

    title = (f"{fmt(minor)} {currency} at {format_rate(bp)} a year, {format_term(term_t)}, {kind}, "
             f"from {start_date.isoformat()}")
    body = [[str(i), r.due.isoformat(), fmt(r.payment), fmt(r.interest), fmt(r.principal), fmt(r.balance)]
            for i, r in enumerate(rows, 1)]
    body.append(["", "total", fmt(totals["payment"]), fmt(totals["interest"]), fmt(totals["principal"]), ""])
    click.echo(title)
    table(None, ["#", "due", "payment", "interest", "principal", "balance"], body)
