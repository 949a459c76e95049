"""``snncompile run GRAPH.onnx --input DATA.npz``: simulate a graph on one backend, write OUT.npz.

OUT.npz holds ``counts`` (N, n_out), ``pred`` (N,), and per step either ``spikes``
(N, T, n_out, uint8; spike readout) or ``potential`` (N, T, n_out; potential readout: the
readout's accumulated potential after each step, so ``potential[:, -1] == counts``) or
``membrane`` (N, T, n_out; membrane readout: the leaky integrator's v after each step,
``counts`` its sum over time),
``accuracy`` when DATA.npz has labels ``y``, and ``backend``, ``precision``, ``readout``,
``steps`` describing the run. ``scale``: the readout's integer units per float unit
(``ReadoutFixed.scale`` of a fixed-point run, 1.0 for float runs and spike readouts):
``counts / scale``, ``potential / scale`` and ``membrane / scale`` compare with the float values.
``--samples N`` runs the first N samples of DATA.npz only.

DATA is read in chunks of ``--chunk-size`` samples and OUT.npz written chunk by chunk
(``snncompile.streaming``): peak memory does not grow with N, and the file is byte for byte
the same for every chunk size.
"""
from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

from snncompile.cluster import compute_chunks, ray_option
from snncompile.commands._common import atomic_output, lava_budget_options, reports_errors
from snncompile.errors import SnnCompileError
from snncompile.streaming import Progress, RunJob, RunWriter, auto_chunk_size, chunk_ranges, open_inputs
from snncompile.targets.base import BACKENDS, PRECISIONS


def chunk_size_option(func):
    """``--chunk-size N`` (shared by the streaming commands): samples read, run and written
    at a time; None: ``streaming.auto_chunk_size``."""
    return click.option("--chunk-size", type=click.IntRange(min=1), default=None,
                        help="Samples read, run and written at a time: memory is that of one chunk; "
                             "the results do not depend on it [default: 4096 for run, 512 for energy "
                             "and verify, fewer when samples are large: 64 MB of float64 input].")(func)


def data_steps(source, graph, steps, data_file) -> int:
    """T of a streamed data set (from its first sample), or an error naming ``data_file``."""
    from snncompile.targets.base import input_steps

    # shape and dtype only: a stand-in with no memory behind it (a crafted file may declare
    # samples far larger than memory; the shape check refuses them before anything is read)
    x0 = np.broadcast_to(np.zeros((), source.dtype), (1,) + tuple(source.sample_shape))
    try:
        return input_steps(graph, x0, steps)[0]
    except SnnCompileError as exc:
        raise SnnCompileError(f"input file '{data_file}': {exc}") from None


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
    potential or membrane readout, else 1.0 (float values, or spikes, which need no conversion)."""
    out = graph.output
    fixed = getattr(out, "fixed", None)
    if precision != "fixed" or out.mode == "spikes" or fixed is None:
        return 1.0
    return float(fixed.scale)


@click.command("run")
@click.argument("graph_file", metavar="GRAPH.onnx", type=click.Path(dir_okay=False))
@click.option("--input", "-i", "data_file", metavar="DATA.npz", required=True, type=click.Path(),
              help="x: (N, T, *input_shape) or static (N, *input_shape); optional y: (N,) labels. "
                   "Also an .npy of x, or a folder of .npz shards (name order).")
@click.option("--backend", type=click.Choice(BACKENDS), default="reference", show_default=True)
@click.option("--precision", type=click.Choice(PRECISIONS), default="float", show_default=True,
              help="fixed: Loihi integers (a graph not yet quantized is quantized with default settings).")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Time steps to run (default: those of x, or the graph's for a static x).")
@click.option("-o", "--output", "out_file", metavar="OUT.npz", type=click.Path(dir_okay=False), default=None,
              help="Result file [default: <GRAPH name>.out.npz in the current folder].")
@click.option("--samples", type=click.IntRange(min=1), default=None,
              help="Run only the first N samples of DATA.npz [default: all].")
@chunk_size_option
@lava_budget_options
@ray_option
@reports_errors
def command(graph_file, data_file, backend, precision, steps, out_file, samples, chunk_size, ray_address):
    """Run GRAPH.onnx on the inputs of DATA.npz and write counts, predictions and output spikes."""
    from snncompile.ir.onnx_format import load_onnx

    out_file = Path(out_file or f"{Path(graph_file).stem}.out.npz")
    graph = load_onnx(graph_file)
    source = open_inputs(data_file)
    T = data_steps(source, graph, steps, data_file)
    n = min(len(source), samples or len(source))
    with atomic_output(out_file) as tmp:
        if precision == "fixed":
            graph, quantized_now = fixed_point_graph(graph)
            if quantized_now:
                click.echo("note: the graph is not quantized; quantized it with default settings "
                           "(use `snncompile quantize --calib` for calibrated scales)")
        job = RunJob(graph, backend, precision, T, str(data_file))
        if source.has_labels:
            job.labels(source.labels(n))     # bad labels end the command before anything runs
        writer = RunWriter(Path(tmp).parent, n, backend, precision, graph.output.mode, T,
                           source.has_labels, scale=readout_scale(graph, precision))
        try:
            start = time.perf_counter()
            # the event engine keeps integer spike trains as stored: chunks by their stored size
            as_stored = backend == "emulator" and precision == "fixed"
            ranges = chunk_ranges(n, chunk_size or auto_chunk_size(source, as_stored=as_stored))
            with Progress(n, f"run ({backend})", announce=backend == "lava") as progress:
                for chunk in compute_chunks(job, source, ranges, ray_address):
                    writer.add(chunk)
                    progress.update(chunk.hi - chunk.lo)
            writer.finish(tmp)
            wall = time.perf_counter() - start     # reading, running and writing: all per sample
        finally:
            writer.close()
    acc = (f", accuracy {writer.accuracy:.2%} ({writer.correct}/{n})"
           if source.has_labels else "")
    click.echo(f"ran {n} sample(s) x {T} steps on {backend} ({precision}){acc} in {wall:.2f} s "
               f"-> {out_file}")
