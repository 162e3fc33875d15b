"""``p2pnode loan ...``: take offers, countersign, record money moving, and watch loans.

Every command asks the running node (control methods ``loan.*``, docs/api.md) and prints
its answer; ``--json`` prints the answer itself. IDs may be shortened to their first 8 or
more hex digits when that names one loan.
"""

from __future__ import annotations

from typing import Any

import click

from cli import petnames
from cli.context import Ctx, handles_errors, json_option, node_call, pass_ctx
from cli.output import FAILED, as_peer_id, emit_json, fail, peer_full, peer_label, table

ANSWER_TIMEOUT = 60.0  # the other node may first sync our chain before it answers

DATE_HELP = "The day the money moved, YYYY-MM-DD (default: today, UTC; never in the future)."


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def loan() -> None:
    """Loans: propose, countersign, disburse, repay, and see their state.

    A loan starts when someone takes an offer (`p2pnode offer list`) or a request with
    `loan propose`; the other node countersigns by its policy, or holds the proposal for
    its owner (`loan pending`, `loan accept`, `loan reject`) if it runs with --review.
    """


def _say(c: Ctx, method: str, params: dict, as_json: bool, text: Any) -> dict:
    """Ask the node; print its answer as JSON, or as ``text(answer, names)`` for people."""
    # Read before the node acts: a names file that cannot be read must not hide an answer.
    names = None if as_json else petnames.load(c.home.path)
    answer = node_call(c, method, {k: v for k, v in params.items() if v is not None}, timeout=ANSWER_TIMEOUT)
    if as_json:
        emit_json(answer)
    else:
        click.echo(text(answer, names))
    return answer


def _other(p: dict) -> str:
    """The party of a proposal view that did not propose it."""
    return p["borrower"] if p["proposer"] == p["lender"] else p["lender"]


def _proposal_text(p: dict, names: Any) -> str:
    text = (f"loan {p['loan']}\n  {p['state']}: {p['principal_text']} {p['currency']} at {p['rate_text']} over "
            f"{p['term']} ({p['schedule']}), lender {peer_label(p['lender'], names)}, "
            f"borrower {peer_label(p['borrower'], names)}")
    if p["state"] == "held":
        text += "\n  the other node's owner reviews it; `p2pnode loan list` shows when it is agreed"
    elif p["state"] == "proposed":
        text += (f"\n  {peer_label(_other(p), names)} cannot be reached now; this node asks again until the "
                 "proposal expires (`p2pnode loan list` shows the outcome)")
    return text


def _fail_unless_taken(p: dict, names: Any) -> None:
    """A proposal the other party refused, or that expired unanswered, ends the command
    with exit 1 (after its answer is printed), saying why once."""
    other = peer_label(_other(p), names)
    if p["state"] == "refused":
        fail(f"{other} refused the proposal ({p['code']}): {p['reason']}", code=p["code"] or "refused",
             exit_code=FAILED, details={"loan": p["loan"], "state": p["state"]})
    if p["state"] == "expired":
        fail(f"the proposal expired before {other} answered", code="expired", exit_code=FAILED,
             details={"loan": p["loan"], "state": p["state"]})


@loan.command()
@click.argument("offer_id")
@click.option("--amount", help="Principal as decimal text in the offer's currency (default: all that remains of the offer; it is taken in parts).")
@click.option("--start", metavar="DATE", help="First day of the schedule, YYYY-MM-DD (default: today, UTC).")
@click.option("--ttl", "ttl_s", type=click.IntRange(1, 7 * 24 * 3600), default=600, show_default=True,
              help="Seconds the other node has to countersign.")
@json_option
@pass_ctx
@handles_errors
def propose(c: Ctx, offer_id: str, amount: str | None, start: str | None, ttl_s: int, as_json: bool) -> None:
    """Take offer or request OFFER_ID: sign a contract on its terms and send it.

    The contract commits to both parties' chain heads as this node holds them. Prints
    the outcome: agreed, held for review, or proposed (the other node is unreachable now;
    this node asks again until the proposal expires). Exits 1 if the other node refused
    it (saying why) or it expired unanswered.
    """
    names = None if as_json else petnames.load(c.home.path)
    params = {"offer": offer_id, "amount": amount, "start": start, "ttl_s": ttl_s}
    p = node_call(c, "loan.propose", {k: v for k, v in params.items() if v is not None}, timeout=ANSWER_TIMEOUT)
    emit_json(p) if as_json else click.echo(_proposal_text(p, names))
    _fail_unless_taken(p, names)


@loan.command()
@json_option
@pass_ctx
@handles_errors
def pending(c: Ctx, as_json: bool) -> None:
    """List proposals held for your review (nodes started with --review)."""
    names = None if as_json else petnames.load(c.home.path)
    answer = node_call(c, "loan.pending")
    if as_json:
        emit_json(answer)
        return
    table(f"pending proposals ({len(answer['pending'])})",
          ["loan", "from", "lender/borrower", "amount", "rate", "term", "expires in", "grade", "credit"],
          [[p["loan"][:16], peer_label(p["proposer"], names), "lender" if p["lender"] != p["proposer"] else "borrower",
            f"{p['principal_text']} {p['currency']}", p["rate_text"], p["term"], _expires_in(p["expires"]),
            p.get("proposer_credit", {}).get("grade", "-"), _credit_line(p.get("proposer_credit"))]
           for p in answer["pending"]])


def _credit_line(c: dict | None) -> str:
    """A proposer's credit in a few words (``p2pnode credit PEER`` tells all)."""
    if not c:
        return "-"
    if c["forked"]:
        return "FORKED"
    owed = ", ".join(f"{v} {k}" for k, v in c["owed"].items()) or "nothing"
    return (f"{c['repaid']} repaid, {c['paid_late']} late, {c['defaulted']} defaulted, "
            f"{c['days_past_due']} days past due, owes {owed} (minor units), {c['verified_age_days']} days known")


def _expires_in(ms: int) -> str:
    import time

    left = ms / 1000 - time.time()
    return "expired" if left <= 0 else f"{int(left)}s"


@loan.command()
@click.argument("loan_id")
@json_option
@pass_ctx
@handles_errors
def accept(c: Ctx, loan_id: str, as_json: bool) -> None:
    """Countersign pending proposal LOAN_ID: the loan is agreed."""
    p = _say(c, "loan.accept", {"loan": loan_id}, as_json, _proposal_text)
    if p["state"] != "agreed":  # the node answers an agreement or refuses; say so if not
        fail(f"the proposal is {p['state']}, not agreed", code="not_agreed", exit_code=FAILED,
             details={"loan": p["loan"], "state": p["state"]})


@loan.command()
@click.argument("loan_id")
@click.option("--reason", default="rejected by the owner", show_default=True, help="Told to the proposer.")
@json_option
@pass_ctx
@handles_errors
def reject(c: Ctx, loan_id: str, reason: str, as_json: bool) -> None:
    """Refuse pending proposal LOAN_ID, telling the proposer why."""
    _say(c, "loan.reject", {"loan": loan_id, "reason": reason}, as_json,
         lambda p, names: f"rejected proposal {p['loan']}; {peer_label(p['proposer'], names)} is told: {p['reason']}")


def _moved(a: dict, names: Any = None) -> str:
    if "receipt" in a:
        return f"receipt #{a['n']} signed: {a['what']} of {a['amount_text']} on {a['date']} (loan {a['loan'][:16]})"
    return f"declared: {a['declared']} of {a['amount_text']} on {a['date']} (loan {a['loan'][:16]})"


@loan.command()
@click.argument("loan_id")
@click.option("--date", "day", metavar="DATE", help=DATE_HELP)
@json_option
@pass_ctx
@handles_errors
def disburse(c: Ctx, loan_id: str, day: str | None, as_json: bool) -> None:
    """Lender: declare that the principal was sent. The borrower's node confirms it."""
    _say(c, "loan.disburse", {"loan": loan_id, "date": day}, as_json, _moved)


@loan.command()
@click.argument("loan_id")
@click.option("--date", "day", metavar="DATE", help="The day the principal arrived (default: the day declared).")
@json_option
@pass_ctx
@handles_errors
def confirm(c: Ctx, loan_id: str, day: str | None, as_json: bool) -> None:
    """Borrower: sign the receipt for the principal received."""
    _say(c, "loan.confirm", {"loan": loan_id, "date": day}, as_json, _moved)


@loan.command()
@click.argument("loan_id")
@click.option("--amount", required=True, help="Decimal text in the loan's currency, e.g. 250.00.")
@click.option("--date", "day", metavar="DATE", help=DATE_HELP)
@json_option
@pass_ctx
@handles_errors
def repay(c: Ctx, loan_id: str, amount: str, day: str | None, as_json: bool) -> None:
    """Borrower: declare a payment sent. It counts once the lender signs a receipt."""
    _say(c, "loan.repay", {"loan": loan_id, "amount": amount, "date": day}, as_json, _moved)


@loan.command()
@click.argument("loan_id")
@click.option("--amount", required=True, help="Decimal text in the loan's currency, e.g. 250.00.")
@click.option("--date", "day", metavar="DATE", help=DATE_HELP)
@json_option
@pass_ctx
@handles_errors
def receipt(c: Ctx, loan_id: str, amount: str, day: str | None, as_json: bool) -> None:
    """Lender: sign the receipt for a repayment received (numbered per loan)."""
    _say(c, "loan.receipt", {"loan": loan_id, "amount": amount, "date": day}, as_json, _moved)


@loan.command()
@click.argument("loan_id")
@json_option
@pass_ctx
@handles_errors
def default(c: Ctx, loan_id: str, as_json: bool) -> None:
    """Lender: declare the loan in default (only once it is past the contract's threshold)."""
    _say(c, "loan.default", {"loan": loan_id}, as_json,
         lambda a, names: f"default notice recorded for loan {a['loan'][:16]} ({a['days_past_due']} days past due)")


@loan.command()
@click.argument("loan_id")
@json_option
@pass_ctx
@handles_errors
def writeoff(c: Ctx, loan_id: str, as_json: bool) -> None:
    """Lender: write off a defaulted loan."""
    _say(c, "loan.writeoff", {"loan": loan_id}, as_json, lambda a, names: f"loan {a['loan'][:16]} written off")


@loan.command()
@click.argument("loan_id")
@click.option("--reason", required=True, help="Your side, in at most 1000 characters.")
@json_option
@pass_ctx
@handles_errors
def dispute(c: Ctx, loan_id: str, reason: str, as_json: bool) -> None:
    """Either party: record your side of a disagreement about the loan."""
    _say(c, "loan.dispute", {"loan": loan_id, "reason": reason}, as_json,
         lambda a, names: f"dispute recorded for loan {a['loan'][:16]}")


@loan.command()
@click.argument("loan_id")
@click.option("--rate", required=True, help="The new yearly rate, e.g. 4.5%.")
@click.option("--term", required=True, help="The new term from the date, e.g. 12m, 26w, 90d.")
@click.option("--schedule", type=click.Choice(["annuity", "equal-principal", "interest-only", "bullet"]),
              help="The new schedule (default: the other party's proposal's, else the contract's).")
@click.option("--period-days", type=click.IntRange(1, 3660), help="Days per installment, for a term in days or weeks.")
@click.option("--date", "day", metavar="DATE",
              help="The day the new terms start, YYYY-MM-DD (default: the other party's proposal's, else today).")
@json_option
@pass_ctx
@handles_errors
def reschedule(c: Ctx, loan_id: str, rate: str, term: str, schedule: str | None, period_days: int | None,
               day: str | None, as_json: bool) -> None:
    """Borrower or lender: new terms for LOAN_ID, for hardship; both must run it.

    The first to run it proposes the amendment; the other's node keeps it (`loan show`).
    When the other party runs it with the same terms, its node countersigns and both
    chains record it: from its date the outstanding principal is repaid on the new
    schedule, and interest already due and unpaid stays owed on that date.
    """
    _say(c, "loan.reschedule", {"loan": loan_id, "rate": rate, "term": term, "schedule": schedule,
                                "period_days": period_days, "date": day}, as_json, _amended)


def _amended(a: dict, names: Any = None) -> str:
    terms = (f"{a['rate_text']} over {a['term']} ({a['schedule']}) from {a['date']}, after {a['after']} receipts")
    if a["state"] == "agreed":
        return f"loan {a['loan'][:16]} rescheduled: {terms}; amendment {a['amendment'][:16]} signed by both"
    return f"amendment proposed for loan {a['loan'][:16]}: {terms}\n  {a.get('note', '')}".rstrip()


@loan.command()
@click.argument("loan_id")
@click.option("--price", help="What the buyer pays, decimal text in the loan's currency (e.g. 480.00).")
@click.option("--days", type=click.IntRange(1, 30), default=7, show_default=True, help="How long the listing lives.")
@click.option("--withdraw", is_flag=True, help="Stop selling the loan: this node refuses buys of its listing.")
@json_option
@pass_ctx
@handles_errors
def sell(c: Ctx, loan_id: str, price: str | None, days: int, withdraw: bool, as_json: bool) -> None:
    """Lender holding the claim: list the loan for sale at a price (gossiped; `market list`
    shows it, with its yield to the buyer). Money moves outside; the claim moves when a
    buyer takes the listing with `loan buy`."""
    if not withdraw and price is None:
        raise click.UsageError("give --price, or --withdraw")
    if withdraw:
        _say(c, "loan.sell", {"loan": loan_id, "withdraw": True}, as_json,
             lambda a, names: f"loan {a['loan'][:16]} no longer for sale here")
        return
    _say(c, "loan.sell", {"loan": loan_id, "price": price, "days": days}, as_json,
         lambda a, names: f"listing {a['id'][:16]}: loan {a['loan'][:16]} for sale at {a['price_text']} "
                          f"{a['currency']} ({_ytm(a)} to the buyer), {a['remaining_principal_text']} principal "
                          "remaining")


def _ytm(listing: dict) -> str:
    y = listing.get("ytm_bp")
    return "no yield to maturity" if y is None else f"yield {y / 100:.2f}%"


@loan.command()
@click.argument("listing_id")
@json_option
@pass_ctx
@handles_errors
def buy(c: Ctx, listing_id: str, as_json: bool) -> None:
    """Buy a loan listed for sale (`market list`): this node and the seller's both sign
    the transfer at the listing's price; pay the seller outside the system. Later
    repayment receipts are yours to sign."""
    _say(c, "loan.buy", {"listing": listing_id}, as_json,
         lambda a, names: f"loan {a['loan'][:16]} bought from {peer_full(a['from'], names)} at {a['price_text']} "
                          f"{a['currency']} (transfer after {a['after']} receipts); pay the seller outside the "
                          "system")


@loan.command("list")
@click.option("--role", type=click.Choice(["lender", "borrower", "former_lender", "any"]), default="any",
              show_default=True)
@click.option("--state", help="Only loans in this state (current, late, delinquent, repaid, ...).")
@click.option("--at", metavar="DATE", help="Evaluate on this day, YYYY-MM-DD (default: today, UTC).")
@json_option
@pass_ctx
@handles_errors
def list_(c: Ctx, role: str, state: str | None, at: str | None, as_json: bool) -> None:
    """List the loans this node knows, with their state."""
    names = None if as_json else petnames.load(c.home.path)
    answer = node_call(c, "loan.list", {k: v for k, v in {"role": role, "state": state, "at": at}.items() if v})
    if as_json:
        emit_json(answer)
        return
    table(f"loans as of {answer['as_of']} ({len(answer['loans'])})",
          ["loan", "role", "with", "state", "dpd", "principal", "outstanding", "start", "term"],
          [[x["loan"][:16], x["role"] or "-", _with(x, names),
            x["state"] + (f" {x['bucket']}" if x.get("bucket") else "") + (" FORKED" if x.get("forked") else ""),
            str(x["days_past_due"]), f"{x['principal_text']} {x['currency']}", x["outstanding_text"], x["start"],
            x["term"]] for x in answer["loans"]])


def _with(x: dict, names: Any) -> str:
    """The other party of a listed loan; both parties when this node is neither."""
    if x.get("role") == "borrower":
        return peer_label(x.get("lender"), names)
    if x.get("role") in ("lender", "former_lender"):
        return peer_label(x.get("borrower"), names)
    return f"{peer_label(x.get('lender'), names)} → {peer_label(x.get('borrower'), names)}"


@loan.command()
@click.argument("loan_id")
@click.option("--at", metavar="DATE", help="Evaluate on this day, YYYY-MM-DD (default: today, UTC).")
@json_option
@pass_ctx
@handles_errors
def show(c: Ctx, loan_id: str, at: str | None, as_json: bool) -> None:
    """Show a loan: terms, schedule with paid and due parts, receipts, state."""
    from protocol.lending.money import format_amount

    names = None if as_json else petnames.load(c.home.path)
    v = node_call(c, "loan.show", {k: val for k, val in {"loan": loan_id, "at": at}.items() if val})
    if as_json:
        emit_json(v)
        return
    t = v["terms"]
    cur = t["currency"]

    def m(x: int) -> str:
        return format_amount(x, cur)

    holder = as_peer_id(t["holder"])
    click.echo(f"loan        {v['loan']}")
    click.echo(f"state       {v['shown_state']}" + (f" ({v['bucket']} days)" if v.get("bucket") else "")
               + f", {v['days_past_due']} days past due, as of {v['as_of']}")
    click.echo(f"lender      {peer_full(holder, names)}"
               + ("" if holder == t["lender"] else f" (originally {peer_label(t['lender'], names)})"))
    click.echo(f"borrower    {peer_full(t['borrower'], names)}")
    if v.get("forked"):
        click.echo("FORKED      " + ", ".join(peer_label(p, names) for p in v["forked"])
                   + " signed two histories: their documents prove nothing further")
    click.echo(f"terms       {t['principal_text']} {cur} at {t['rate_text']} a year, {t['term']} {t['schedule']}, "
               f"from {t['start']}; grace {t['grace_days']} days, late fee {m(t['late_fee'])}, "
               f"default after {t['default_days']} days")
    click.echo(f"paid        principal {m(v['principal_paid'])}, interest {m(v['interest_paid'])}, "
               f"fees {m(v['fees_paid'])} of {m(v['fees_charged'])}")
    click.echo(f"owed        outstanding principal {m(v['outstanding_principal'])}, due now {m(v['due_now'])}, "
               f"payoff {m(v['payoff'])}" + (f", overpaid {m(v['overpaid'])}" if v.get("overpaid") else ""))
    click.echo("")
    table("schedule", ["due", "payment", "interest", "principal", "paid", "fee", "status"],
          [[r["due"], m(r["payment"]), m(r["interest"]), m(r["principal"]),
            m(r["paid_interest"] + r["paid_principal"]), m(r["fee_charged"]), r["status"]] for r in v["rows"]])
    click.echo("")
    table(f"receipts ({len(v['receipts'])})", ["#", "what", "amount", "date", "signed by", "counted"],
          [[str(r["n"]), r["what"], m(r["amount"]), r["date"], peer_label(r["signer"], names),
            "yes" if r["counted"] else "NO"] for r in v["receipts"]])
    _show_amendments(v, m, names)
    waiting = awaiting_receipt(v.get("declared") or [], v["receipts"])
    if waiting:
        click.echo("")
        table(f"declared, awaiting a receipt ({len(waiting)})", ["what", "amount", "date", "declared by"],
              [[d["what"], m(d["amount"]), d["date"], peer_label(d["by"], names)] for d in waiting])
    if v.get("rejected"):
        click.echo("")
        table("not counted", ["document", "reason", "why"],
              [[x["id"][:16], x["code"], x["message"]] for x in v["rejected"]])
    if v.get("disputes"):
        click.echo("")
        table("disputes", ["by", "date", "reason"],
              [[peer_label(d["by"], names), d.get("date") or "-", d["reason"]] for d in v["disputes"]])


def _show_amendments(v: dict, m: Any, names: Any) -> None:
    """The amendments of a loan view (counted or not), and the proposals kept, if any."""
    shown = v.get("amendments") or []
    if shown:
        click.echo("")
        table(f"amendments ({len(shown)})", ["id", "from", "after", "terms", "rescheduled", "arrears", "rows",
                                             "counted"],
              [[a["id"][:16], a["date"], str(a["after"]), f"{a['rate_text']} {a['term']} {a['schedule']}",
                m(a["outstanding_principal"]) if a["counted"] else "-", m(a["arrears"]) if a["counted"] else "-",
                f"{a['first_row']}-{a['first_row'] + a['rows'] - 1}" if a["counted"] else "-",
                "yes" if a["counted"] else f"NO ({a['code']})"] for a in shown])
    kept = v.get("amendment_pending") or {}
    for side, who in (("theirs", "proposed to you"), ("ours", "proposed by you")):
        p = kept.get(side)
        if p:
            click.echo(f"reschedule {who}: {p['rate_text']} over {p['term']} ({p['schedule']}) from {p['date']}, "
                       f"signed by {', '.join(peer_label(k, names) for k in p['signed_by'])}")


def awaiting_receipt(declared: list[dict], receipts: list[dict]) -> list[dict]:
    """The declared payments that no counted receipt answers yet, oldest first.

    A declaration and a receipt are separate documents with no link between them, so each
    counted receipt answers the oldest unanswered declaration of the same kind
    (disbursement, repayment) and amount; the declarations left over await a receipt."""
    unused = [(r["what"], r["amount"]) for r in receipts if r["counted"]]
    waiting = []
    for d in sorted(declared, key=lambda d: (d["date"], d.get("ts", 0))):
        if (d["what"], d["amount"]) in unused:
            unused.remove((d["what"], d["amount"]))
        else:
            waiting.append(d)
    return waiting
