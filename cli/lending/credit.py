"""``p2pnode credit PEER``: a peer's credit in the running node's eyes (control method
``credit.show``, docs/api.md; the model is docs/credit.md)."""

from __future__ import annotations

import click

from cli import petnames
from cli.context import Ctx, handles_errors, json_option, node_call, pass_ctx
from cli.output import as_peer_id, emit_json, peer_full, peer_label, table


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("peer")
@click.option("--explain", is_flag=True, help="List every factor and what it contributed to the grade.")
@json_option
@pass_ctx
@handles_errors
def credit(c: Ctx, peer: str, explain: bool, as_json: bool) -> None:
    """Show PEER's credit grade (A best to G, or none for no usable history), the largest
    amount and lowest rate this node recommends for it, and its debt with every lender.

    PEER is a peer ID, a 64-hex public key, or a name you gave a peer. History counts only
    as much as this node's trust reaches its lenders through loans that were repaid, so a
    ring of fresh keys repaying each other earns nothing (docs/credit.md)."""
    names = None if as_json else petnames.load(c.home.path)
    pid = petnames.resolve_peer(c.home.path, as_peer_id(peer), "PEER")
    p = node_call(c, "credit.show", {"peer": pid, "explain": explain})
    if as_json:
        emit_json(p)
        return
    click.echo(f"peer        {peer_full(p['peer'], names)}")
    click.echo(f"grade       {p['grade']}" + ("   FORKED: a fork proof of this key is held" if p["forked"] else "")
               + f"   (score {p['score']})")
    limits = ", ".join(f"{v} {k}" for k, v in p["max_amount_text"].items()) or "nothing"
    click.echo(f"lend up to  {limits}")
    click.echo(f"min rate    {p['min_rate_bp'] / 100:.2f}%")
    click.echo(f"history     {p['loans']} loans: {p['repaid']} repaid ({p['repaid_on_time']} on time), "
               f"{p['paid_late']} late (worst {p['max_days_past_due']} days), {p['defaulted']} defaulted, "
               f"{p['written_off']} written off, {p['disputed']} disputed, {p['active']} active")
    click.echo(f"trust       {p['trusted_repaid_pm'] / 1000:.2f} trusted repaid loans, "
               f"{p['trusted_counterparties']} of {p['counterparties']} lenders reached by this node's trust; "
               f"known {p['verified_age_days']} days")
    owed = ", ".join(f"{v} {k}" for k, v in p["owed_text"].items()) or "nothing"
    click.echo(f"owes        {owed}" + (f", {p['days_past_due']} days past due" if p["days_past_due"] else ""))
    if p["owed_by_lender"]:
        table(None, ["lender", "owed (minor units)"],
              [[peer_label(k, names), ", ".join(f"{a} {cur}" for cur, a in v.items())]
               for k, v in p["owed_by_lender"].items()])
    if explain:
        table("factors", ["factor", "value", "points", "what"],
              [[f["name"], str(f["value"]), f"{f['points']:+d}", f["note"]] for f in p["factors"]])
