"""``analyze``: a recorded run + a convention + an energy model -> an EnergyReport."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np

from snncompile.energy.conventions import Convention
from snncompile.energy.counts import (CountRecord, NeuronCounts, OperationCounts, RunCounts, SynapseCounts,
                                      count_record, count_run, data_kind)
from snncompile.energy.models import OP_PARTS, EnergyModel, get_model, load_constants
from snncompile.energy.operations import OP_CLASSES, OperationCost
from snncompile.energy.report import EnergyReport, LayerReport

_PARTS = ("synops", "macs", "neurons", "spikes", "memory") + tuple(OP_PARTS.values())


def resolve_model(energy_model: Union[str, EnergyModel] = "horowitz45",
                  constants: Union[None, str, Path] = None) -> EnergyModel:
    """A preset by name, an EnergyModel as is, or a constants file on top of the named preset."""
    if constants is not None:
        base = energy_model if isinstance(energy_model, str) else None
        return load_constants(constants, base=base)
    return energy_model if isinstance(energy_model, EnergyModel) else get_model(energy_model)


def analyze(graph, result, convention: Union[str, Convention] = "exact",
            energy_model: Union[str, EnergyModel] = "horowitz45", *, x=None,
            input_kind: Optional[str] = None, first_layer: str = "per-step",
            nonbinary: str = "events", constants=None, notes=(), backend: Optional[str] = None,
            counts_from: Optional[str] = None) -> EnergyReport:
    """Energy and SynOp report of ``result`` (a run of ``graph`` with ``record=True``).

    The kind of the input data decides whether the first layer is charged as SOPs
    (spikes) or MACs (real values): give the input ``x`` (its kind is read from the data)
    or ``input_kind`` (binary | count | real); with neither, the input is taken as real
    and the report says so. ``backend`` / ``counts_from`` label the report when the counts
    come from another backend than the one asked for (default: ``result.backend``).
    """
    conv = convention if isinstance(convention, Convention) else Convention(convention, first_layer, nonbinary)
    model = resolve_model(energy_model, constants)
    notes = list(notes)
    if input_kind is None:
        if x is not None:
            input_kind = data_kind(x)
        else:
            input_kind = "real"
            notes.append("input kind not given: the input was taken as real-valued (first layer as MACs)")
    counts = count_run(graph, result, input_kind, x=x)
    return build_report(counts, conv, model, backend=backend or result.backend, precision=result.precision,
                        counts_from=counts_from or result.backend, notes=notes)


def report_from_record(graph, record: CountRecord, convention: Union[str, Convention] = "exact",
                       energy_model: Union[str, EnergyModel] = "horowitz45", *, backend: Optional[str] = None,
                       precision: Optional[str] = None, counts_from: Optional[str] = None,
                       notes=()) -> EnergyReport:
    """The report of a (merged) CountRecord: what a chunked or sharded ``energy`` ends with;
    the same report as :func:`analyze` on the whole run at once."""
    conv = convention if isinstance(convention, Convention) else Convention(convention)
    model = resolve_model(energy_model)
    return build_report(count_record(graph, record), conv, model, backend=backend or record.backend,
                        precision=precision or record.precision, counts_from=counts_from or record.backend,
                        notes=notes)


def build_report(counts: RunCounts, conv: Convention, model: EnergyModel, backend: str = "",
                 precision: str = "", counts_from: Optional[str] = None, notes=()) -> EnergyReport:
    T = counts.timesteps
    rows = {s.name: _synapse_row(s, conv, model, T) for s in counts.synapses}
    rows.update({n.name: _neuron_row(n, model, T) for n in counts.neurons})
    rows.update({o.name: _operation_row(o, conv.operation_cost(o, counts), model) for o in counts.operations})
    layers = [rows[name] for name in counts.order]
    summary = _summary(counts, layers, conv, model, backend, precision, counts_from or backend)
    notes = list(notes) + list(model.notes) + _operation_notes(counts, conv, model)
    if any(s.input_kind == "count" for s in counts.synapses):
        notes.append("some layers receive non-binary spike values (e.g. an Add of spikes): "
                     + ("each value k counted as k accumulates" if conv.nonbinary == "events"
                        else "those layers counted as dense MACs"))
    return EnergyReport(graph=counts.graph, summary=summary, convention=conv.as_dict(),
                        energy_model=model.as_dict(), layers=layers, notes=notes)


def _synapse_row(s: SynapseCounts, conv: Convention, model: EnergyModel, T: int) -> LayerReport:
    synops, macs = conv.synops_macs(s, T)
    energy = model.synapse_energy_j(s, synops, macs)
    per_pass = s.synapses if conv.name == "exact" else s.dense_ops
    is_pool = s.n_weights == 0
    ann_macs, ann_acs = (0.0, float(per_pass)) if is_pool else (float(per_pass), 0.0)
    return LayerReport(
        name=s.name, kind=s.kind, role="synapse", source=s.source, input_kind=s.input_kind,
        input_events_per_sample=None if s.input_kind == "real" else s.input_events,
        synops_per_sample=synops, macs_per_sample=macs, dense_ops_per_step=s.dense_ops,
        synapses=s.synapses, ann_macs_per_sample=ann_macs, ann_acs_per_sample=ann_acs,
        firing_rate=s.input_rate, energy_breakdown_j=_full(energy),
        energy_per_sample_j=sum(energy.values()),
        ann_energy_per_sample_j=model.ann_energy_j(s, ann_macs, ann_acs))


def _operation_row(o: OperationCounts, cost: OperationCost, model: EnergyModel) -> LayerReport:
    energy = model.operation_energy_j(cost.synops, cost.macs, cost.ops, cost.op_class)
    events = [e for e in o.input_events if e is not None]
    # the ANN baseline: one dense pass (a sum adds n_in - n_out values)
    ann_macs, ann_acs = ((0.0, float(o.dense_ops - np.prod(o.out_shape))) if o.kind == "ReduceSum"
                         else (float(o.dense_ops), 0.0))
    return LayerReport(
        name=o.name, kind=o.kind, role="operation", source=", ".join(o.sources),
        input_kind=" x ".join(o.input_kinds), input_events_per_sample=sum(events) if events else None,
        synops_per_sample=cost.synops, macs_per_sample=cost.macs, dense_ops_per_step=o.dense_ops,
        ops_per_sample=cost.ops, op_class=cost.op_class, ann_macs_per_sample=ann_macs,
        ann_acs_per_sample=ann_acs,
        energy_breakdown_j=_full(energy), energy_per_sample_j=sum(energy.values()),
        ann_energy_per_sample_j=model.energy_j(ann_macs, ann_acs))


def _operation_notes(counts: RunCounts, conv: Convention, model: EnergyModel) -> list[str]:
    if not counts.operations:
        return []
    notes = ["layouts (Flatten, Reshape, Permute, Slice) are routing: they cost no operation"]
    if model.memory is not None:
        notes.append("the memory model prices synapses and neurons only: the memory traffic of MatMul, Mul, "
                     "ReduceSum and Scale is not modelled")
    if conv.name == "spikingformer":
        notes.append("masks (Mul), reductions (ReduceSum) and scales are not counted by the Spikingformer "
                     "script's convention; --convention exact counts them in their own classes")
    else:
        notes.append("masks (Mul), reductions (ReduceSum) and event-driven scales are real work, reported in "
                     "their own op classes (mask, reduce, scale) with their own constants (mask_pj, "
                     "reduce_pj, scale_pj); SpikingJelly's SynOpCounter counts none of them (it leaves "
                     "aten.mul and sums out): compare its total with spike_synops_per_sample")
    if any("count" in o.input_kinds for o in counts.operations) or \
            any(s.input_kind == "count" for s in counts.synapses):
        notes.append("layers fed integer spike sums (count_synops_per_sample) are counted 0 by SynOpCounter "
                     "(it sees a non-binary input), so spike_synops_per_sample leaves them out")
    return notes


def _neuron_row(n: NeuronCounts, model: EnergyModel, T: int) -> LayerReport:
    energy = model.neuron_energy_j(n, T)
    return LayerReport(
        name=n.name, kind="Neuron", role="neuron", neuron_updates_per_sample=float(n.n_neurons * T),
        spikes_per_sample=n.spikes, firing_rate=n.firing_rate, firing_rate_per_step=n.rate_per_step,
        energy_breakdown_j=_full(energy), energy_per_sample_j=sum(energy.values()))


def _full(parts: dict) -> dict:
    return {k: float(parts.get(k, 0.0)) for k in _PARTS}


def _summary(counts, layers, conv, model, backend, precision, counts_from) -> dict:
    total = lambda key: float(sum(getattr(layer, key) for layer in layers))  # noqa: E731
    breakdown = {k: float(sum(layer.energy_breakdown_j[k] for layer in layers)) for k in _PARTS}
    energy = sum(breakdown.values())
    ann = total("ann_energy_per_sample_j")
    neurons = sum(n.n_neurons for n in counts.neurons)
    synapses = sum(s.synapses for s in counts.synapses)
    spikes = total("spikes_per_sample")
    synops = total("synops_per_sample")
    driven = lambda layer, kind: kind in (layer.input_kind or "").split(" x ")  # noqa: E731
    spike_synops = float(sum(la.synops_per_sample for la in layers if driven(la, "binary")))
    count_synops = float(sum(la.synops_per_sample for la in layers
                             if driven(la, "count") and not driven(la, "binary")))
    by_class = {c: float(sum(la.ops_per_sample for la in layers if la.op_class == c)) for c in OP_CLASSES}
    return {
        "graph": counts.graph, "n_samples": counts.n_samples, "timesteps": counts.timesteps,
        "backend": backend, "precision": precision, "counts_from": counts_from,
        "input_kind": counts.input_kind, "convention": conv.name, "energy_model": model.name,
        "synops_per_sample": synops, "macs_per_sample": total("macs_per_sample"),
        "spike_synops_per_sample": spike_synops, "count_synops_per_sample": count_synops,
        "ops_per_sample_by_class": by_class,
        "neuron_updates_per_sample": total("neuron_updates_per_sample"),
        "spikes_per_sample": spikes,
        "mean_firing_rate": spikes / (neurons * counts.timesteps) if neurons else None,
        "synops_per_synapse": synops / synapses if synapses else None,
        "energy_per_sample_j": energy, "energy_breakdown_j": breakdown,
        "ann_macs_per_sample": total("ann_macs_per_sample"),
        "ann_acs_per_sample": total("ann_acs_per_sample"),
        "ann_energy_per_sample_j": ann,
        "snn_ann_energy_ratio": energy / ann if ann else None,
    }
