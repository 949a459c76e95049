"""``snncompile run GRAPH.onnx --input DATA.npz``: simulate a graph on one backend, write OUT.npz.

OUT.npz holds ``counts`` (N, n_out), ``pred`` (N,), and per step either ``spikes``
(N, T, n_out, uint8; spike readout) or ``potential`` (N, T, n_out; potential readout: the
readout's accumulated potential after each step, so ``potential[:, -1] == counts``),
``accuracy`` when DATA.npz has labels ``y``, and ``backend``, ``precision``, ``readout``,
``steps`` describing the run. ``scale``: the readout's integer units per float unit
(``ReadoutFixed.scale`` of a fixed-point run, 1.0 for float runs and spike readouts):
``counts / scale`` and ``potential / scale`` compare with the float logits.
``--samples N`` runs the first N samples of DATA.npz only.
"""
from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

from snncompile.commands._common import atomic_output, check_labels, load_npz, reports_errors
from snncompile.errors import SnnCompileError
from snncompile.targets.base import BACKENDS, PRECISIONS


def load_inputs(data_file, graph, steps=None, samples=None):
    """DATA.npz checked against ``graph``: (x as (N, T, *input_shape) float64, T, labels or None).

    Every problem is one SnnCompileError naming ``data_file``; ``samples`` keeps the first ones.
    Shared by the commands that take ``--input DATA.npz``.
    """
    from snncompile.targets import prepare_inputs

    x, y = load_npz(data_file)
    if samples:
        x, y = x[:samples], (None if y is None else y[:samples])
    try:
        x, T = prepare_inputs(graph, x, steps)
    except SnnCompileError as exc:
        raise SnnCompileError(f"input file '{data_file}': {exc}") from None
    n_classes = int(np.prod(graph.shape(graph.output.name)))
    return x, T, (None if y is None else check_labels(y, len(x), data_file, n_classes))


def fixed_point_graph(graph):
    """``graph`` itself when quantized, else a quantized copy (default settings, no calibration)."""
    try:
        from snncompile.quantize import is_quantized, quantize
    except ImportError as exc:
        raise SnnCompileError(f"--precision fixed needs the quantizer (snncompile.quantize), which is not "
                              f"available here ({exc})") from None
    if is_quantized(graph):
        return graph, False
    qgraph, _report = quantize(graph)
    return qgraph, True


def readout_scale(graph, precision: str) -> float:
    """Integer units per float unit of the readout: ``ReadoutFixed.scale`` of a fixed-point
    potential readout, else 1.0 (float values, or spikes, which need no conversion)."""
    out = graph.output
    fixed = getattr(out, "fixed", None)
    if precision != "fixed" or out.mode != "potential" or fixed is None:
        return 1.0
    return float(fixed.scale)


def result_arrays(result, labels=None, scale: float = 1.0) -> dict[str, np.ndarray]:
    """What OUT.npz holds for a RunResult (module docstring)."""
    arrays = {"counts": result.counts, "pred": result.pred.astype(np.int64),
              "backend": np.array(result.backend), "precision": np.array(result.precision),
              "readout": np.array(result.readout), "steps": np.array(result.outputs.shape[1]),
              "scale": np.array(float(scale))}
    if result.readout == "spikes":
        arrays["spikes"] = result.outputs.astype(np.uint8)
    else:
        arrays["potential"] = np.cumsum(result.outputs, axis=1)
    if labels is not None:
        arrays["accuracy"] = np.array(result.accuracy(labels))
    return arrays


@click.command("run")
@click.argument("graph_file", metavar="GRAPH.onnx", type=click.Path(dir_okay=False))
@click.option("--input", "-i", "data_file", metavar="DATA.npz", required=True, type=click.Path(dir_okay=False),
              help="x: (N, T, *input_shape) or static (N, *input_shape); optional y: (N,) labels.")
@click.option("--backend", type=click.Choice(BACKENDS), default="reference", show_default=True)
@click.option("--precision", type=click.Choice(PRECISIONS), default="float", show_default=True,
              help="fixed: Loihi integers (a graph not yet quantized is quantized with default settings).")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Time steps to run (default: those of x, or the graph's for a static x).")
@click.option("-o", "--output", "out_file", metavar="OUT.npz", type=click.Path(dir_okay=False), default=None,
              help="Result file [default: <GRAPH name>.out.npz in the current folder].")
@click.option("--samples", type=click.IntRange(min=1), default=None,
              help="Run only the first N samples of DATA.npz [default: all].")
@reports_errors
def command(graph_file, data_file, backend, precision, steps, out_file, samples):
    """Run GRAPH.onnx on the inputs of DATA.npz and write counts, predictions and output spikes."""
    from snncompile.ir.onnx_format import load_onnx
    from snncompile.targets import run

    out_file = Path(out_file or f"{Path(graph_file).stem}.out.npz")
    graph = load_onnx(graph_file)
    x, T, y = load_inputs(data_file, graph, steps, samples)
    with atomic_output(out_file) as tmp:
        if precision == "fixed":
            graph, quantized_now = fixed_point_graph(graph)
            if quantized_now:
                click.echo("note: the graph is not quantized; quantized it with default settings "
                           "(use `snncompile quantize --calib` for calibrated scales)")
        start = time.perf_counter()
        result = run(graph, x, steps=T, backend=backend, precision=precision)
        wall = time.perf_counter() - start
        arrays = result_arrays(result, y, readout_scale(graph, precision))
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    acc = (f", accuracy {float(arrays['accuracy']):.2%} ({int(np.sum(result.pred == y))}/{len(y)})"
           if y is not None else "")
    click.echo(f"ran {len(x)} sample(s) x {T} steps on {backend} ({precision}){acc} in {wall:.2f} s "
               f"-> {out_file}")
