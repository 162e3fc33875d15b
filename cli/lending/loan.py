"""``p2pnode loan ...``: take offers, countersign, record money moving, and watch loans.

Every command asks the running node (control methods ``loan.*``, docs/api.md) and prints
its answer; ``--json`` prints the answer itself. IDs may be shortened to their first 8 or
more hex digits when that names one loan.
"""

from __future__ import annotations

from typing import Any

import click

from cli.context import node_call, Ctx, handles_errors, json_option, pass_ctx
from cli.output import emit_json, table

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
    answer = node_call(c, method, {k: v for k, v in params.items() if v is not None}, timeout=ANSWER_TIMEOUT)
    if as_json:
        emit_json(answer)
    else:
        click.echo(text(answer) if callable(text) else text)
    return answer


def _proposal_text(p: dict) -> str:
    line = (f"loan {p['loan']}\n  {p['state']}: {p['principal_text']} {p['currency']} at {p['rate_text']} over "
            f"{p['term']} ({p['schedule']}), lender {p['lender']}, borrower {p['borrower']}")
    if p.get("code"):
        line += f"\n  refused ({p['code']}): {p['reason']}"
    elif p["state"] == "held":
        line += "\n  the other node's owner reviews it; `p2pnode loan list` shows when it is agreed"
    return line


@loan.command()
@click.argument("offer_id")
@click.option("--amount", help="Principal as decimal text in the offer's currency (default: the offer's maximum).")
@click.option("--start", metavar="DATE", help="First day of the schedule, YYYY-MM-DD (default: today, UTC).")
@click.option("--ttl", "ttl_s", type=click.IntRange(1, 7 * 24 * 3600), default=600, show_default=True,
              help="Seconds the other node has to countersign.")
@json_option
@pass_ctx
@handles_errors
def propose(c: Ctx, offer_id: str, amount: str | None, start: str | None, ttl_s: int, as_json: bool) -> None:
    """Take offer or request OFFER_ID: sign a contract on its terms and send it.

    The contract commits to both parties' chain heads as this node holds them. Prints
    the outcome: agreed, held for review, refused (with the reason), or proposed (the
    other node is unreachable now; this node asks again until the proposal expires).
    """
    _say(c, "loan.propose", {"offer": offer_id, "amount": amount, "start": start, "ttl_s": ttl_s}, as_json,
         _proposal_text)


@loan.command()
@json_option
@pass_ctx
@handles_errors
def pending(c: Ctx, as_json: bool) -> None:
    """List proposals held for your review (nodes started with --review)."""
    answer = node_call(c, "loan.pending")
    if as_json:
        emit_json(answer)
        return
    table(f"pending proposals ({len(answer['pending'])})",
          ["loan", "from", "lender/borrower", "amount", "rate", "term", "expires in"],
          [[p["loan"][:16], p["proposer"][-8:], "lender" if p["lender"] != p["proposer"] else "borrower",
            f"{p['principal_text']} {p['currency']}", p["rate_text"], p["term"], _expires_in(p["expires"])]
           for p in answer["pending"]])


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
    _say(c, "loan.accept", {"loan": loan_id}, as_json, _proposal_text)


@loan.command()
@click.argument("loan_id")
@click.option("--reason", default="rejected by the owner", show_default=True, help="Told to the proposer.")
@json_option
@pass_ctx
@handles_errors
def reject(c: Ctx, loan_id: str, reason: str, as_json: bool) -> None:
    """Refuse pending proposal LOAN_ID, telling the proposer why."""
    _say(c, "loan.reject", {"loan": loan_id, "reason": reason}, as_json, _proposal_text)


def _moved(a: dict) -> str:
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
         lambda a: f"default notice recorded for loan {a['loan'][:16]} ({a['days_past_due']} days past due)")


@loan.command()
@click.argument("loan_id")
@json_option
@pass_ctx
@handles_errors
def writeoff(c: Ctx, loan_id: str, as_json: bool) -> None:
    """Lender: write off a defaulted loan."""
    _say(c, "loan.writeoff", {"loan": loan_id}, as_json, lambda a: f"loan {a['loan'][:16]} written off")


@loan.command()
@click.argument("loan_id")
@click.option("--reason", required=True, help="Your side, in at most 1000 characters.")
@json_option
@pass_ctx
@handles_errors
def dispute(c: Ctx, loan_id: str, reason: str, as_json: bool) -> None:
    """Either party: record your side of a disagreement about the loan."""
    _say(c, "loan.dispute", {"loan": loan_id, "reason": reason}, as_json,
         lambda a: f"dispute recorded for loan {a['loan'][:16]}")


@loan.command()
@click.argument("loan_id")
@click.option("--to", "to", required=True, metavar="PEER_ID", help="The new lender's peer ID.")
@json_option
@pass_ctx
@handles_errors
def transfer(c: Ctx, loan_id: str, to: str, as_json: bool) -> None:
    """Lender: assign the claim to a new lender; both sign, the borrower's node is told."""
    _say(c, "loan.transfer", {"loan": loan_id, "to": to}, as_json,
         lambda a: f"loan {a['loan'][:16]} transferred to {a['to']} after {a['after']} receipts")


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
    answer = node_call(c, "loan.list", {k: v for k, v in {"role": role, "state": state, "at": at}.items() if v})
    if as_json:
        emit_json(answer)
        return
    table(f"loans as of {answer['as_of']} ({len(answer['loans'])})",
          ["loan", "role", "state", "dpd", "principal", "outstanding", "start", "term"],
          [[x["loan"][:16], x["role"] or "-", x["state"] + (f" {x['bucket']}" if x.get("bucket") else ""),
            str(x["days_past_due"]), f"{x['principal_text']} {x['currency']}", x["outstanding_text"], x["start"],
            x["term"]] for x in answer["loans"]])


@loan.command()
@click.argument("loan_id")
@click.option("--at", metavar="DATE", help="Evaluate on this day, YYYY-MM-DD (default: today, UTC).")
@json_option
@pass_ctx
@handles_errors
def show(c: Ctx, loan_id: str, at: str | None, as_json: bool) -> None:
    """Show a loan: terms, schedule with paid and due parts, receipts, state."""
    from protocol.lending.money import format_amount

    v = node_call(c, "loan.show", {k: val for k, val in {"loan": loan_id, "at": at}.items() if val})
    if as_json:
        emit_json(v)
        return
    t = v["terms"]
    cur = t["currency"]

    def m(x: int) -> str:
        return format_amount(x, cur)

    click.echo(f"loan        {v['loan']}")
    click.echo(f"state       {v['shown_state']}" + (f" ({v['bucket']} days)" if v.get("bucket") else "")
               + f", {v['days_past_due']} days past due, as of {v['as_of']}")
    click.echo(f"lender      {t['holder']}" + ("" if t["holder"] == t["lender"] else f" (originally {t['lender']})"))
    click.echo(f"borrower    {t['borrower']}")
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
          [[str(r["n"]), r["what"], m(r["amount"]), r["date"], r["signer"][-8:], "yes" if r["counted"] else "NO"]
           for r in v["receipts"]])
    if v.get("rejected"):
        click.echo("")
        table("not counted", ["document", "reason", "why"],
              [[x["id"][:16], x["code"], x["message"]] for x in v["rejected"]])
    if v.get("disputes"):
        click.echo("")
        table("disputes", ["by", "reason"], [[d["by"][-8:], d["reason"]] for d in v["disputes"]])
