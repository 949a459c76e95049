"""The graph as the chip sees it: populations of neurons on cores, each with the synapse groups
that feed it (a synapse lives on the cores of the neurons it drives).

Rules (each a choice of how the graph's nodes become hardware):

* A ``Neuron`` is a population; the synapses that reach it through ``Add`` of currents are
  its groups (one per synapse).
* A ``MaxPool2d`` of spikes is an OR population (one neuron per window, firing when any
  input spiked: a sum-pool synapse with threshold below one spike).
* A synapse whose output is not a neuron's input (a current feeding another synapse, e.g.
  AvgPool -> Flatten -> Linear) gets a relay population that forwards that current; exact
  only with graded spikes (Loihi 2), the report says so on a binary-spike chip.
* A potential readout (``Output`` fed by a current) is a readout population: compartments that
  integrate and are read by the host, never spike; so is the leaky integrator a membrane
  readout reads.
* ``Flatten`` is free (same C-major order); an ``Add`` of spikes (SEW-ResNet) feeds the next
  synapse from every operand, so that synapse's weights are stored once per operand.
* The ``Input`` is off-chip: its values arrive on input axons and cost no core.

The spiking-transformer kinds, with the counts of the Lava mapping (``targets/lava/size.py``):

* ``Reshape`` / ``Permute`` / ``Slice`` (like ``Flatten``) are axon routing, free: no neurons,
  no synapses. A consumer reads the source population at re-indexed positions (an index map
  of the source, :class:`~snncompile.chip.geometry.Mapped` for a Dense/Conv synapse, the
  index folded into the explicit synapses otherwise); a current through a layout reaches its
  neuron at re-indexed targets the same way.
* ``Mul`` of two spike trains (a mask) is an AND population of ``out`` neurons (threshold
  between 1 and 2, current and voltage forgotten each step), each with 2 input synapses of
  weight 1, one per operand (a size-1 axis broadcast: that operand fans out). A ``Mul`` with
  a graded operand is the same layout as a ``product`` population (2 inputs per unit).
* ``MatMul`` ``(..., n, k) @ (..., k, m)`` is the spatial layout: a population
  ``NAME:products`` of ``batch*n*k*m`` two-input product units (lhs and rhs element, weight 1
  each; spike x spike units are ANDs), then the accumulator population ``NAME`` of
  ``batch*n*m`` compartments, each fed by its ``k`` units (a Dense of ones).
* ``ReduceSum`` is an accumulator population of ``out`` compartments fed by one synapse of
  weight 1 per input element (of spikes a plain Dense of ones).
* ``Scale`` is its own population of ``out`` compartments fed one-to-one (one synapse per
  element, the constant its weight, the bias its bias): the Lava mapping's ``Accumulate``
  count. Not folded into a consumer's weights: a Scale also feeds product units and
  accumulators (ex5's ``attn * 0.125`` feeds ``attn @ v``), where there is no weight to fold
  it into, and one rule keeps the counts equal to ``size.py``'s; folding where it feeds a
  Linear or a neuron would save its ``out`` compartments (the count is an upper bound there).
* Accumulators, scales, graded products and relays send graded values: exact with graded
  spikes (Loihi 2); on a binary-spike chip (Loihi 1) the report notes that they would have
  to rate-code their value (resources counted, accuracy not), as for relays. So does a
  product unit or a ``ReduceSum`` with a graded operand. Noted, not refused: the layout and its
  counts are the same on both chips, only the exactness of the values differs, and a binary
  chip still answers "does it fit, on how many cores" (the question ``map`` is asked).
* The chip adds one synapse per element where a population reads another one-to-one (a
  neuron fed by an accumulator or a scale, through layouts or not): Lava connects those
  ports without a synapse process, so ``size.py`` does not count them; every other unit and
  synapse count equals ``size.py``'s.

What cannot be placed is a named ``SnnCompileError``: a max-pool of a current, of a sum of
spikes or of a graded value (an OR neuron computes none of those maxima), an ``Add`` that
mixes spikes and currents.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from snncompile.chip.geometry import (Conv, Dense, Geometry, Identity, Mapped, gather_sum, pool_geometry,
                                      select)
from snncompile.errors import SnnCompileError
from snncompile.ir import nodes as ir

@dataclass
class Group:
    """One synapse feeding a population: from ``source`` (a population name, or the input)."""

    synapse: str              # the graph node (Linear, Conv2d, pool, or the population for identity)
    kind: str                 # the node's kind
    source: str               # population name, or INPUT
    geometry: Geometry
    #: for a MatMul's product units: which operand this group carries ("lhs" / "rhs")
    operand: str = ""


@dataclass
class Population:
    name: str                 # the graph node it stands for
    role: str                 # neuron | or | relay | readout | and | product | products | accumulator | scale
    shape: tuple
    groups: list[Group] = field(default_factory=list)
    #: graph nodes it reads its spikes from, for reports: "conv1 -> lif1"
    label: str = ""
    #: the graph node it stands for (a MatMul's product units are ``NODE:products``)
    node: str = ""
    #: product units whose operands are both 0/1 spikes of one population each (ANDs)
    binary_operands: bool = False

    @property
    def n(self) -> int:
        return int(np.prod(self.shape))


INPUT = "<input>"

#: roles whose populations send graded values (exact with graded spikes only)
GRADED_ROLES = ("relay", "accumulator", "scale", "product")
#: suffix of a MatMul's product-unit population
PRODUCTS = ":products"


def layout_index(node, in_shape) -> np.ndarray | None:
    """Output flat index -> input flat index of a layout node (None: the same flat order)."""
    if isinstance(node, (ir.Flatten, ir.Reshape)):
        return None
    idx = np.arange(int(np.prod(in_shape))).reshape(in_shape)
    if isinstance(node, ir.Permute):
        return idx.transpose(node.perm).reshape(-1)
    axis = node.axis % len(in_shape)
    return np.take(idx, np.arange(node.start, node.stop), axis=axis).reshape(-1)


def compose(outer: np.ndarray | None, inner: np.ndarray | None) -> np.ndarray | None:
    """``i -> outer[inner[i]]`` (None is the identity)."""
    if inner is None:
        return outer
    if outer is None:
        return inner
    return outer[inner]


def broadcast_index(shape, out_shape) -> np.ndarray:
    """Output flat index -> flat index of an operand of ``shape`` broadcast to ``out_shape``."""
    return np.broadcast_to(np.arange(int(np.prod(shape))).reshape(shape), out_shape).reshape(-1)


@dataclass
class ChipNetwork:
    """Populations in graph order, the input's size, and what a report should add."""

    name: str
    input_shape: tuple
    populations: list[Population]
    #: population name -> True if the host reads its spikes (it sends one output axon each)
    to_host: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def by_name(self) -> dict:
        return {p.name: p for p in self.populations}


def build_network(graph, graded_spikes: bool = True) -> ChipNetwork:
    """Populations and their synapse groups of ``graph`` (see the module docstring)."""
    builder = _Builder(graph, graded_spikes)
    builder.run()
    return ChipNetwork(graph.name, tuple(graph.input.shape), builder.populations, builder.to_host,
                       builder.notes)


class _Builder:
    def __init__(self, graph, graded):
        self.g = graph
        self.graded = graded
        self.populations: list[Population] = []
        self.made: dict[str, Population] = {}
        self.to_host: dict[str, bool] = {}
        self.notes: list[str] = []

    def fail(self, name, why):
        node = self.g.node(name)
        return SnnCompileError(f"node '{name}' ({node.kind}): {why}")

    def run(self):
        for name in self.g.order():
            node = self.g.node(name)
            if isinstance(node, ir.Neuron):
                out = self.g.output
                role = "readout" if out.mode == "membrane" and self.g.inputs_of(out.name) == [name] else "neuron"
                self.population(name, role, self.current_groups(name, self.g.inputs_of(name)))
            elif isinstance(node, ir.Output):
                (src,) = self.g.inputs_of(name)
                if node.mode == "membrane":
                    continue        # its leaky integrator is the readout population
                if node.mode == "potential":
                    self.population(name, "readout", self.current_groups(name, [src]))
                else:
                    for s, _ in self.value_sources(src):
                        if s != INPUT:
                            self.to_host[s] = True
        order = {n: i for i, n in enumerate(self.g.order())}
        self.populations.sort(key=lambda p: (order[p.node], p.role != "products"))

    def population(self, name, role, groups, node=None, shape=None) -> Population:
        if role == "or":
            label = f"MaxPool2d as OR neurons of {', '.join(dict.fromkeys(g.source for g in groups))}"
        else:
            syn = ", ".join(dict.fromkeys(f"{g.synapse} ({g.kind})" for g in groups))
            label = f"{syn} -> {role} {name}"
        node = node or name
        pop = Population(name, role, tuple(shape if shape is not None else self.g.shape(name)), groups,
                         label=label, node=node)
        self.populations.append(pop)
        self.made[name] = pop
        if role in GRADED_ROLES and not self.graded and role != "relay":
            kind = self.g.node(node).kind
            self.notes.append(
                f"'{name}' ({kind}, {role} population) sends graded values; exact with graded spikes only; this "
                f"chip sends binary spikes, so it would have to rate-code its value (resources counted, "
                f"accuracy not)")
        return pop

    def pop_size(self, source) -> int:
        if source == INPUT:
            return int(np.prod(self.g.input.shape))
        return self.made[source].n

    # -- what feeds a population ------------------------------------------------------
    def current_groups(self, target, inputs, tmap=None) -> list[Group]:
        """Synapse groups reaching ``target`` through Add of currents and layouts; ``tmap``:
        target flat index -> flat index of the value being followed (None: the same)."""
        groups = []
        n_target = int(np.prod(self.g.shape(target))) if tmap is None else int(tmap.size)
        for src in inputs:
            node = self.g.node(src)
            if isinstance(node, ir.SYNAPSES):
                groups += self.synapse_groups(src, tmap)
            elif isinstance(node, ir.LAYOUTS) and self.is_current(src):
                (inner,) = self.g.inputs_of(src)
                lmap = layout_index(node, tuple(self.g.shape(inner)))
                groups += self.current_groups(target, [inner], compose(lmap, tmap))
            elif isinstance(node, ir.Add) and self.is_current(src):
                ins = self.g.inputs_of(src)
                if any(self.is_spiking(i) for i in ins):
                    raise self.fail(target, f"its input '{src}' ({node.kind}) mixes spikes and currents; "
                                            f"the chip mapper cannot place it")
                groups += self.current_groups(target, ins, tmap)
            else:
                # a population fed straight by another population's values: one weight per target
                for s, sidx in self.value_sources(src):
                    index = compose(sidx, tmap)
                    geom = (Identity(n_target) if index is None and self.pop_size(s) == n_target
                            else select(np.arange(n_target) if index is None else index, self.pop_size(s)))
                    groups.append(Group(target, "Identity", s, geom))
        return groups

    def synapse_groups(self, name, tmap=None) -> list[Group]:
        node = self.g.node(name)
        (src,) = self.g.inputs_of(name)
        in_shape, out_shape = tuple(self.g.shape(src)), tuple(self.g.shape(name))
        if isinstance(node, ir.Linear):
            geom = Dense(int(np.prod(in_shape)), int(np.prod(out_shape)))
        elif isinstance(node, ir.Conv2d):
            geom = Conv(in_shape, out_shape, tuple(node.weight.shape[2:]), node.stride, node.padding,
                        node.dilation, node.groups)
        else:
            geom = pool_geometry(in_shape, out_shape, node.kernel_size, node.stride, node.padding)
        groups = []
        for s, sidx in self.value_sources(src):
            g = geom if sidx is None and tmap is None else Mapped(geom, self.pop_size(s), sidx, tmap)
            groups.append(Group(name, node.kind, s, g))
        return groups

    def is_current(self, name) -> bool:
        """The value of ``name`` is a synapse's output current (not yet any population's)."""
        node = self.g.node(name)
        if isinstance(node, ir.SYNAPSES):
            return True
        if isinstance(node, (ir.Add,) + ir.LAYOUTS):
            return any(self.is_current(i) for i in self.g.inputs_of(name))
        return False

    def is_spiking(self, name) -> bool:
        node = self.g.node(name)
        if isinstance(node, (ir.Input, ir.Neuron)):
            return True
        if isinstance(node, (ir.MaxPool2d, ir.Add) + ir.LAYOUTS):
            return all(self.is_spiking(i) for i in self.g.inputs_of(name))
        if isinstance(node, ir.Mul):
            return self.is_and(name)
        return False

    def is_binary(self, name) -> bool:
        """0/1 spikes of one population (not a sum of several, not a graded value)."""
        node = self.g.node(name)
        if isinstance(node, (ir.Input, ir.Neuron)):
            return True
        if isinstance(node, (ir.MaxPool2d,) + ir.LAYOUTS):
            return self.is_binary(self.g.inputs_of(name)[0])
        if isinstance(node, ir.Mul):
            return self.is_and(name)
        return False

    def is_and(self, name) -> bool:
        node = self.g.node(name)
        return node.lhs == node.rhs == "spike" and all(self.is_binary(i) for i in self.g.inputs_of(name))

    def value_sources(self, name) -> list[tuple[str, np.ndarray | None]]:
        """(population or INPUT, index) pairs whose values arrive as the value of node ``name``:
        element i of ``name`` is element ``index[i]`` of that population (None: the same)."""
        node = self.g.node(name)
        if isinstance(node, ir.Input):
            return [(INPUT, None)]
        if isinstance(node, ir.Neuron):
            return [(name, None)]
        if isinstance(node, ir.LAYOUTS):
            (src,) = self.g.inputs_of(name)
            lmap = layout_index(node, tuple(self.g.shape(src)))
            return [(s, compose(idx, lmap)) for s, idx in self.value_sources(src)]
        if isinstance(node, ir.Add):
            return [pair for i in self.g.inputs_of(name) for pair in self.value_sources(i)]
        if name not in self.made:
            self.make(name, node)
        return [(name, None)]

    def make(self, name, node):
        """The population(s) of a node that computes a value read by other populations."""
        if isinstance(node, ir.MaxPool2d):
            (src,) = self.g.inputs_of(name)
            if self.is_current(src):
                raise self.fail(name, "max-pools a current; on the chip a max-pool is an OR of spikes, "
                                      "so it needs spikes as input (a compartment sums its synaptic inputs: "
                                      "no core layout computes their maximum)")
            if self.g.node(src).kind == "Add":
                raise self.fail(name, "max-pools a sum of spikes (several spikes per position); "
                                      "an OR neuron cannot compute that max")
            if not self.is_binary(src):
                raise self.fail(name, f"max-pools the graded values of '{src}' ({self.g.node(src).kind}); "
                                      f"an OR neuron cannot compute that max")
            geom = pool_geometry(self.g.shape(src), self.g.shape(name), node.kernel_size, node.stride,
                                 node.padding)
            groups = [Group(name, node.kind, s, geom if idx is None else Mapped(geom, self.pop_size(s), idx))
                      for s, idx in self.value_sources(src)]
            self.population(name, "or", groups)
        elif isinstance(node, ir.SYNAPSES):
            self.population(name, "relay", self.synapse_groups(name))
            if not self.graded:
                self.notes.append(
                    f"'{name}' ({node.kind}) feeds another synapse with a current: it is placed as a relay "
                    f"population, which is exact with graded spikes only; this chip sends binary spikes, "
                    f"so the relay would have to rate-code its value (resources counted, accuracy not)")
        elif isinstance(node, ir.Scale):
            self.population(name, "scale", self.current_groups(name, self.g.inputs_of(name)))
        elif isinstance(node, ir.ReduceSum):
            (src,) = self.g.inputs_of(name)
            in_shape = tuple(self.g.shape(src))
            axis = node.axis % len(in_shape)
            kept = in_shape[:axis] + (1,) + in_shape[axis + 1:]
            out_of_in = broadcast_index(kept, in_shape)
            n_out = int(np.prod(self.g.shape(name)))
            base = gather_sum(out_of_in, n_out)
            groups = [Group(name, node.kind, s, base.through(idx, self.pop_size(s)))
                      for s, idx in self.value_sources(src)]
            self.graded_note(name, node, [src])
            self.population(name, "accumulator", groups)
        elif isinstance(node, ir.Mul):
            out_shape = tuple(self.g.shape(name))
            groups = []
            for src in self.g.inputs_of(name):
                base = select(broadcast_index(tuple(self.g.shape(src)), out_shape), 0)
                groups += [Group(name, node.kind, s, base.through(idx, self.pop_size(s)))
                           for s, idx in self.value_sources(src)]
            self.population(name, "and" if self.is_and(name) else "product", groups)
        elif isinstance(node, ir.MatMul):
            lhs, rhs = self.g.inputs_of(name)
            a, b = tuple(self.g.shape(lhs)), tuple(self.g.shape(rhs))
            units = a + (b[-1],)                                   # (..., n, k, m)
            groups = []
            for side, src, idx_of_unit in (("lhs", lhs, broadcast_index(a + (1,), units)),
                                           ("rhs", rhs, broadcast_index(b[:-2] + (1,) + b[-2:], units))):
                base = select(idx_of_unit, 0)
                groups += [Group(name, node.kind, s, base.through(idx, self.pop_size(s)), operand=side)
                           for s, idx in self.value_sources(src)]
            self.graded_note(name, node, [lhs, rhs])
            prods = self.population(name + PRODUCTS, "products", groups, node=name, shape=units)
            prods.binary_operands = node.lhs == node.rhs == "spike" and self.is_binary(lhs) and self.is_binary(rhs)
            out = tuple(self.g.shape(name))
            acc_of_unit = broadcast_index(out[:-1] + (1,) + out[-1:], units)
            self.population(name, "accumulator", [Group(name, "MatMul", prods.name,
                                                        gather_sum(acc_of_unit, int(np.prod(out))))])
        else:
            raise self.fail(name, "this node kind cannot be placed on chip cores")

    def graded_note(self, name, node, operands):
        graded = [o for o in operands if not self.is_binary(o)]
        if graded and not self.graded:
            self.notes.append(
                f"'{name}' ({node.kind}) reads graded values of {', '.join(repr(o) for o in graded)}: its "
                f"synapses need graded spikes (Loihi 2); on this binary-spike chip they would have to be "
                f"rate-coded (resources counted, accuracy not)")
