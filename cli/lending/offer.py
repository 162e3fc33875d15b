"""``p2pnode offer ...`` and ``p2pnode request create``: the offer book of the running node.

Values are checked here first (exit 2 naming the option, no node needed), then sent to
the node (control methods ``offer.*``, docs/api.md), which signs and gossips.
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable

import click

from cli import petnames
from cli.context import Ctx, handles_errors, json_option, node_call, pass_ctx
from cli.output import emit_json, peer_full, peer_label, table

KINDS = ("annuity", "equal-principal", "interest-only", "bullet")
_DURATION = re.compile(r"([1-9][0-9]{0,6})([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _check(value: str | None, param: str, parse: Callable[[str], Any]) -> None:
    from protocol.lending.money import MoneyError

    if value is None:
        return
    try:
        parse(value)
    except MoneyError as e:
        raise click.BadParameter(e.message, param_hint=param) from None


def _duration(text: str) -> int:
    m = _DURATION.fullmatch(text)
    if m is None:
        raise click.BadParameter(f"{text!r} is not N followed by s, m, h or d (e.g. 7d)", param_hint="--expires")
    seconds = int(m.group(1)) * _UNIT[m.group(2)]
    if seconds > 90 * 86400:
        raise click.BadParameter("an offer lives at most 90 days", param_hint="--expires")
    return seconds


def terms_options(f: Callable) -> Callable:
    opts = [
        click.option("--amount", help="The principal, decimal text in the currency (e.g. 1500.00); or give a "
                     "range with --min-amount and --max-amount."),
        click.option("--min-amount", help="The smallest principal a taker may choose (with --max-amount)."),
        click.option("--max-amount", help="The largest principal a taker may choose."),
        click.option("--currency", required=True, help="Currency code, e.g. EUR, USD, JPY, BTC."),
        click.option("--rate", required=True, help="Yearly rate as a percentage, e.g. 7.5%."),
        click.option("--term", required=True, help="12m (months), 26w (weeks) or 90d (days)."),
        click.option("--period-days", type=click.IntRange(1, 3660),
                     help="Days per period, for terms in w or d only (default: 7 for w, 30 for d); must divide "
                     "the term."),
        click.option("--kind", type=click.Choice(KINDS), default="annuity", show_default=True,
                     help="How it is repaid: annuity (equal installments), equal-principal, interest-only "
                     "(principal with the last), bullet (all at the end)."),
        click.option("--grace-days", type=click.IntRange(0, 365), default=5, show_default=True,
                     help="Days after a due date before an installment is late with a fee."),
        click.option("--late-fee", default="0", show_default=True, help="Fee per installment paid late, decimal text."),
        click.option("--default-days", type=click.IntRange(1, 3650), default=90, show_default=True,
                     help="Days past due from which the lender may declare a default."),
        click.option("--min-grade", help="The lowest credit grade of a taker, A (best) to G, e.g. B: your node "
                     "refuses to countersign with a taker graded lower in its eyes, or with no grade."),
        click.option("--expires", default="7d", show_default=True,
                     help="How long it stays in the book: N followed by s, m, h or d, at most 90d."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _create(c: Ctx, side: str, kw: dict, as_json: bool) -> None:
    from protocol.lending.money import parse_amount, parse_rate, parse_term
    from protocol.lending.offer import OFFER_OPTIONAL
    from protocol.lending.schedule import periods_of

    cur = kw["currency"]
    _check(cur, "--currency", lambda v: parse_amount("0", v))
    ranged = kw["min_amount"] is not None or kw["max_amount"] is not None
    if (kw["amount"] is not None) == ranged or (ranged and (kw["min_amount"] is None or kw["max_amount"] is None)):
        raise click.UsageError("give --amount, or both --min-amount and --max-amount (not both forms)")
    for opt in ("amount", "min_amount", "max_amount", "late_fee"):
        _check(kw[opt], "--" + opt.replace("_", "-"), lambda v: parse_amount(v, cur))
    if ranged and parse_amount(kw["min_amount"], cur) > parse_amount(kw["max_amount"], cur):
        raise click.BadParameter(f"{kw['min_amount']} is above --max-amount {kw['max_amount']}",
                                 param_hint="--min-amount")
    _check(kw["rate"], "--rate", parse_rate)
    _check(kw["term"], "--term", parse_term)
    if kw["kind"] != "bullet" or kw["period_days"] is not None:
        _check(kw["term"], "--period-days" if kw["period_days"] else "--term",
               lambda v: periods_of(parse_term(v), kw["period_days"]))
    if kw["min_grade"] is not None and not OFFER_OPTIONAL["min_grade"](kw["min_grade"]):
        raise click.BadParameter(f"{kw['min_grade']!r} is not 1 to 8 characters starting with a capital (e.g. B)",
                                 param_hint="--min-grade")
    params = {"side": side, "currency": cur, "rate": kw["rate"], "term": kw["term"], "schedule": kw["kind"],
              "grace_days": kw["grace_days"], "late_fee": kw["late_fee"], "default_days": kw["default_days"],
              "expires_in_s": _duration(kw["expires"])}
    if kw["amount"] is not None:
        params["amount"] = kw["amount"]
    else:
        params["min_amount"], params["max_amount"] = kw["min_amount"], kw["max_amount"]
    for k in ("period_days", "min_grade"):
        if kw[k] is not None:
            params[k] = kw[k]
    o = node_call(c, "offer.create", params)
    if as_json:
        emit_json(o)
        return
    click.echo(f"{'offer' if side == 'lend' else 'request'} {o['id']}")
    click.echo(f"  {_range(o)} {o['currency']} at {o['rate_text']} over {o['term']} ({o['schedule']}), "
               f"expires {_when(o['expires'])}; signed and gossiped")


def _range(o: dict) -> str:
    lo, hi = o["min_amount_text"], o["max_amount_text"]
    return lo if lo == hi else f"{lo}..{hi}"


def _remaining(o: dict) -> str:
    """What remains of an offer taken in parts, e.g. "200.00 of 1000.00 (2 parts)"."""
    from protocol.lending.money import format_amount

    f = o.get("fill")
    if not f:
        return "-"
    left = format_amount(f["remaining"], o["currency"])
    if not f["parts"]:
        return left
    return f"{left} of {format_amount(f['max_amount'], o['currency'])} ({f['parts']} part{'s' * (f['parts'] != 1)})"


def _funded(o: dict) -> str:
    from protocol.lending.money import format_amount

    return format_amount(o["fill"]["funded"], o["currency"])


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ms / 1000))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def offer() -> None:
    """Offers to lend (and the whole offer book): create, cancel, list, show."""


@offer.command("create")
@terms_options
@json_option
@pass_ctx
@handles_errors
def offer_create(c: Ctx, as_json: bool, **kw: Any) -> None:
    """Offer to lend: signed, gossiped, kept in every node's book until it expires, is
    cancelled or is taken (`p2pnode loan propose ID` on another node)."""
    _create(c, "lend", kw, as_json)


@offer.command("cancel")
@click.argument("offer_id")
@json_option
@pass_ctx
@handles_errors
def offer_cancel(c: Ctx, offer_id: str, as_json: bool) -> None:
    """Cancel your offer or request OFFER_ID (a signed cancellation, gossiped)."""
    a = node_call(c, "offer.cancel", {"id": offer_id})
    emit_json(a) if as_json else click.echo(f"cancelled {a['id']}")


@offer.command("list")
@click.option("--side", type=click.Choice(["lend", "borrow"]), help="Offers (lend) or requests (borrow) only.")
@click.option("--currency", help="Only this currency.")
@click.option("--amount", help="Only offers whose amount range holds this (needs --currency).")
@click.option("--max-rate", help="Only rates at most this, e.g. 10%.")
@click.option("--min-rate", help="Only rates at least this.")
@click.option("--author", metavar="PEER", help="Only those of this peer: a peer ID, or a name you gave it.")
@click.option("--mine", is_flag=True, help="Only this node's own.")
@json_option
@pass_ctx
@handles_errors
def offer_list(c: Ctx, side: str | None, currency: str | None, amount: str | None, max_rate: str | None,
               min_rate: str | None, author: str | None, mine: bool, as_json: bool) -> None:
    """The live offers and requests this node's book holds, cheapest rate first."""
    from protocol.lending.money import parse_amount, parse_rate

    if amount is not None and currency is None:
        raise click.UsageError("--amount needs --currency")
    if amount is not None:
        _check(amount, "--amount", lambda v: parse_amount(v, currency))
    _check(max_rate, "--max-rate", parse_rate)
    _check(min_rate, "--min-rate", parse_rate)
    if author is not None:
        author = petnames.resolve_peer(c.home.path, author, "--author")
    params = {k: v for k, v in {"side": side, "currency": currency, "amount": amount, "max_rate": max_rate,
                                "min_rate": min_rate, "author": author, "own": mine or None}.items() if v is not None}
    names = None if as_json else petnames.load(c.home.path)
    a = node_call(c, "offer.list", params)
    if as_json:
        emit_json(a)
        return
    table(f"offer book ({len(a['offers'])})",
          ["id", "side", "author", "grade", "amount", "remaining", "rate", "term", "kind", "min grade", "expires"],
          [[o["id"][:16], o["side"], peer_label(o["author"], names) + (" FORKED" if o.get("author_forked") else ""),
            o.get("grade", "-"), f"{_range(o)} {o['currency']}", _remaining(o), o["rate_text"],
            o["term"], o["schedule"], o.get("min_grade") or "-", _when(o["expires"])] for o in a["offers"]])


@offer.command("show")
@click.argument("offer_id")
@json_option
@pass_ctx
@handles_errors
def offer_show(c: Ctx, offer_id: str, as_json: bool) -> None:
    """One offer or request of the book, in full."""
    names = None if as_json else petnames.load(c.home.path)
    o = node_call(c, "offer.show", {"id": offer_id})
    if as_json:
        emit_json(o)
        return
    click.echo(f"{'id':<13}{o['id']}")
    click.echo(f"{'side':<13}{o['side']}")
    click.echo(f"{'author':<13}{peer_full(o['author'], names)}"
               + ("  FORKED: it signed two histories" if o.get("author_forked") else ""))
    click.echo(f"{'currency':<13}{o['currency']}")
    click.echo(f"{'amount':<13}{_range(o)}")
    if o.get("fill"):
        click.echo(f"{'remaining':<13}{_remaining(o)}, funded {_funded(o)}")
    click.echo(f"{'rate':<13}{o['rate_text']}")
    click.echo(f"{'term':<13}{o['term']} {o['schedule']}" + (f", {o['period_days']}-day periods" if o['period_days'] else ""))
    click.echo(f"{'grace':<13}{o['grace_days']} days, late fee {o['late_fee_text']}, default after {o['default_days']} days")
    click.echo(f"{'min grade':<13}{o.get('min_grade') or 'none'}")
    click.echo(f"{'expires':<13}{_when(o['expires'])}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def request() -> None:
    """Requests to borrow: create one (list and cancel them with `p2pnode offer`)."""


@request.command("create")
@terms_options
@json_option
@pass_ctx
@handles_errors
def request_create(c: Ctx, as_json: bool, **kw: Any) -> None:
    """Ask to borrow: a signed request in every node's book; a lender takes it with
    `p2pnode loan propose ID`."""
    _create(c, "borrow", kw, as_json)
