"""``snncompile verify GRAPH.onnx --input DATA.npz``: every backend on the same samples.

Runs the float reference, the emulator in fixed point, Lava in fixed point and Lava in
float, and prints a side-by-side table (accuracy when DATA.npz has labels, agreement of
predictions with the float reference, exact agreement of the outputs with the emulator)
and a per-node table: every node both the emulator and Lava fixed record (neurons,
synapses, pooling, Adds, ...), its totals per backend, and in how many samples Lava
fixed equals the emulator exactly (sum over time and sum per step). When they differ it
names the first node in graph order that does, in one line::

    first disagreement: node 'pool' (AvgPool2d): lava fixed vs emulator, 37/80 samples differ

A graph that is not quantized yet is quantized with default settings (or ``--calib``),
the same parameters for emulator and Lava.

Exit status: 0 when emulator and Lava fixed agree exactly on every recorded node and
the outputs; 1 when they differ (the first disagreeing node is named) or on bad input;
3 when Lava fixed point could not be run at all (the reason is printed). Lava float is
compared with the reference the same way (within 1e-9: both are float64, summed in
different orders); its first disagreement is printed too but does not set the status.

Reference and emulator stream DATA in chunks of ``--chunk-size`` samples, keeping only the
predictions, layer totals and the first ``--lava-samples`` outputs (compared with Lava).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Optional

import click
import numpy as np

from snncompile.cluster import compute_chunks, ray_option
from snncompile.commands._common import lava_budget_options, reports_errors
from snncompile.commands.run import chunk_size_option
from snncompile.errors import SnnCompileError


@dataclass
class Column:
    """One backend's run (or why it did not run)."""

    label: str
    result: object = None
    seconds: float = 0.0
    n: int = 0
    error: Optional[str] = None
    notes: list = field(default_factory=list)


#: Exit status when the comparison ran but Lava fixed point could not (2 is click's usage error).
LAVA_DID_NOT_RUN = 3


def _run(label, fn, n) -> Column:
    col = Column(label, n=n)
    t0 = time.perf_counter()
    try:
        col.result = fn()
    except SnnCompileError as exc:
        col.error = str(exc)
    col.seconds = time.perf_counter() - t0
    return col


@dataclass
class NodeDiff:
    """How many of the first ``n`` samples of one node differ between two backends."""

    name: str
    kind: str
    differ: int
    n: int
    pair: str = "lava fixed vs emulator"


@dataclass
class Comparison:
    summary: list
    layers: list
    #: emulator == lava fixed on every recorded node and the outputs
    exact: bool
    #: the first node (graph order) where lava fixed and the emulator differ, or None
    first: Optional[NodeDiff] = None
    #: the same for lava float vs the reference (within FLOAT_TOLERANCE; informational)
    float_first: Optional[NodeDiff] = None


#: Lava float and the reference both compute in float64, in different summation orders.
FLOAT_TOLERANCE = 1e-9


def node_diffs(nodes: list, base, other, n: int, pair: str = "lava fixed vs emulator",
               tolerance: float = 0.0) -> list[NodeDiff]:
    """Per node recorded by both runs (``nodes``: (name, kind) in graph order, the Output
    last): samples whose sum over time or per-step sum differ (exactly, or beyond
    ``tolerance`` relative and absolute for float runs)."""
    def same(a, b):
        eq = a == b if tolerance == 0 else np.isclose(a, b, rtol=tolerance, atol=tolerance)
        return np.all(eq.reshape(n, -1), axis=1)

    diffs = []
    for name, kind in nodes:
        if kind == "Output":
            eq = same(base.outputs[:n], other.outputs[:n])
        elif name in base.layer_counts and name in other.layer_counts:
            eq = np.ones(n, dtype=bool)
            for rec in ("layer_counts", "layer_steps"):
                a, b = getattr(base, rec).get(name), getattr(other, rec).get(name)
                if a is not None and b is not None:
                    eq &= same(a[:n], b[:n])
        else:
            continue
        diffs.append(NodeDiff(name, kind, int(n - eq.sum()), n, pair))
    return diffs


def first_disagreement_line(d: NodeDiff) -> str:
    return f"first disagreement: node '{d.name}' ({d.kind}): {d.pair}, {d.differ}/{d.n} samples differ"


def _total(arr) -> str:
    v = float(np.sum(arr))
    return str(int(v)) if np.isfinite(v) and v == int(v) else f"{v:.6g}"


@dataclass
class Streamed:
    """A reference/emulator run over the whole data set, chunk by chunk, keeping only what the
    tables need: every prediction, every output spike (uint8: T x n_out bytes a sample; a
    potential readout: the first ``keep`` samples), the node counts and per-step sums of the
    first ``keep`` samples (compared with Lava), and each node's total over those and all
    samples (exact integers for integer values, float sums for the reference's currents)."""

    readout: str
    precision: str
    keep: int
    pred: np.ndarray = None
    outputs: np.ndarray = None
    layer_counts: dict = field(default_factory=dict)
    layer_steps: dict = field(default_factory=dict)
    totals_head: dict = field(default_factory=dict)
    totals_all: dict = field(default_factory=dict)

    def add(self, result, lo: int) -> None:
        head = max(0, min(self.keep - lo, len(result.outputs)))
        self.pred = _cat(self.pred, result.pred)
        if self.readout == "spikes":
            self.outputs = _cat(self.outputs, result.outputs.astype(np.uint8))
        elif head:
            self.outputs = _cat(self.outputs, result.outputs[:head])
        for k, lc in result.layer_counts.items():
            if head:
                self.layer_counts[k] = _cat(self.layer_counts.get(k), lc[:head])
                if k in result.layer_steps:
                    self.layer_steps[k] = _cat(self.layer_steps.get(k), result.layer_steps[k][:head])
                self.totals_head[k] = self.totals_head.get(k, 0) + _sum(lc[:head])
            self.totals_all[k] = self.totals_all.get(k, 0) + _sum(lc)

    def total(self, name: str, n: int) -> Optional[int]:
        if name not in self.totals_all:
            return None
        if n == len(self.pred):
            return self.totals_all[name]
        if n == self.keep:
            return self.totals_head[name]
        raise ValueError(f"layer totals kept for the first {self.keep} or all {len(self.pred)} samples, not {n}")


@dataclass
class VerifyChunk:
    """Samples lo:hi: their labels (None without) and the reference and emulator Columns."""

    lo: int
    hi: int
    labels: Optional[np.ndarray]
    parts: list


@dataclass
class VerifyJob:
    """The reference float and emulator fixed runs of samples lo:hi; picklable, so that
    ``--ray`` can run the chunks on a cluster (``snncompile.cluster``)."""

    graph: object
    qgraph: object
    steps: int
    data_file: str

    def __call__(self, source, lo: int, hi: int) -> VerifyChunk:
        from snncompile.streaming import RunJob
        from snncompile.targets import emulator, reference

        x, y = source.read(lo, hi)
        job = RunJob(self.graph, "reference", "float", self.steps, self.data_file)
        job.check(x, lo)
        labels = None if y is None else job.labels(y)
        T = self.steps
        return VerifyChunk(lo, hi, labels, [
            _run("reference float", lambda: reference.run(self.graph, x, steps=T, record=True), hi - lo),
            _run("emulator fixed", lambda: emulator.run(self.qgraph, x, steps=T, precision="fixed",
                                                        record=True), hi - lo)])


def _sum(a: np.ndarray):
    """Exact Python int for integer-valued arrays (no float rounding as totals grow), else float."""
    return int(a.sum(dtype=np.int64)) if a.dtype.kind in "biu" else float(a.sum())


def _cat(a, b):
    return b if a is None else np.concatenate([a, b])


def _layer_total(result, name: str, n: int) -> Optional[int]:
    if isinstance(result, Streamed):
        return result.total(name, n)
    lc = result.layer_counts.get(name)
    return None if lc is None else int(lc[:n].sum())


def compare(ref: Column, emu: Column, others: list[Column], labels, nodes: list) -> Comparison:
    """Render the two tables and compare lava fixed with the emulator node by node.

    ``nodes``: (name, kind) of the graph's nodes in graph order; every one both runs
    recorded is compared (neurons, synapses, pooling, Adds, ...), then the outputs."""
    cols = [ref, emu, *others]
    head = ("backend", "samples", "accuracy", "pred = float ref", "outputs = emulator", "time s")
    rows = [head]
    emu_out = emu.result.outputs if emu.result is not None else None
    for c in cols:
        if c.result is None:
            rows.append((c.label, "-", "-", "-", "not run (reason below)", "-"))
            continue
        r, n = c.result, c.n
        acc = f"{np.mean(r.pred[:n] == labels[:n]):.2%}" if labels is not None else "-"
        agree = f"{np.mean(r.pred[:n] == ref.result.pred[:n]):.2%}"
        if c is emu or emu_out is None:
            same = "-"
        else:
            if r.readout == "spikes":
                eq = np.all(r.outputs[:n] == emu_out[:n], axis=(1, 2))
            else:
                eq = np.all(r.outputs[:n] == emu_out[:n], axis=(1, 2)) if r.precision == "fixed" else None
            same = "-" if eq is None else f"{int(eq.sum())}/{n} samples"
        rows.append((c.label, str(n), acc, agree, same, f"{c.seconds:.2f}"))
    summary = _table(rows)
    lava_fixed = next((c for c in others if c.label == "lava fixed" and c.result is not None), None)
    diffs = {}
    if lava_fixed is not None:
        diffs = {d.name: d for d in node_diffs(nodes, emu.result, lava_fixed.result, lava_fixed.n)}
    recorded = [(k, kind) for k, kind in nodes
                if k in emu.result.layer_counts and k in ref.result.layer_counts]
    lrows = [("node", "kind", *[c.label for c in cols], "lava fixed = emulator")]
    n_common = min([c.n for c in cols if c.result is not None] or [0])
    for k, kind in recorded:
        vals = []
        for c in cols:
            total = _layer_total(c.result, k, n_common) if c.result is not None else None
            vals.append("-" if total is None else _total(total))
        d = diffs.get(k)
        match = "-" if lava_fixed is None else ("not recorded" if d is None else f"{d.n - d.differ}/{d.n}")
        lrows.append((k, kind, *vals, match))
    first = next((d for d in diffs.values() if d.differ), None)
    exact = lava_fixed is not None and first is None
    lava_float = next((c for c in others if c.label == "lava float" and c.result is not None), None)
    float_first = None
    if lava_float is not None:
        float_first = next((d for d in node_diffs(nodes, ref.result, lava_float.result, lava_float.n,
                                                  "lava float vs reference float", FLOAT_TOLERANCE)
                            if d.differ), None)
    layers = _table(lrows) + [f"(node totals over time and elements, first {n_common} samples)"]
    return Comparison(summary, layers, exact, first, float_first)


def _table(rows) -> list[str]:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


@click.command("verify")
@click.argument("graph_file", metavar="GRAPH.onnx", type=click.Path(dir_okay=False))
@click.option("--input", "-i", "data_file", metavar="DATA.npz", required=True, type=click.Path(),
              help="As for `run` (also an .npy or a folder of .npz shards); streamed in chunks.")
@click.option("--samples", type=click.IntRange(min=1), default=None,
              help="Use the first N samples for reference and emulator [default: all].")
@click.option("--lava-samples", type=click.IntRange(min=1), default=20, show_default=True,
              help="Lava runs one sample at a time (about 1 ms per step): the first N samples.")
@click.option("--calib", "calib_file", metavar="DATA.npz", type=click.Path(dir_okay=False), default=None,
              help="Calibration data when GRAPH is not quantized yet.")
@click.option("--no-lava-float", is_flag=True, help="Skip the Lava float run.")
@click.option("--steps", type=click.IntRange(min=1), default=None)
@chunk_size_option
@lava_budget_options
@ray_option
@reports_errors
def command(graph_file, data_file, samples, lava_samples, calib_file, no_lava_float, steps, chunk_size,
            ray_address):
    """Run reference float, emulator fixed, Lava fixed and Lava float side by side."""
    from snncompile.commands.quantize import read_calibration
    from snncompile.commands.run import data_steps
    from snncompile.ir.onnx_format import load_onnx
    from snncompile.quantize import is_quantized, quantize
    from snncompile.streaming import RECORD_CHUNK, Progress, RunJob, auto_chunk_size, chunk_ranges, open_inputs

    graph = load_onnx(graph_file)
    source = open_inputs(data_file)
    T = data_steps(source, graph, steps, data_file)
    qgraph = graph
    if not is_quantized(graph):
        calib = read_calibration(calib_file) if calib_file else None
        qgraph, _ = quantize(graph, calib=calib)
        click.echo(f"graph not quantized: quantized with {'--calib data' if calib_file else 'default settings'}")
    n = min(samples or len(source), len(source))
    nl = min(lava_samples, n)
    checker = RunJob(graph, "reference", "float", T, str(data_file))
    if source.has_labels:
        checker.labels(source.labels(n))     # bad labels end the command before Lava starts
    # Lava first, on its few samples: then the streamed columns know which totals to keep
    x_lava, _ = source.read(0, nl)
    checker.check(x_lava)
    others = []
    try:
        from snncompile.targets import lava
    except Exception as exc:  # Lava not importable at all
        lava = None
        lava_error = f"the Lava target cannot be imported ({exc})"
    if lava is not None:
        click.echo(f"verify: running Lava on {nl} sample(s) ...", err=True)
        others.append(_run("lava fixed", lambda: lava.run(qgraph, x_lava, steps=T, precision="fixed",
                                                          record=True), nl))
        if not no_lava_float:
            others.append(_run("lava float", lambda: lava.run(graph, x_lava, steps=T, precision="float",
                                                              record=True), nl))
    else:
        others = [Column("lava fixed", error=lava_error), Column("lava float", error=lava_error)]
    keep = min([c.n for c in others if c.result is not None] or [nl])
    ref = Column("reference float", Streamed(graph.output.mode, "float", keep), n=n)
    emu = Column("emulator fixed", Streamed(graph.output.mode, "fixed", keep), n=n)
    labels = [] if source.has_labels else None
    job = VerifyJob(graph, qgraph, T, str(data_file))
    with Progress(n, "verify (reference, emulator)") as progress:
        for chunk in compute_chunks(job, source, chunk_ranges(n, chunk_size or auto_chunk_size(source, RECORD_CHUNK)), ray_address):
            if labels is not None:
                labels.append(chunk.labels)
            for col, part in zip((ref, emu), chunk.parts):
                if part.error:
                    raise SnnCompileError(f"{col.label}: {part.error}")
                col.result.add(part.result, chunk.lo)
                col.seconds += part.seconds
            progress.update(chunk.hi - chunk.lo)
    y = None if labels is None else np.concatenate(labels)
    nodes = [(name, qgraph.node(name).kind) for name in qgraph.order()]
    result = compare(ref, emu, others, y, nodes)
    for line in result.summary + [""] + result.layers:
        click.echo(line)
    if result.float_first is not None:
        click.echo(f"{first_disagreement_line(result.float_first)} (beyond {FLOAT_TOLERANCE:g}; "
                   f"informational: the exit status compares lava fixed with the emulator)")
    lava_fixed = others[0]
    if lava_fixed.result is None:
        click.echo(f"verify: Lava fixed point could not be run: {lava_fixed.error}", err=True)
        sys.exit(LAVA_DID_NOT_RUN)
    if not result.exact:
        click.echo(first_disagreement_line(result.first))
        click.echo("verify: emulator and Lava fixed point DISAGREE (see the tables)", err=True)
        sys.exit(1)
    click.echo(f"verify: emulator == Lava fixed point, spike for spike, on {nl} samples "
               f"(every recorded node and the outputs)")
