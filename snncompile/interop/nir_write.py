"""IR -> NIR: the inverse of the import mapping in ``nir_neurons``, at a chosen ``dt``.

Neurons are written snnTorch-style (``r = tau/dt`` so the input gain is one per step):
``du = 1`` -> LIF (or IF when ``dv = 0``), ``du < 1`` -> CubaLIF with ``w_in = tau_syn/dt``;
a leaky integrator (never fires, read by a membrane Output) -> LI or CubaLI.
An IR Add is not a NIR node: NIR sums every edge into a node, so each Add operand is wired
to the Add's consumers. What NIR cannot say (subtractive or no reset, ``>=`` comparison,
initial state) is written as the nearest NIR and reported in a warning naming the node.
"""
from __future__ import annotations

import nir
import numpy as np

from snncompile.errors import SnnCompileError
from snncompile.ir import nodes as ir
from snncompile.ir.graph import Graph
from snncompile.ir.kinds import StageTable


def to_nir(graph: Graph, dt: float) -> tuple[nir.NIRGraph, list[str]]:
    graph.validate()
    warnings: list[str] = []
    fixed = [n.name for n in graph if getattr(n, "fixed", None) is not None]
    if fixed:
        warnings.append(f"graph '{graph.name}' is quantized: NIR carries its float parameters only "
                        f"(the integers of {len(fixed)} node(s) are not written)")
    nodes: dict[str, nir.NIRNode] = {}
    for node in graph:
        nir_node = TABLE.lookup(node)(graph, node, dt, warnings)
        if nir_node is not None:
            nodes[node.name] = nir_node
    edges = []
    for name in nodes:
        for src in graph.inputs_of(name):
            edges += [(s, name) for s in _sources(graph, src)]
    metadata = {"dt": np.float64(dt)}
    if graph.timesteps:
        metadata["timesteps"] = np.int64(graph.timesteps)
    model = nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata, type_check=False)
    return model, warnings


def _sources(graph: Graph, name: str) -> list[str]:
    """The NIR nodes whose summed outputs stand for IR node ``name`` (Adds dissolved)."""
    if isinstance(graph.node(name), ir.Add):
        return [s for src in graph.inputs_of(name) for s in _sources(graph, src)]
    return [name]


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


#: The NIR writer: kind -> ``fn(graph, node, dt, warnings)``, the NIR node (None: not a NIR node).
TABLE = StageTable("nir.write", says="NIR")
TABLE.refuse(ir.MaxPool2d, "has no MaxPool2d node; cannot write this graph as NIR")
for _kind, _what in ((ir.MatMul, "a product of two activations (attention's q @ k^T)"),
                     (ir.Mul, "an elementwise product of two activations (a spike mask)"),
                     (ir.ReduceSum, "a sum over an axis of a per-sample tensor"),
                     (ir.Reshape, "a reshape of a per-sample tensor other than a flatten"),
                     (ir.Permute, "a permutation of per-sample axes (token and head layouts)"),
                     (ir.Slice, "a slice of a per-sample tensor"),
                     (ir.Scale, "an elementwise scale outside a synapse")):
    TABLE.refuse(_kind, f"has no node for {_what}; cannot write this graph as NIR")


@TABLE.implements(ir.Add)
def _add(graph: Graph, node: ir.Add, dt: float, warnings: list[str]) -> None:
    return None     # NIR sums every edge into a node: the operands are wired to the consumers


@TABLE.implements(ir.Input)
def _input(graph: Graph, node: ir.Input, dt: float, warnings: list[str]) -> nir.NIRNode:
    return nir.Input(input_type=np.array(node.shape))


@TABLE.implements(ir.Output)
def _output(graph: Graph, node: ir.Output, dt: float, warnings: list[str]) -> nir.NIRNode:
    return nir.Output(output_type=np.array(graph.shape(graph.inputs_of(node.name)[0])))


@TABLE.implements(ir.Linear)
def _linear(graph: Graph, node: ir.Linear, dt: float, warnings: list[str]) -> nir.NIRNode:
    if node.bias is None:
        return nir.Linear(weight=_f64(node.weight))
    return nir.Affine(weight=_f64(node.weight), bias=_f64(node.bias))


@TABLE.implements(ir.Conv2d)
def _conv2d(graph: Graph, node: ir.Conv2d, dt: float, warnings: list[str]) -> nir.NIRNode:
    in_shape = graph.shape(graph.inputs_of(node.name)[0])
    bias = node.bias if node.bias is not None else np.zeros(node.weight.shape[0])
    return nir.Conv2d(input_shape=tuple(in_shape[1:]), weight=_f64(node.weight), stride=node.stride,
                      padding=node.padding, dilation=node.dilation, groups=node.groups,
                      bias=_f64(bias))


def _pool(cls):
    def write(graph: Graph, node, dt: float, warnings: list[str]) -> nir.NIRNode:
        return cls(kernel_size=np.array(node.kernel_size), stride=np.array(node.stride),
                   padding=np.array(node.padding))
    return write


TABLE.add(_pool(nir.SumPool2d), ir.SumPool2d)
TABLE.add(_pool(nir.AvgPool2d), ir.AvgPool2d)


@TABLE.implements(ir.Flatten)
def _flatten(graph: Graph, node: ir.Flatten, dt: float, warnings: list[str]) -> nir.NIRNode:
    in_shape = graph.shape(graph.inputs_of(node.name)[0])
    return nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=0, end_dim=-1)


@TABLE.implements(ir.Neuron)
def _write_neuron(graph: Graph, node: ir.Neuron, dt: float, warnings: list[str]) -> nir.NIRNode:
    if node.never_fires:
        return _leaky_integrator(graph, node, dt)
    return _neuron(node, dt, warnings)


def _leaky_integrator(graph: Graph, node: ir.Neuron, dt: float) -> nir.NIRNode:
    """A neuron that never fires, read by a membrane Output: NIR's LI (``du = 1``) or CubaLI,
    whose output is the membrane. (Its spikes, all zero, cannot feed anything in NIR.)"""
    where = f"node '{node.name}' (Neuron)"
    out = graph.output
    if graph.consumers(node.name) != [out.name] or out.mode != "membrane":
        raise SnnCompileError(f"{where}: a neuron that never fires is written as NIR LI, whose output is "
                              f"its membrane; here its (zero) spikes feed {graph.consumers(node.name)}")
    full = lambda key: np.array(node.param(key), dtype=np.float64)  # noqa: E731
    du, dv, bias = full("du"), full("dv"), full("bias")
    if np.any(du <= 0) or np.any(du > 1) or np.any(dv <= 0) or np.any(dv > 1):
        raise SnnCompileError(f"{where}: a leaky integrator needs du in (0, 1] and dv in (0, 1] to be "
                              f"written as NIR time constants")
    tau_mem = dt / dv
    v_leak = bias / dv
    if not np.allclose(node.param("v_init"), v_leak) or np.any(node.param("u_init")):
        raise SnnCompileError(f"{where}: NIR LI starts at v = v_leak and a zero current; this one starts "
                              f"elsewhere (u_init, v_init)")
    if np.all(du == 1):
        return nir.LI(tau=tau_mem, r=tau_mem / dt, v_leak=v_leak)
    tau_syn = dt / du
    return nir.CubaLI(tau_syn=tau_syn, tau_mem=tau_mem, r=tau_mem / dt, v_leak=v_leak, w_in=tau_syn / dt)


def _neuron(node: ir.Neuron, dt: float, warnings: list[str]) -> nir.NIRNode:
    full = lambda key: np.array(node.param(key), dtype=np.float64)  # noqa: E731
    du, dv, thr, bias = full("du"), full("dv"), full("threshold"), full("bias")
    reset = full("reset_value")
    where = f"node '{node.name}' (Neuron)"
    if node.reset_mode == "subtract":
        warnings.append(f"{where}: subtractive reset (v -= {_show(node.reset_amount)}) has no NIR "
                        f"field; written as reset to v_reset = 0, spikes will differ")
        reset = np.zeros_like(thr)
    elif node.reset_mode == "none":
        warnings.append(f"{where}: 'no reset' has no NIR field; written as reset to v_reset = 0")
        reset = np.zeros_like(thr)
    if node.compare == ">=":
        warnings.append(f"{where}: fires on v >= threshold; NIR fires on v > threshold only "
                        f"(spikes differ where v equals the threshold exactly)")
    if np.any(du <= 0) or np.any(du > 1) or np.any(dv < 0) or np.any(dv > 1):
        raise SnnCompileError(f"{where}: decays du, dv must lie in (0, 1] and [0, 1] to be "
                              f"written as NIR time constants")
    leak_free = np.all(dv == 0)
    if np.any(dv == 0) and not leak_free:
        raise SnnCompileError(f"{where}: some neurons leak (dv > 0) and some do not; NIR has no "
                              f"single node for this population")
    if np.all(du == 1) and leak_free:
        if np.any(bias):
            raise SnnCompileError(f"{where}: a non-leaky neuron with a bias has no NIR node "
                                  f"(IF has no bias); fold the bias into the synapse before it")
        _initial_state(node, np.zeros_like(thr), reset, where, warnings)
        return nir.IF(r=np.full(thr.shape, 1.0 / dt), v_threshold=thr, v_reset=reset)
    if leak_free:
        raise SnnCompileError(f"{where}: a non-leaky membrane (dv = 0) with a synaptic current "
                              f"(du < 1) has no NIR node")
    tau_mem = dt / dv
    v_leak = bias / dv
    _initial_state(node, v_leak, reset, where, warnings)
    if np.all(du == 1):
        return nir.LIF(tau=tau_mem, r=tau_mem / dt, v_leak=v_leak, v_threshold=thr, v_reset=reset)
    tau_syn = dt / du
    return nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=tau_mem / dt, v_leak=v_leak,
                       v_threshold=thr, v_reset=reset, w_in=tau_syn / dt)


def _initial_state(node: ir.Neuron, v_start, reset, where: str, warnings: list[str]) -> None:
    """NIR has no initial state; readers start v at v_leak (LIF) or v_reset (IF), u at 0."""
    if np.any(node.param("u_init")) or not np.allclose(node.param("v_init"), v_start):
        warnings.append(f"{where}: initial state (u_init, v_init) is not representable in NIR; "
                        f"readers start v at {'v_leak' if np.any(node.dv) else 'v_reset'} and u at 0")


def _show(a) -> str:
    a = np.asarray(a)
    return f"{float(a.reshape(-1)[0]):g}" if a.size == 1 or np.all(a == a.reshape(-1)[0]) else "per-neuron values"
