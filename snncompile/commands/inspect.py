"""``snncompile inspect GRAPH.onnx [--json]``: what is in a graph file, node by node."""
from __future__ import annotations

import json

import click

from snncompile.commands._common import lava_budget_options, reports_errors


@click.command("inspect")
@click.argument("graph_file", metavar="GRAPH.onnx", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON (for machines).")
@click.option("--target", type=click.Choice(["lava"]), default=None,
              help="Also show the size of the graph's mapping onto that target: for lava, per node the "
                   "neurons and product units, synapses and Lava processes, and the processes of a real "
                   "build by role.")
@click.option("--precision", type=click.Choice(["float", "fixed"]), default="float", show_default=True,
              help="With --target lava: the float or the fixed-point mapping (an unquantized graph is "
                   "quantized with default scales, as run does).")
@lava_budget_options
@reports_errors
def command(graph_file, as_json, target, precision):
    """Show each node of GRAPH.onnx: kind, inputs, output shape, key parameters, neuron settings
    and fixed-point parameters, with totals (weights, neurons)."""
    from snncompile.ir.onnx_format import load_onnx
    from snncompile.ir.summary import format_summary, summarize

    graph = load_onnx(graph_file)
    summary = summarize(graph)
    if target == "lava":
        summary["lava"] = _lava_size(graph, precision)
    if as_json:
        click.echo(json.dumps(dict(file=str(graph_file), **summary), indent=2))
    else:
        click.echo(f"file: {graph_file}")
        click.echo(format_summary(summary))
        if target == "lava":
            click.echo(format_lava_size(summary["lava"]))


def _lava_size(graph, precision: str) -> dict:
    """The Lava mapping's size (``targets/lava/size.py``) and the processes of a real build of
    one sample (Lava processes are made, nothing is run)."""
    import tempfile

    import numpy as np

    from snncompile.targets.lava import builder, limits, size
    from snncompile.targets.lava import params as prm

    graph = prm.prepare_graph(graph, precision)
    limits.check_graph(graph, precision)
    report = size.check_budget(graph)
    with tempfile.TemporaryDirectory(prefix="snncompile-inspect-") as folder:
        x = np.zeros((1,) + tuple(graph.input.shape))
        net = builder.build(graph, x, True, graph.timesteps or 1, folder, precision=precision)
        report.processes = size.count_processes(net)
        report.latency = net.num_steps - (graph.timesteps or 1)
    return dict(report.as_dict(), precision=precision)


def format_lava_size(lava: dict) -> str:
    rows = [n for n in lava["nodes"] if n["units"] or n["synapses"] or n["processes"]]
    width = max([len(n["name"]) for n in rows] + [4])
    lines = ["", f"Lava mapping ({lava['precision']}): {lava['units']:,} neurons and product units "
                 f"({lava['product_units']:,} product units), {lava['synapses']:,} synapses, "
                 f"{lava['processes']['total']} Lava processes, {lava['latency_steps']} steps of pipeline latency",
             f"  {'node':<{width}}  {'kind':<10} {'units':>12} {'product units':>14} {'synapses':>14} {'processes':>9}"]
    for n in rows:
        lines.append(f"  {n['name']:<{width}}  {n['kind']:<10} {n['units']:>12,} {n['product_units']:>14,} "
                     f"{n['synapses']:>14,} {n['processes']:>9}")
    roles = ", ".join(f"{k} {v}" for k, v in lava["processes"].items() if k != "total")
    lines.append(f"  processes of a build, by role: {roles}")
    return "\n".join(lines)
