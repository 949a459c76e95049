"""``snncompile map GRAPH.q.onnx --chip loihi1|loihi2|FILE [--json] [-o REPORT.html|.json|.md]``:
does the graph fit on the chip, on how many cores and chips, and which limit binds each layer."""
from __future__ import annotations

import time
from pathlib import Path

import click

from snncompile.commands._common import atomic_output, reports_errors
from snncompile.errors import SnnCompileError


@click.command("map")
@click.argument("graph_file", metavar="GRAPH.onnx", type=click.Path(dir_okay=False))
@click.option("--chip", required=True, metavar="loihi1|loihi1-sanafe|loihi2|FILE",
              help="A built-in chip profile or a profile JSON file in the same format.")
@click.option("--json", "as_json", is_flag=True, help="Print the map as JSON instead of a table.")
@click.option("-o", "--output", "out_file", metavar="REPORT", type=click.Path(dir_okay=False), default=None,
              help="Write the report: .json, .md or .html (with the core map picture).")
@reports_errors
def command(graph_file, chip, as_json, out_file):
    """Partition every neuron layer into chip cores so that no core breaks a limit."""
    from snncompile.chip.mapper import map_graph
    from snncompile.chip.report import FORMATS, map_dict, to_json
    from snncompile.ir.onnx_format import load_onnx

    if out_file is not None and Path(out_file).suffix.lower() not in FORMATS:
        raise SnnCompileError(f"report file '{out_file}': unknown format; use .json, .md or .html")
    graph = load_onnx(graph_file)
    start = time.perf_counter()
    d = map_dict(map_graph(graph, chip))
    wall = time.perf_counter() - start
    if out_file is not None:
        text = FORMATS[Path(out_file).suffix.lower()](d)
        with atomic_output(out_file) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
    if as_json:
        click.echo(to_json(d))
        return
    from snncompile.chip.report import LAYER_COLUMNS, layer_rows, summary_rows
    for k, v in summary_rows(d):
        click.echo(f"{k:<18}{v}")
    cells = [list(LAYER_COLUMNS)] + layer_rows(d)
    widths = [max(len(r[i]) for r in cells) for i in range(len(LAYER_COLUMNS))]
    click.echo("")
    for r in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    for note in d["notes"]:
        click.echo(f"note: {note}")
    click.echo(f"mapped {sum(la['neurons'] for la in d['layers']):,} neurons in {wall:.2f} s"
               + (f" -> {out_file}" if out_file else ""))
