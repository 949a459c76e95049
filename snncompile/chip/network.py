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
* The spiking-transformer kinds (products of activations, sums over an axis, layouts, constant
  scales) have no core layout yet: a graph holding one is refused before anything is counted,
  naming its first product of activations, else its first other such node (``NO_CORE_LAYOUT``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from snncompile.chip.geometry import Conv, Dense, Geometry, Identity, pool_geometry
from snncompile.errors import SnnCompileError
from snncompile.ir import nodes as ir

@dataclass
class Group:
    """One synapse feeding a population: from ``source`` (a population name, or the input)."""

    synapse: str              # the graph node (Linear, Conv2d, pool, or the population for identity)
    kind: str                 # the node's kind
    source: str               # population name, or INPUT
    geometry: Geometry


@dataclass
class Population:
    name: str                 # the graph node it stands for
    role: str                 # neuron | or | relay | readout
    shape: tuple
    groups: list[Group] = field(default_factory=list)
    #: graph nodes it reads its spikes from, for reports: "conv1 -> lif1"
    label: str = ""

    @property
    def n(self) -> int:
        return int(np.prod(self.shape))


INPUT = "<input>"

#: Kinds the mapper cannot place yet (issue 11), with what they are in a refusal's words.
NO_CORE_LAYOUT = {
    ir.MatMul: "products of activations", ir.Mul: "products of activations",
    ir.ReduceSum: "sums of activations over an axis",
    ir.Reshape: "re-indexed activations (Reshape, Permute, Slice)",
    ir.Permute: "re-indexed activations (Reshape, Permute, Slice)",
    ir.Slice: "re-indexed activations (Reshape, Permute, Slice)",
    ir.Scale: "constant scales of activations (Scale)",
}


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
        blocked = [name for name in self.g.order() if type(self.g.node(name)) in NO_CORE_LAYOUT]
        if blocked:  # the first product is named before any layout (the layouts alone may come first)
            rank = list(dict.fromkeys(NO_CORE_LAYOUT.values()))
            name = min(blocked, key=lambda n: rank.index(NO_CORE_LAYOUT[type(self.g.node(n))]))
            raise self.fail(name, f"the chip mapper has no core layout for {NO_CORE_LAYOUT[type(self.g.node(name))]} "
                                  f"yet (a spiking-transformer layer); this graph cannot be mapped onto chip cores")
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
                    for s in self.spike_sources(src):
                        if s != INPUT:
                            self.to_host[s] = True
        order = {n: i for i, n in enumerate(self.g.order())}
        self.populations.sort(key=lambda p: order[p.name])

    def population(self, name, role, groups) -> Population:
        if role == "or":
            label = f"MaxPool2d as OR neurons of {', '.join(dict.fromkeys(g.source for g in groups))}"
        else:
            syn = ", ".join(dict.fromkeys(f"{g.synapse} ({g.kind})" for g in groups))
            label = f"{syn} -> {role} {name}"
        pop = Population(name, role, tuple(self.g.shape(name)), groups, label=label)
        self.populations.append(pop)
        self.made[name] = pop
        return pop

    # -- what feeds a population ------------------------------------------------------
    def current_groups(self, target, inputs) -> list[Group]:
        """Synapse groups reaching ``target`` through Add of currents."""
        groups = []
        for src in inputs:
            node = self.g.node(src)
            if isinstance(node, ir.SYNAPSES):
                groups += self.synapse_groups(src)
            elif isinstance(node, ir.Add) and all(not self.is_spiking(i) for i in self.g.inputs_of(src)):
                groups += self.current_groups(target, self.g.inputs_of(src))
            elif self.is_spiking(src):
                # a population fed straight by spikes: one weight per target
                for s in self.spike_sources(src):
                    groups.append(Group(target, "Identity", s, Identity(int(np.prod(self.g.shape(target))))))
            else:
                self.spike_sources(src)     # raises the node's own reason (e.g. a max-pool of a current)
                raise self.fail(target, f"its input '{src}' ({node.kind}) mixes spikes and currents; "
                                        f"the chip mapper cannot place it")
        return groups

    def synapse_groups(self, name) -> list[Group]:
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
        return [Group(name, node.kind, s, geom) for s in self.spike_sources(src)]

    def is_spiking(self, name) -> bool:
        node = self.g.node(name)
        if isinstance(node, (ir.Input, ir.Neuron)):
            return True
        if isinstance(node, (ir.Flatten, ir.MaxPool2d, ir.Add)):
            return all(self.is_spiking(i) for i in self.g.inputs_of(name))
        return False

    def spike_sources(self, name) -> list[str]:
        """Populations (or INPUT) whose spikes arrive as the value of node ``name``."""
        node = self.g.node(name)
        if isinstance(node, ir.Input):
            return [INPUT]
        if isinstance(node, ir.Neuron):
            return [name]
        if isinstance(node, ir.Flatten):
            return self.spike_sources(self.g.inputs_of(name)[0])
        if isinstance(node, ir.Add):
            return [s for i in self.g.inputs_of(name) for s in self.spike_sources(i)]
        if isinstance(node, ir.MaxPool2d):
            if name not in self.made:
                (src,) = self.g.inputs_of(name)
                if not self.is_spiking(src):
                    raise self.fail(name, "max-pools a current; on the chip a max-pool is an OR of spikes, "
                                          "so it needs spikes as input")
                if self.g.node(src).kind == "Add":
                    raise self.fail(name, "max-pools a sum of spikes (several spikes per position); "
                                          "an OR neuron cannot compute that max")
                geom = pool_geometry(self.g.shape(src), self.g.shape(name), node.kernel_size, node.stride,
                                     node.padding)
                self.population(name, "or", [Group(name, node.kind, s, geom) for s in self.spike_sources(src)])
            return [name]
        if isinstance(node, ir.SYNAPSES):
            if name not in self.made:
                self.population(name, "relay", self.synapse_groups(name))
                if not self.graded:
                    self.notes.append(
                        f"'{name}' ({node.kind}) feeds another synapse with a current: it is placed as a relay "
                        f"population, which is exact with graded spikes only; this chip sends binary spikes, "
                        f"so the relay would have to rate-code its value (resources counted, accuracy not)")
            return [name]
        raise self.fail(name, "this node kind cannot be placed on chip cores")
