"""``p2pnode api list|show|call``: the control API from the command line, read from the
methods' declarations (the same ones the node checks requests against, docs/api.md).
``list`` and ``show`` need no node; ``call`` sends one request, checked here first."""

from __future__ import annotations

import json
from typing import Any

import click

from cli.context import CONTEXT, Ctx, handles_errors, json_option, node_call, pass_ctx
from cli.output import USAGE, emit_json, fail, table

CALL_TIMEOUT = 60.0


@click.group(context_settings=CONTEXT)
def api() -> None:
    """The control API of a running node: its declared methods, and calls to them.

    Every method of the core and of each extension is declared with its params, result
    and help; `p2pnode api call` sends one, checked against its declaration first.
    """


def _table(c: Ctx) -> Any:
    return c.loaded.methods


@api.command("list")
@json_option
@pass_ctx
@handles_errors
def list_(c: Ctx, as_json: bool) -> None:
    """List every method this home's node serves, with who declares it."""
    t = _table(c)
    rows = [{"method": name, "owner": t.owners[name], "help": m.help.split(". ")[0].rstrip(".") + "."}
            for name, m in sorted(t.methods.items())]
    if as_json:
        emit_json({"methods": rows})
    else:
        table(None, ["method", "from", "what it does"], [[r["method"], r["owner"], r["help"]] for r in rows])


@api.command()
@click.argument("method")
@json_option
@pass_ctx
@handles_errors
def show(c: Ctx, method: str, as_json: bool) -> None:
    """Show one method's params, result and help."""
    m = _table(c).get(method)
    if m is None:
        fail(f"no method {method} is declared here (see `p2pnode api list`)", code="unknown_method", exit_code=USAGE)
    info = {"method": m.name, "owner": _table(c).owners[m.name], "help": m.help, "result": m.result,
            "params": [{"name": p.name, "type": p.describe(), "required": p.required, "default": p.default,
                        "help": p.help} for p in m.params]}
    if as_json:
        emit_json(info)
        return
    click.echo(f"{m.name}  ({info['owner']})\n\n{m.help}\n")
    if m.params:
        table("params", ["name", "type", "", "meaning"],
              [[p["name"], p["type"], "required" if p["required"] else
                ("default " + json.dumps(p["default"]) if p["default"] is not None else "optional"), p["help"]]
               for p in info["params"]])
    else:
        click.echo("no params")
    if m.result:
        click.echo(f"\nresult: {m.result}")


@api.command()
@click.argument("method")
@click.argument("params", required=False, default="{}")
@click.option("--timeout", type=click.FloatRange(1, 3600), default=CALL_TIMEOUT, show_default=True,
              help="Seconds to wait for the answer.")
@pass_ctx
@handles_errors
def call(c: Ctx, method: str, params: str, timeout: float) -> None:
    """Call METHOD with PARAMS (a JSON object, default {}) and print the answer as JSON.

    The params are checked against the method's declaration before anything is sent
    (exit 2 naming the param); the node's refusal exits as its code says.
    """
    try:
        value = json.loads(params)
    except ValueError as e:
        fail(f"PARAMS is not JSON: {e}", code="usage_error", exit_code=USAGE)
    if not isinstance(value, dict):
        fail("PARAMS is a JSON object of params by name", code="usage_error", exit_code=USAGE)
    if _table(c).get(method) is None:
        fail(f"no method {method} is declared here (see `p2pnode api list`)", code="unknown_method", exit_code=USAGE)
    emit_json(node_call(c, method, value, timeout=timeout))
