"""Counting conventions: how run counts become SOPs and MACs per layer.

Why explicit: papers count differently (energy.md) and their numbers cannot be compared
unless the convention is stated. Every report carries :meth:`Convention.describe`.

* ``exact``: a synapse layer fed by spikes costs ``sum_p count(p) * fanout(p)``
  accumulates (event-exact: padding, stride, dilation, groups and pooling windows
  respected). A layer fed by real values costs ``T * synapses`` MACs (every real synapse,
  every step).
* ``paper``: the rate formula of Spikformer / Spikingformer / Spike-driven Transformer:
  ``SOP = fr * T * FL`` with ``fr`` the input firing rate and ``FL`` the dense operation
  count (padding taps included); a real-valued layer costs ``T * FL`` MACs.

``first_layer``: ``per-step`` counts the MACs of real-valued layers at every step (the
Spikformer papers); ``exclude`` leaves them out (SpikingResformer). ``nonbinary``:
``events`` charges an integer input k as k accumulates; ``dense`` charges such a layer
as dense MACs, as SpikingJelly 2.0 and syops do (SpikingJelly issue #348).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from snncompile.energy.counts import SynapseCounts
from snncompile.errors import SnnCompileError

CONVENTIONS = ("exact", "paper")
FIRST_LAYER = ("per-step", "exclude")
NONBINARY = ("events", "dense")


@dataclass(frozen=True)
class Convention:
    name: str = "exact"
    first_layer: str = "per-step"
    nonbinary: str = "events"

    def __post_init__(self):
        for value, allowed, what in ((self.name, CONVENTIONS, "convention"),
                                     (self.first_layer, FIRST_LAYER, "first-layer option"),
                                     (self.nonbinary, NONBINARY, "non-binary option")):
            if value not in allowed:
                raise SnnCompileError(f"unknown {what} '{value}'; choose one of {', '.join(allowed)}")

    def as_dict(self) -> dict:
        return {**asdict(self), "description": self.describe()}

    def describe(self) -> str:
        if self.name == "exact":
            sop = ("event-exact: each input event costs one accumulate per synapse it really has "
                   "(padding/stride/dilation/groups aware, pooling windows included)")
            mac = "real-valued layers: T x (real synapses) MACs"
        else:
            sop = "rate formula: SOP = fr x T x FL (FL = dense ops per step, padding taps included)"
            mac = "real-valued layers: T x FL MACs"
        first = ("counted at every step" if self.first_layer == "per-step"
                 else "excluded (not counted)")
        nb = ("a non-binary input value k counts as k accumulates" if self.nonbinary == "events"
              else "a layer with non-binary spike input counts as dense MACs (SpikingJelly/syops)")
        return (f"{self.name}: {sop}; {mac}, {first}; {nb}; MaxPool, Flatten, Add and biases "
                f"cost no synaptic operation; ANN baseline = one dense pass, every synapse a MAC")

    def synops_macs(self, s: SynapseCounts, timesteps: int) -> tuple[float, float]:
        """(SOPs, MACs) per sample of one synapse layer under this convention."""
        as_mac = s.input_kind == "real" or (s.input_kind == "count" and self.nonbinary == "dense")
        if as_mac:
            if s.input_kind == "real" and self.first_layer == "exclude":
                return 0.0, 0.0
            per_step = s.synapses if self.name == "exact" else s.dense_ops
            return 0.0, float(timesteps * per_step)
        if self.name == "exact":
            return s.events_x_fanout, 0.0
        return s.input_rate * timesteps * s.dense_ops, 0.0
