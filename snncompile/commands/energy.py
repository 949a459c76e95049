"""``snncompile energy GRAPH.onnx --input DATA.npz [-o REPORT.json|.md|.html]``: SynOps,
MACs, firing rates and energy per sample, under a stated convention and energy model.

DATA is run in chunks of ``--chunk-size`` samples, each reduced at once to exact integer
sums (``energy.counts.CountRecord``): memory does not grow with N and the report is the
same for every chunk size."""
from __future__ import annotations

import time
from pathlib import Path

import click

from snncompile.cluster import compute_chunks, ray_option
from snncompile.commands._common import atomic_output, reports_errors
from snncompile.commands.run import chunk_size_option
from snncompile.energy.conventions import CONVENTIONS, FIRST_LAYER, NONBINARY
from snncompile.energy.models import MODELS
from snncompile.errors import SnnCompileError
from snncompile.targets.base import BACKENDS, PRECISIONS

FORMATS = {".json": "to_json", ".md": "to_markdown", ".html": "to_html"}


def counted_run(graph, x, T, backend, precision):
    """Run with ``record=True``; if the backend records no per-layer counts (Lava may give only
    the output), count on the emulator (fixed) or the reference (float) and say so."""
    from snncompile.energy.counts import data_kind, needed_counts
    from snncompile.targets import run

    result = run(graph, x, steps=T, backend=backend, precision=precision, record=True)
    missing = [n for n in needed_counts(graph, data_kind(x)) if n not in result.layer_counts]
    if not missing:
        return result, backend, []
    fallback = "emulator" if precision == "fixed" else "reference"
    if fallback == backend:
        raise SnnCompileError(f"the {backend} backend recorded no counts for node '{missing[0]}'")
    counted = run(graph, x, steps=T, backend=fallback, precision=precision, record=True)
    note = (f"the {backend} backend recorded no per-layer counts (e.g. node '{missing[0]}'); "
            f"counts are from the {fallback} backend at {precision} precision on the same inputs")
    return counted, fallback, [note]


@click.command("energy")
@click.argument("graph_file", metavar="GRAPH.onnx", type=click.Path(dir_okay=False))
@click.option("--input", "-i", "data_file", metavar="DATA.npz", required=True, type=click.Path(),
              help="x: (N, T, *input_shape) or static (N, *input_shape); the data set to count on "
                   "(also an .npy, or a folder of .npz shards).")
@click.option("--backend", type=click.Choice(BACKENDS), default="reference", show_default=True)
@click.option("--precision", type=click.Choice(PRECISIONS), default="float", show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Time steps (default: those of x, or the graph's for a static x).")
@click.option("--convention", type=click.Choice(CONVENTIONS), default="exact", show_default=True,
              help="exact: event-exact SOPs (SpikingJelly 2.0 SynOpCounter rules for products); "
                   "paper: SOP = fr x T x FL (Spikformer family); spikingformer: the Spikingformer "
                   "energy script (conv/linear layers, AC only for exactly binary input, attention "
                   "T*h*N*d*d*(min(fr_k,fr_v)+fr_q)); sdt: Spike-driven Transformer, SOP = R x T x FLOPs "
                   "for every layer, masks included.")
@click.option("--first-layer", type=click.Choice(FIRST_LAYER), default="per-step", show_default=True,
              help="MACs of real-valued (first) layers: counted every step, or excluded.")
@click.option("--nonbinary", type=click.Choice(NONBINARY), default="events", show_default=True,
              help="Non-binary spike input (SEW ADD): k accumulates per value k, or dense MACs.")
@click.option("--energy-model", default="horowitz45", show_default=True,
              help=f"One of {', '.join(MODELS)} (the base of --constants).")
@click.option("--constants", metavar="FILE", type=click.Path(dir_okay=False), default=None,
              help="JSON/TOML file of per-op constants in pJ overriding --energy-model.")
@click.option("-o", "--output", "out_file", metavar="REPORT", type=click.Path(dir_okay=False), default=None,
              help="Write the report: .json, .md or .html (self-contained, with plots).")
@click.option("--chip", metavar="loihi1|loihi1-sanafe|loihi2|FILE", default=None,
              help="Also map the graph on this chip and cost it from the same counts (cores, time, energy).")
@chunk_size_option
@ray_option
@reports_errors
def command(graph_file, data_file, backend, precision, steps, convention, first_layer, nonbinary,
            energy_model, constants, out_file, chip, chunk_size, ray_address):
    """Count SynOps/MACs per layer on DATA.npz and estimate energy per sample, with an ANN baseline."""
    from snncompile.commands.run import data_steps, fixed_point_graph
    from snncompile.energy import Convention, resolve_model
    from snncompile.energy.analysis import report_from_record
    from snncompile.energy.counts import CountRecord
    from snncompile.ir.onnx_format import load_onnx
    from snncompile.streaming import (RECORD_CHUNK, EnergyJob, Progress, auto_chunk_size, chunk_ranges,
                                      open_inputs)

    if out_file is not None and Path(out_file).suffix.lower() not in FORMATS:
        raise SnnCompileError(f"report file '{out_file}': unknown format; use .json, .md or .html")
    conv = Convention(convention, first_layer, nonbinary)
    model = resolve_model(energy_model, constants)   # bad names/files fail before the run
    if chip is not None:
        from snncompile.chip.profile import load_profile
        chip = load_profile(chip)                     # a bad chip profile fails before the run too
    graph = load_onnx(graph_file)
    source = open_inputs(data_file)
    T = data_steps(source, graph, steps, data_file)
    notes = []
    if precision == "fixed":
        graph, quantized_now = fixed_point_graph(graph)
        if quantized_now:
            notes.append("the graph was not quantized: quantized with default settings, no calibration")
    start = time.perf_counter()
    cmap = None
    if chip is not None:
        from snncompile.chip.mapper import map_graph
        cmap = map_graph(graph, chip)                 # a graph that does not fit fails before the run
    job = EnergyJob(graph, backend, precision, T, str(data_file), chip=cmap)
    record = first = activity = None
    counted = 0
    with Progress(len(source), f"energy ({backend})", announce=backend == "lava") as progress:
        for chunk in compute_chunks(job, source, chunk_ranges(len(source), chunk_size or auto_chunk_size(source, RECORD_CHUNK)), ray_address):
            first = first or chunk
            n = chunk.hi - chunk.lo
            # one running sum, not a record per chunk
            record = chunk.record if record is None else CountRecord.merge([record, chunk.record])
            if cmap is not None:
                from snncompile.chip.cost import merge_activities
                activity = (chunk.chip_activity if activity is None
                            else merge_activities([(activity, counted), (chunk.chip_activity, n)]))
            counted += n
            progress.update(n)
    counted_on, more = first.counted_on, first.notes
    report = report_from_record(graph, record, conv, model, backend=backend, precision=precision,
                                counts_from=counted_on, notes=notes + more)
    if cmap is not None:
        from snncompile.chip.report import section_from_activity
        report.chip = section_from_activity(cmap, activity, [first.chip_note])
    wall = time.perf_counter() - start
    if out_file is not None:
        text = getattr(report, FORMATS[Path(out_file).suffix.lower()])()
        with atomic_output(out_file) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
    click.echo(report.summary_table())
    if report.chip is not None:
        from snncompile.chip.report import summary_rows as chip_rows
        click.echo("")
        for k, v in chip_rows(report.chip):
            click.echo(f"{k:<24}{v}")
    for note in notes + more:
        click.echo(f"note: {note}")
    click.echo(f"counted {len(source)} sample(s) x {T} steps on {counted_on} ({precision}) in {wall:.2f} s"
               + (f" -> {out_file}" if out_file else ""))
