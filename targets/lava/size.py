"""How big a graph's Lava mapping is, and the budget that refuses one too big to build.

Counted per node, as a Loihi-style chip would hold the mapping (``builder.py`` builds exactly
these populations):

* ``units``: neurons a chip would allocate: every Neuron, every output element of a MaxPool,
  of a Scale or ReduceSum accumulator and of a mask (Mul); for a MatMul ``(..., n, k) @
  (..., k, m)`` one product unit per term (``batch * n * k * m``: the spatial layout, each a
  two-input unit) plus one accumulator per result (``batch * n * m``).
* ``synapses``: connections: a Linear's weights, a Conv's (or pool's) taps per output, one per
  input element of a Scale or ReduceSum, two per mask unit, and for a MatMul two per product
  unit (its operands) plus one per product unit into its accumulator.

Layouts (Flatten, Reshape, Permute, Slice) and Adds cost nothing (routing and fan-in). The
simulator itself holds far less (a Product process keeps operands and results, not the
``n * k * m`` terms); the budget is about the mapping a chip would need, and it is checked
before any Lava process is made. Defaults: :data:`DEFAULT_MAX_UNITS` units (about 10 Loihi 2
chips of 1 M neurons) and :data:`DEFAULT_MAX_SYNAPSES` synapses; raise them with
``--lava-max-units`` / ``--lava-max-synapses`` or ``SNNCOMPILE_LAVA_MAX_UNITS`` /
``SNNCOMPILE_LAVA_MAX_SYNAPSES``.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from snncompile.errors import SnnCompileError
from snncompile.ir import nodes as ir

DEFAULT_MAX_UNITS = 10_000_000
DEFAULT_MAX_SYNAPSES = 2_000_000_000


@dataclass
class NodeSize:
    name: str
    kind: str
    units: int = 0
    product_units: int = 0
    synapses: int = 0
    processes: int = 0


@dataclass
class LavaSize:
    nodes: list
    #: Lava processes of a real build (by role), when it was built (``count_processes``).
    processes: Optional[dict] = None
    #: Lava steps of pipeline latency of that build (a sample's last step leaves this much later).
    latency: Optional[int] = None

    @property
    def units(self) -> int:
        return sum(n.units for n in self.nodes)

    @property
    def product_units(self) -> int:
        return sum(n.product_units for n in self.nodes)

    @property
    def synapses(self) -> int:
        return sum(n.synapses for n in self.nodes)

    def as_dict(self) -> dict:
        return dict(units=self.units, product_units=self.product_units, synapses=self.synapses,
                    processes=self.processes, latency_steps=self.latency,
                    nodes=[asdict(n) for n in self.nodes])


def _prod(shape) -> int:
    return int(np.prod(shape)) if len(shape) else 1


def node_size(graph, name: str) -> NodeSize:
    node = graph.node(name)
    out = tuple(graph.shape(name))
    ins = [tuple(graph.shape(s)) for s in graph.inputs_of(name)]
    size = NodeSize(name, node.kind)
    if isinstance(node, ir.Neuron):
        size.units, size.processes = _prod(out), 1
    elif isinstance(node, ir.Linear):
        size.synapses, size.processes = int(np.asarray(node.weight).size), 1
    elif isinstance(node, ir.Conv2d):
        size.synapses = _prod(out) * int(np.prod(np.asarray(node.weight).shape[1:]))
        size.processes = 1
    elif isinstance(node, (ir.SumPool2d, ir.AvgPool2d)):
        size.synapses, size.processes = _prod(out) * int(np.prod(node.kernel_size)), 1
    elif isinstance(node, ir.MaxPool2d):
        size.units, size.processes = _prod(out), 1
    elif isinstance(node, (ir.Scale, ir.ReduceSum)):
        size.units, size.synapses, size.processes = _prod(out), _prod(ins[0]), 1
    elif isinstance(node, ir.Mul):
        size.units, size.synapses = _prod(out), 2 * _prod(out)
        size.processes = 3 if node.lhs == node.rhs == "spike" else 1
    elif isinstance(node, ir.MatMul):
        terms = _prod(out) * ins[0][-1]
        size.product_units, size.units = terms, terms + _prod(out)
        size.synapses, size.processes = 3 * terms, 1
    return size


def graph_size(graph) -> LavaSize:
    return LavaSize([node_size(graph, name) for name in graph.order()])


def _limit(value: Optional[int], env: str, default: int) -> int:
    if value is not None:
        return int(value)
    raw = os.environ.get(env)
    if raw is None or raw == "":
        return default
    try:
        return int(float(raw))
    except ValueError:
        raise SnnCompileError(f"{env}={raw!r} is not a number") from None


@dataclass(frozen=True)
class LavaBudget:
    max_units: int = DEFAULT_MAX_UNITS
    max_synapses: int = DEFAULT_MAX_SYNAPSES

    @classmethod
    def resolve(cls, max_units: Optional[int] = None, max_synapses: Optional[int] = None) -> "LavaBudget":
        """Explicit values, else the environment, else the defaults."""
        return cls(_limit(max_units, "SNNCOMPILE_LAVA_MAX_UNITS", DEFAULT_MAX_UNITS),
                   _limit(max_synapses, "SNNCOMPILE_LAVA_MAX_SYNAPSES", DEFAULT_MAX_SYNAPSES))


def check_budget(graph, budget: Optional[LavaBudget] = None) -> LavaSize:
    """The graph's mapping size, or a SnnCompileError naming what breaks the budget and the
    nodes that cost most."""
    budget = budget or LavaBudget.resolve()
    size = graph_size(graph)
    for what, total, limit, flag in (("units (neurons and product units)", size.units, budget.max_units,
                                      "--lava-max-units"),
                                     ("synapses", size.synapses, budget.max_synapses, "--lava-max-synapses")):
        if total > limit:
            key = "units" if what.startswith("units") else "synapses"
            top = sorted(size.nodes, key=lambda n: -getattr(n, key))[:3]
            worst = ", ".join(f"'{n.name}' ({n.kind}) {getattr(n, key):,}" for n in top if getattr(n, key))
            raise SnnCompileError(
                f"graph '{graph.name}': its Lava mapping needs {total:,} {what}, over the budget of "
                f"{limit:,} (largest: {worst}); a full spatial layout of attention grows as N*N*d per "
                f"head. Raise the budget with {flag} (or SNNCOMPILE_LAVA_MAX_{key.upper()}) if the "
                f"machine can hold it, or run this graph with --backend emulator")
    return size


def count_processes(net) -> dict:
    """Lava processes of a built network by role (the name prefix our builder gives them)."""
    roles: dict = {}
    for proc in net.processes:
        name = proc.name or ""
        role = name.split(":")[0] if ":" in name and name.split(":")[0] in (
            "input", "collect", "route", "balance", "recurrent") else type(proc).__name__
        roles[role] = roles.get(role, 0) + 1
    roles["total"] = len(net.processes)
    return roles
