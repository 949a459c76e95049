"""``snncompile quantize GRAPH.onnx [--calib DATA.npz] [--weight-bits 8] [-o GRAPH.q.onnx]``.

Writes the quantized graph (ONNX, float parameters kept, ``node.fixed`` added) and prints
the per-layer report (``--report-json FILE`` also saves it as JSON). Overflow or saturation
seen during calibration is printed as ``warning:`` lines on stderr; the command still
succeeds.
"""
from __future__ import annotations

from pathlib import Path

import click

from snncompile.commands._common import atomic_output, reports_errors
from snncompile.errors import SnnCompileError


def read_calibration(calib_file, max_samples: int = 1000):
    """The first ``max_samples`` of a calibration set, read lazily (never the whole file)."""
    from snncompile.streaming import open_inputs

    source = open_inputs(calib_file, what="calibration")
    n = min(max_samples, len(source))
    if n >= CALIB_NOTE_FROM:
        click.echo(f"quantize: calibrating on {n} sample(s) ...", err=True)
    return source.read(0, n)[0]


#: Calibration sets at least this large take seconds: say so on stderr while it runs.
CALIB_NOTE_FROM = 256


@click.command("quantize")
@click.argument("graph_file", metavar="GRAPH.onnx", type=click.Path(dir_okay=False))
@click.option("--calib", "calib_file", metavar="DATA.npz", type=click.Path(), default=None,
              help="Calibration inputs x (an .npz, .npy or folder of .npz shards; read lazily) ((N, T, *shape) or (N, *shape)) to choose the scales from.")
@click.option("--weight-bits", type=click.IntRange(1, 8), default=8, show_default=True)
@click.option("--input-bits", type=click.IntRange(2, 24), default=8, show_default=True,
              help="Bits of graded (non-spike) input messages.")
@click.option("--max-calib", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Use at most this many calibration samples.")
@click.option("-o", "--output", "out_file", metavar="GRAPH.q.onnx", type=click.Path(dir_okay=False),
              default=None, help="[default: <GRAPH>.q.onnx beside GRAPH]")
@click.option("--report-json", metavar="FILE.json", type=click.Path(dir_okay=False), default=None)
@reports_errors
def command(graph_file, calib_file, weight_bits, input_bits, max_calib, out_file, report_json):
    """Quantize GRAPH.onnx to Loihi fixed point (8-bit weights, 24-bit states)."""
    from snncompile.ir.onnx_format import load_onnx, save_onnx
    from snncompile.quantize import quantize

    graph_path = Path(graph_file)
    out_path = Path(out_file) if out_file else graph_path.with_name(f"{graph_path.stem}.q.onnx")
    graph = load_onnx(graph_file)
    calib = read_calibration(calib_file, max_calib) if calib_file else None
    try:
        qgraph, report = quantize(graph, calib=calib, weight_bits=weight_bits, input_bits=input_bits)
    except SnnCompileError as exc:
        if calib_file and str(exc).startswith("calibration data:"):
            raise SnnCompileError(f"calibration file '{calib_file}': {str(exc)[len('calibration data: '):]}") from None
        raise
    with atomic_output(out_path) as tmp:
        save_onnx(qgraph, tmp)
        if report_json:
            with atomic_output(report_json) as tmp_json:
                Path(tmp_json).write_text(report.to_json())
    for line in report.to_text().splitlines():
        if line.startswith("warning: "):
            click.echo(line, err=True)
        else:
            click.echo(line)
    click.echo(f"wrote {out_path}")
