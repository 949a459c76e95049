"""Per-layer operation counts of one recorded run: events, synaptic ops, MACs, neuron updates.

Why a module of its own: the counts are the facts of a run (what spiked where); the
convention (exact vs the papers' rate formula) and the energy model (pJ per op) are
choices made on top of them. Keeping the facts separate lets one run be reported under
any convention and any energy model.

Counts come from ``RunResult.layer_counts`` (node -> (N, *shape), sum over time of the
node's output) and ``layer_steps`` (node -> (N, T)) of a run with ``record=True``.

Value kinds decide how a synapse's input is charged:

* ``binary`` spikes (a Neuron, or a MaxPool/Flatten of spikes, or binary input data):
  each spike costs one accumulate per synapse it really has (its *fan-out*).
* ``count`` (non-negative integers, e.g. an Add of spikes as in SEW-ResNet, a SumPool of
  spikes): a value k costs k accumulates (``nonbinary="events"``), or the whole layer is
  charged as dense MACs the way SpikingJelly and syops do (``nonbinary="dense"``).
* ``real`` (currents, analogue input data, an AvgPool output): dense MACs.

Fan-out at input position p = the number of (output channel, output position) pairs that
read p, given padding, stride, dilation and groups: at a padded border an input has fewer
synapses than ``k_h*k_w*C_out/groups``. It is computed once per layer as the gradient of
``sum(conv(x, ones))`` with respect to ``x``, not per sample.

The spiking-transformer operations (MatMul, Mul, ReduceSum, Scale) are counted from the
same recorded sums (:class:`OperationCounts`): the events of each operand are its producer's
recorded sum (a spike train's sum is its number of nonzeros), and for a MatMul of two spike
trains the product's own recorded sum *is* the number of (1,1) coincidences, one synaptic
op each (SpikingJelly 2.0 ``SynOpCounter``'s rule). How they are charged is
``snncompile/energy/operations.py``. Layouts (Flatten, Reshape, Permute, Slice) are routing.

Known limit: a recurrent (delayed) edge *into a synapse* is charged for the spikes of
every step, including the last step whose spikes would only be delivered after the run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from snncompile.errors import SnnCompileError
from snncompile.ir import nodes as ir

VALUE_KINDS = ("binary", "count", "real")
SYNAPSE_KINDS = (ir.Linear, ir.Conv2d, ir.SumPool2d, ir.AvgPool2d)
OPERATION_KINDS = (ir.MatMul, ir.Mul, ir.ReduceSum, ir.Scale)


@dataclass
class SynapseCounts:
    """One synapse layer (Linear, Conv2d, SumPool2d, AvgPool2d) of a run, per sample."""

    name: str
    kind: str
    source: str                 # the node whose output feeds this synapse
    input_kind: str             # binary | count | real
    n_inputs: int               # elements of the input, per sample and step
    n_outputs: int
    n_weights: int              # stored weights (0 for pooling)
    dense_ops: int              # FL: dense MACs of one step (padding taps included)
    synapses: int               # real synapses: sum over inputs of their fan-out
    input_events: float         # sum of input values over time, per sample (spike inputs)
    events_x_fanout: float      # sum_p count(p) * fanout(p), per sample (event-exact SOPs)
    input_rate: Optional[float]  # input events / (n_inputs * T); None for real input

    @property
    def one_to_one(self) -> bool:
        """One synapse per input and per output: an elementwise scale (a depthwise 1x1 conv
        standing for a BatchNorm or a neuron's input gain that no synapse could absorb)."""
        return self.synapses == self.n_inputs == self.n_outputs


@dataclass
class OperationCounts:
    """One operation between activations (MatMul, Mul, ReduceSum, Scale) of a run, per sample."""

    name: str
    kind: str
    sources: list[str]            # the operand nodes, in order (a @ b: [a, b])
    input_kinds: list[str]        # binary | count | real, per operand
    in_shapes: list[tuple]
    out_shape: tuple
    input_events: list[Optional[float]]  # per operand: sum of its values over time (None: real)
    coincidences: Optional[float]  # MatMul of two spike trains: sum of the product = (1,1) pairs
    dense_ops: int                # FL: multiply-accumulates (adds for ReduceSum) of one dense step


@dataclass
class AttentionCounts:
    """A spike self-attention: two MatMuls of the spike trains q, k, v, either
    ``q @ (k^T @ v)`` or ``(q @ k^T) @ v`` (scales and layouts between them), with the
    firing rates of q, k, v as the Spikingformer energy script reads them."""

    outer: str
    inner: str
    heads: int                    # product of q's leading axes
    tokens: int                   # N
    head_dim: int                 # d
    fr_q: float
    fr_k: float
    fr_v: float


@dataclass
class NeuronCounts:
    """One Neuron population of a run, per sample."""

    name: str
    n_neurons: int
    leaky: bool                  # du < 1 or dv > 0 somewhere: a leak multiply per update
    spikes: float                # per sample, over all steps
    firing_rate: float           # spikes / (n_neurons * T)
    rate_per_step: list[float]   # (T,) mean firing rate of each step


@dataclass
class RunCounts:
    """Everything counted from one run of one graph."""

    graph: str
    n_samples: int
    timesteps: int
    input_kind: str
    synapses: list[SynapseCounts] = field(default_factory=list)
    neurons: list[NeuronCounts] = field(default_factory=list)
    operations: list[OperationCounts] = field(default_factory=list)
    #: the spike attentions among the MatMuls, by outer MatMul
    attentions: dict[str, AttentionCounts] = field(default_factory=dict)
    #: names of the synapse, neuron and operation layers, in graph order
    order: list[str] = field(default_factory=list)


# -- value kinds ---------------------------------------------------------------------
def data_kind(x) -> str:
    """``binary`` if every value is 0 or 1, ``count`` for non-negative integers, else ``real``."""
    x = np.asarray(x)
    if x.size == 0:
        return "binary"
    if np.all((x == 0) | (x == 1)):
        return "binary"
    if np.all(x >= 0) and np.all(np.mod(x, 1) == 0):
        return "count"
    return "real"


def value_kinds(graph, input_kind: str) -> dict[str, str]:
    """The value kind of every node's output, propagated in topological order."""
    if input_kind not in VALUE_KINDS:
        raise SnnCompileError(f"unknown input kind '{input_kind}'; choose one of {', '.join(VALUE_KINDS)}")
    kinds: dict[str, str] = {}
    order = graph.order()
    # A recurrent (delayed) input is not known on the first pass: a second pass settles it.
    for name in order + (order if graph.is_recurrent else []):
        node = graph.node(name)
        ins = [kinds.get(i, "binary") for i in graph.inputs_of(name)]
        worst = "real" if "real" in ins else "count" if "count" in ins else "binary"
        if isinstance(node, ir.Input):
            kinds[name] = input_kind
        elif isinstance(node, ir.Neuron):
            kinds[name] = "binary"
        elif isinstance(node, ir.LAYOUTS + (ir.MaxPool2d, ir.Output, ir.Mul)):
            kinds[name] = worst           # a Mul of two spike trains is an AND: spikes
        elif isinstance(node, (ir.Add, ir.SumPool2d, ir.MatMul, ir.ReduceSum)):
            kinds[name] = "real" if worst == "real" else "count"
        else:  # Linear, Conv2d, AvgPool2d, Scale: currents
            kinds[name] = "real"
    return kinds


# -- fan-out -------------------------------------------------------------------------
def _sum_synapse(node, x: torch.Tensor) -> torch.Tensor:
    """The synapse applied to ``x`` with every weight 1 (only the wiring matters)."""
    if isinstance(node, ir.Linear):
        return F.linear(x, torch.ones(node.weight.shape, dtype=x.dtype))
    if isinstance(node, ir.Conv2d):
        return F.conv2d(x, torch.ones(node.weight.shape, dtype=x.dtype), None,
                        node.stride, node.padding, node.dilation, node.groups)
    return F.avg_pool2d(x, node.kernel_size, node.stride, node.padding,
                        count_include_pad=True, divisor_override=1)


def fanout_map(node, in_shape) -> np.ndarray:
    """(*in_shape) number of synapses leaving each input element (padding-, stride-aware)."""
    x = torch.zeros((1,) + tuple(in_shape), dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(_sum_synapse(node, x).sum(), x)
    return grad[0].numpy()


def operation_dense_ops(node, in_shapes, out_shape) -> int:
    """FL of one operation: a MatMul ``(.., n, k) @ (.., k, m)`` is ``prod(out) * k`` MACs; a
    Mul one multiply per output; a ReduceSum one add per input; a Scale one per input."""
    if isinstance(node, ir.MatMul):
        return int(np.prod(out_shape)) * int(in_shapes[0][-1])
    if isinstance(node, ir.Mul):
        return int(np.prod(out_shape))
    return int(np.prod(in_shapes[0]))


def dense_ops(node, in_shape, out_shape) -> int:
    """FL of the papers: MACs of one dense step, padding taps included."""
    if isinstance(node, ir.Linear):
        return int(node.weight.shape[0] * node.weight.shape[1])
    if isinstance(node, ir.Conv2d):
        _, ci_g, kh, kw = node.weight.shape
        return int(np.prod(out_shape) * ci_g * kh * kw)
    return int(np.prod(out_shape) * node.kernel_size[0] * node.kernel_size[1])


# -- counting ------------------------------------------------------------------------
def _recorded(result, name: str) -> np.ndarray:
    if name not in result.layer_counts:
        raise SnnCompileError(
            f"the {result.backend} run did not record per-layer counts for node '{name}'; "
            f"run with record=True on a backend that records them (reference or emulator)")
    return np.asarray(result.layer_counts[name], dtype=np.float64)


def needed_counts(graph, input_kind: str = "real") -> list[str]:
    """Nodes whose recorded counts :func:`count_run` reads when given the input data ``x``
    (spike sources of synapses other than the Input, and neurons)."""
    kinds = value_kinds(graph, input_kind)
    needed = []
    for name in graph.order():
        node = graph.node(name)
        if isinstance(node, SYNAPSE_KINDS + OPERATION_KINDS):
            srcs = graph.inputs_of(name)
            needed += [s for s in srcs if kinds[s] != "real" and not isinstance(graph.node(s), ir.Input)]
            if isinstance(node, ir.MatMul) and all(kinds[s] == "binary" for s in srcs):
                needed.append(name)       # its own sum: the coincidence count
        elif isinstance(node, ir.Neuron):
            needed.append(name)
    return list(dict.fromkeys(needed))


def check_data(graph, result, x) -> None:
    """``x`` must be the data the run was made on: same samples, the graph's input shape."""
    shape = tuple(graph.input.shape)
    x = np.asarray(x)
    if not (x.shape[1:] == shape or (x.ndim == len(shape) + 2 and x.shape[2:] == shape
                                      and x.shape[1] >= result.outputs.shape[1])):
        raise SnnCompileError(f"input of shape {x.shape} does not fit graph '{graph.name}' "
                              f"with input shape {shape} and a run of {result.outputs.shape[1]} steps")
    if len(x) != result.outputs.shape[0]:
        raise SnnCompileError(f"the input data has {len(x)} samples, the run has "
                              f"{result.outputs.shape[0]}: pass the data the run was made on")


def input_counts(graph, result, x=None) -> np.ndarray:
    """(N, *input_shape) sum over time of the input values, in the data's own units.

    From ``x`` when given (a static input counts T times). Otherwise from the recorded
    Input node, divided by its fixed-point scale for a fixed-precision run (a fixed run
    records the integer-encoded input, ``round(x * scale)``)."""
    name = graph.input.name
    T = int(result.outputs.shape[1])
    if x is not None:
        x = np.asarray(x, dtype=np.float64)
        check_data(graph, result, x)
        return x * T if x.shape[1:] == tuple(graph.input.shape) else x[:, :T].sum(axis=1)
    total = _recorded(result, name)
    if result.precision == "fixed":
        fixed = getattr(graph.input, "fixed", None)
        if fixed is None:
            raise SnnCompileError(
                f"a fixed-precision run records the integer-encoded input, and graph '{graph.name}' "
                f"is not quantized, so its input scale is unknown: pass the input data x, or the "
                f"quantized graph that was run")
        total = total / fixed.scale
    return total


_KIND_ORDER = {kind: i for i, kind in enumerate(VALUE_KINDS)}


def exact_sum(a) -> np.ndarray:
    """Sum over axis 0, as int64 when it is a whole number everywhere (spike counts, integer
    data: int64 sums are exact and associative, so chunk sums merge exactly), else float64.
    Summed in float64 first: exact for whole numbers up to 2**53, and 4x cheaper than
    testing every value."""
    a = np.asarray(a)
    if a.dtype.kind in "biu":
        return a.sum(axis=0, dtype=np.int64)
    total = a.sum(axis=0, dtype=np.float64)
    return total.astype(np.int64) if np.all(total == np.round(total)) else total


@dataclass
class CountRecord:
    """What :func:`count_run` needs of a run, summed over its samples: mergeable across chunks.

    ``sums``: node -> (*node_shape) sum over samples and time of the node's recorded output;
    ``step_sums``: node -> (T,) sum over samples and elements per step; ``input_sum``:
    (*input_shape) sum over samples and time of the input data (None for real-valued data,
    whose events are never counted). All int64 where the values are whole numbers, which
    they are for everything counted (spikes, spike sums, binary/count data).
    """

    graph: str
    n_samples: int
    timesteps: int
    input_kind: str
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    step_sums: dict[str, np.ndarray] = field(default_factory=dict)
    input_sum: Optional[np.ndarray] = None
    precision: str = "float"
    backend: str = ""

    @staticmethod
    def merge(records) -> "CountRecord":
        """The record of all the records' samples together (exact sums; any order)."""
        records = list(records)
        first = records[0]
        for r in records[1:]:
            if (r.graph, r.timesteps, set(r.sums), set(r.step_sums)) != \
                    (first.graph, first.timesteps, set(first.sums), set(first.step_sums)):
                raise SnnCompileError("count records of different graphs, steps or recorded nodes "
                                      "cannot be merged")
        kind = max((r.input_kind for r in records), key=_KIND_ORDER.__getitem__)
        inputs = [r.input_sum for r in records]
        return CountRecord(
            graph=first.graph, n_samples=sum(r.n_samples for r in records), timesteps=first.timesteps,
            input_kind=kind, sums={k: sum(r.sums[k] for r in records) for k in first.sums},
            step_sums={k: sum(r.step_sums[k] for r in records) for k in first.step_sums},
            input_sum=None if kind == "real" or any(i is None for i in inputs) else sum(inputs),
            precision=first.precision, backend=first.backend)


def record_run(graph, result, x=None, input_kind: Optional[str] = None) -> CountRecord:
    """The CountRecord of ``result`` (a run of ``graph`` with ``record=True``) on data ``x``.

    ``input_kind`` defaults to the kind of ``x`` (``data_kind``); without ``x``, the input
    events are read from the recorded Input node (see :func:`input_counts`)."""
    T = int(result.outputs.shape[1])
    N = int(result.outputs.shape[0])
    if N == 0 or T == 0:
        raise SnnCompileError("the run has no samples or no time steps: nothing to count")
    if x is not None:
        check_data(graph, result, x)
    if input_kind is None:
        input_kind = data_kind(x) if x is not None else "real"
    # the nodes count_record may read under any input kind (binary input needs the most)
    wanted = set(needed_counts(graph, "binary"))
    sums = {name: exact_sum(_recorded(result, name)) for name in result.layer_counts if name in wanted}
    steps = {name: exact_sum(np.asarray(s)) for name, s in result.layer_steps.items()
             if name in wanted and np.asarray(s).shape == (N, T)}
    input_sum = None
    if input_kind != "real" and any(isinstance(graph.node(s), ir.Input) for s in _counted_sources(graph)):
        input_sum = exact_sum(input_counts(graph, result, x))
    return CountRecord(graph=graph.name, n_samples=N, timesteps=T, input_kind=input_kind, sums=sums,
                       step_sums=steps, input_sum=input_sum, precision=result.precision,
                       backend=result.backend)


def _counted_sources(graph) -> list[str]:
    """The inputs of every synapse and operation: the nodes whose events are counted."""
    return [s for n in graph.order() if isinstance(graph.node(n), SYNAPSE_KINDS + OPERATION_KINDS)
            for s in graph.inputs_of(n)]


def count_run(graph, result, input_kind: str = "real", x=None) -> RunCounts:
    """Count events, synapses and neuron activity of ``result`` (a run of ``graph``, record=True).

    ``x``: the run's input data; when given, the input events are read from it (exact in
    any precision) instead of the recorded Input node."""
    return count_record(graph, record_run(graph, result, x, input_kind))


def count_record(graph, record: CountRecord) -> RunCounts:
    """The RunCounts of a (merged) CountRecord: per-sample means of the exact sums."""
    from snncompile.energy.attention import find_attentions
    from snncompile.ir.stages.energy import TABLE

    kinds = value_kinds(graph, record.input_kind)
    N, T = record.n_samples, record.timesteps
    counts = RunCounts(graph=graph.name, n_samples=N, timesteps=T, input_kind=record.input_kind)
    for name in graph.order():
        node = graph.node(name)
        role = TABLE.lookup(node)        # a kind without an entry fails here, by name
        if role == "synapse":
            counts.synapses.append(_count_synapse(graph, node, kinds, record))
        elif role == "neuron":
            counts.neurons.append(_count_neuron(graph, node, record))
        elif role == "operation":
            counts.operations.append(_count_operation(graph, node, kinds, record))
        else:
            continue
        counts.order.append(name)
    counts.attentions = find_attentions(graph, counts.operations, T)
    return counts


def _summed(record: CountRecord, name: str) -> np.ndarray:
    if name not in record.sums:
        raise SnnCompileError(
            f"the {record.backend} run did not record per-layer counts for node '{name}'; "
            f"run with record=True on a backend that records them (reference or emulator)")
    return record.sums[name]


def _per_position(graph, src: str, record: CountRecord) -> np.ndarray:
    """(*shape of src) per-sample sum over time of the values of ``src`` (a non-real source)."""
    total = record.input_sum if isinstance(graph.node(src), ir.Input) else _summed(record, src)
    if total.shape != tuple(graph.shape(src)):
        raise SnnCompileError(f"recorded counts of node '{src}' have shape {total.shape}, "
                              f"the graph says {tuple(graph.shape(src))}")
    return total.astype(np.float64) / record.n_samples


def _count_operation(graph, node, kinds, record: CountRecord) -> OperationCounts:
    srcs = graph.inputs_of(node.name)
    in_shapes = [tuple(graph.shape(s)) for s in srcs]
    out_shape = tuple(graph.shape(node.name))
    in_kinds = [kinds[s] for s in srcs]
    events = [None if k == "real" else float(_per_position(graph, s, record).sum())
              for s, k in zip(srcs, in_kinds)]
    coincidences = None
    if isinstance(node, ir.MatMul) and in_kinds == ["binary", "binary"]:
        coincidences = float(_summed(record, node.name).sum()) / record.n_samples
    return OperationCounts(name=node.name, kind=node.kind, sources=list(srcs), input_kinds=in_kinds,
                           in_shapes=in_shapes, out_shape=out_shape, input_events=events,
                           coincidences=coincidences,
                           dense_ops=operation_dense_ops(node, in_shapes, out_shape))


def _count_synapse(graph, node, kinds, record: CountRecord) -> SynapseCounts:
    (src,) = graph.inputs_of(node.name)
    in_shape, out_shape = graph.shape(src), graph.shape(node.name)
    fan = fanout_map(node, in_shape)
    n_in = int(np.prod(in_shape))
    kind = kinds[src]
    T = record.timesteps
    if kind == "real":
        events = ex_fan = 0.0
        rate = None
    else:
        per_pos = _per_position(graph, src, record)
        events = float(per_pos.sum())
        ex_fan = float((per_pos * fan).sum())
        rate = events / (n_in * T)
    weight = getattr(node, "weight", None)
    return SynapseCounts(
        name=node.name, kind=node.kind, source=src, input_kind=kind, n_inputs=n_in,
        n_outputs=int(np.prod(out_shape)), n_weights=0 if weight is None else int(weight.size),
        dense_ops=dense_ops(node, in_shape, out_shape), synapses=int(round(fan.sum())),
        input_events=events, events_x_fanout=ex_fan, input_rate=rate)


def _count_neuron(graph, node, record: CountRecord) -> NeuronCounts:
    total = _summed(record, node.name)
    N, T = record.n_samples, record.timesteps
    n = int(np.prod(graph.shape(node.name)))
    spikes = float(total.sum()) / N
    steps = record.step_sums.get(node.name)
    per_step = [] if steps is None else (steps.astype(np.float64) / (N * n)).tolist()
    leaky = bool(np.any(np.asarray(node.du) < 1) or np.any(np.asarray(node.dv) > 0))
    return NeuronCounts(name=node.name, n_neurons=n, leaky=leaky, spikes=spikes,
                        firing_rate=spikes / (n * T), rate_per_step=per_step)
