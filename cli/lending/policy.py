"""``p2pnode policy list|show|set``: the lending policy the running node checks offers,
requests and loans by (control methods ``policy.*``, docs/api.md; the rules in
docs/policy.md)."""

from __future__ import annotations

from typing import Any

import click

from cli.context import Ctx, handles_errors, json_option, node_call, pass_ctx
from cli.output import emit_json, table


def _limits(t: dict) -> str:
    return ", ".join(f"{v:,} {k if k != '*' else '(any currency)'}" for k, v in sorted(t.items())) or "-"


def _show(p: dict) -> None:
    def row(name: str, value: Any) -> None:
        click.echo(f"{name:<22}{value}")

    row("policy", p["name"] + ("  (in force)" if p.get("in_force") else ""))
    row("description", p["description"])
    cap = p["rate_cap_text"] or "none"
    if p["lpr_bp"] is not None:
        cap += f"  ({p['lpr_multiple']} x LPR {p['lpr_text']}" + (f", or {p['apr_cap_bp'] / 100:.2f}%" if
                                                                  p["apr_cap_bp"] is not None else "") + ")"
    row("APR cap", cap)
    row("max principal", _limits(p["max_principal"]))
    row("max term", f"{p['max_term_months']}m" if p["max_term_months"] else "-")
    row("borrow cap (all)", _limits(p["borrow_cap"]))
    row("cap per lender", _limits(p["lender_cap"]))
    row("refuse past due", f"{p['max_days_past_due']}+ days" if p["max_days_past_due"] else "-")
    row("refuse defaulted", "yes" if p["refuse_defaulted"] else "no")
    row("refuse forked", "yes" if p["refuse_forked"] else "no")
    row("min grade", (p["min_grade"] or "-") + ("" if p["allow_ungraded"] or not p["min_grade"] else ", no ungraded"))
    steps = p["new_identity_steps"]
    row("new identities", ", ".join(f"{pc}% before {d} days" for d, pc in steps) if steps else "-")
    row("exposure per borrower", _limits(p["exposure_per_borrower"]))
    row("exposure per grade", "; ".join(f"{g}: {_limits(t)}" for g, t in sorted(p["exposure_per_grade"].items()))
        or "-")
    row("exposure total", _limits(p["exposure_total"]))
    if p.get("overrides"):
        row("overrides", ", ".join(f"{k} {v}" for k, v in p["overrides"].items()))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def policy() -> None:
    """The lending policy: what this node refuses to offer, propose or countersign."""


@policy.command("list")
@json_option
@pass_ctx
@handles_errors
def policy_list(c: Ctx, as_json: bool) -> None:
    """The policies this node knows, and the one in force."""
    a = node_call(c, "policy.list")
    if as_json:
        emit_json(a)
        return
    table("policies", ["name", "in force", "description"],
          [[p["name"], "*" if p["in_force"] else "", p["description"]] for p in a["policies"]])


@policy.command("show")
@click.argument("name", required=False)
@json_option
@pass_ctx
@handles_errors
def policy_show(c: Ctx, name: str | None, as_json: bool) -> None:
    """The parameters of policy NAME (default: the one in force, with its overrides)."""
    p = node_call(c, "policy.show", {"name": name})
    emit_json(p) if as_json else _show(p)


@policy.command("set")
@click.argument("name")
@click.option("--lpr", help="The one-year LPR, e.g. 3.10% (cn-2016 caps the APR at 4 x it).")
@click.option("--apr-cap", help="Cap the APR (fees included) at this, e.g. 24%.")
@click.option("--min-grade", type=click.Choice(list("ABCDEFG")), help="Lend to borrowers graded this or better.")
@click.option("--max-term", help="The longest term, in months, e.g. 120m.")
@json_option
@pass_ctx
@handles_errors
def policy_set(c: Ctx, name: str, lpr: str | None, apr_cap: str | None, min_grade: str | None,
               max_term: str | None, as_json: bool) -> None:
    """Put policy NAME in force now and in config.toml ([policy]), with the overrides given
    (the others: the preset's)."""
    p = node_call(c, "policy.set", {"name": name, "lpr": lpr, "apr_cap": apr_cap, "min_grade": min_grade,
                                    "max_term": max_term})
    emit_json(p) if as_json else (click.echo(f"policy {p['name']} in force"), _show(p))
