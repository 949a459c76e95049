"""``snncompile inspect GRAPH.onnx [--json]``: what is in a graph file, node by node."""
from __future__ import annotations

import json

import click

from snncompile.commands._common import reports_errors


@click.command("inspect")
@click.argument("graph_file", metavar="GRAPH.onnx", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON (for machines).")
@reports_errors
def command(graph_file, as_json):
    """Show each node of GRAPH.onnx: kind, inputs, output shape, key parameters, neuron settings
    and fixed-point parameters, with totals (weights, neurons)."""
    from snncompile.ir.onnx_format import load_onnx
    from snncompile.ir.summary import format_summary, summarize

    summary = summarize(load_onnx(graph_file))
    if as_json:
        click.echo(json.dumps(dict(file=str(graph_file), **summary), indent=2))
    else:
        click.echo(f"file: {graph_file}")
        click.echo(format_summary(summary))
