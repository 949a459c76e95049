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

* ``spikingformer``: the Spikingformer energy script (``zhouchenlin2096/Spikingformer``,
  ``energy_consumption_calculation/flops_counter.py``, ``get_energy_cost``): only
  convolutions and Linear layers (the modules it finds by the names ``conv``/``head``; pools
  and one-to-one convs, the BatchNorms and neuron input gains no synapse absorbed, are not
  counted), ACs ``fr * T * FL`` if the input is exactly binary (spikes), else all
  ``T * FL`` as MACs (an integer spike sum included: ``ops.py`` ``spike_rate``,
  ``Nspks_max = 1``); each spike self-attention ``T*h*N*d*d*(min(fr_k, fr_v) + fr_q)``;
  ``E = 4.6 pJ * MAC + 0.9 pJ * AC`` with the default model.
* ``sdt``: the Spike-driven Transformer's ``SOP = R * T * FLOPs`` for every layer (the rate
  formula of ``paper`` for synapses), masks and token sums as SOPs too
  (``snncompile/energy/operations.py``); the first conv as MACs.

How MatMul / Mul / ReduceSum / Scale are charged: ``snncompile/energy/operations.py``.

``first_layer``: ``per-step`` counts the MACs of real-valued layers at every step (the
Spikformer papers); ``exclude`` leaves them out (SpikingResformer). ``nonbinary``:
``events`` charges an integer input k as k accumulates; ``dense`` charges such a layer
as dense MACs, as SpikingJelly 2.0 and syops do (SpikingJelly issue #348).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from snncompile.energy.counts import OperationCounts, RunCounts, SynapseCounts
from snncompile.energy.operations import OperationCost, operation_cost
from snncompile.errors import SnnCompileError

CONVENTIONS = ("exact", "paper", "spikingformer", "sdt")
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
        first = ("counted at every step" if self.first_layer == "per-step"
                 else "excluded (not counted)")
        if self.name == "spikingformer":
            return (f"spikingformer: the Spikingformer energy script (zhouchenlin2096/Spikingformer, "
                    f"energy_consumption_calculation/flops_counter.py, get_energy_cost, lines 26-61): "
                    f"only Conv2d and Linear layers (its modules named conv/head; pools and one-to-one "
                    f"convs, i.e. BatchNorms and input gains left unfolded, not counted), "
                    f"AC = fr x T x FL when the input is exactly binary, else T x FL MACs (integer spike "
                    f"sums too: ops.py spike_rate, Nspks_max = 1); real-valued first layer {first}; "
                    f"each spike self-attention T x h x N x d x d x (min(fr_k, fr_v) + fr_q) ACs, "
                    f"charged on its outer MatMul (fr: firing rates of q, k, v); masks, reductions, "
                    f"scales, biases, MaxPool, Add and layouts are not counted (the script does not); "
                    f"the script's E = 4.6 pJ x MAC + 0.9 pJ x AC is the horowitz45 model; ANN baseline "
                    f"= one dense pass, every synapse a MAC")
        if self.name == "exact":
            sop = ("event-exact: each input event costs one accumulate per synapse it really has "
                   "(padding/stride/dilation/groups aware, pooling windows included)")
            mac = "real-valued layers: T x (real synapses) MACs"
            products = ("MatMul of two spike trains: one SOP per (1,1) coincidence; spikes x dense: "
                        "nnz(spikes) x the other operand's free dimension (SpikingJelly 2.0 op_counter "
                        "rules); masks (Mul), reductions (ReduceSum) and scales of events: one op per "
                        "event in their own classes (SynOpCounter counts none of them)")
        elif self.name == "paper":
            sop = "rate formula: SOP = fr x T x FL (FL = dense ops per step, padding taps included)"
            mac = "real-valued layers: T x FL MACs"
            products = ("MatMul: SOP = fr x T x FL of its spike operand (coincidences ignored); masks, "
                        "reductions and scales of events: one op per event in their own classes")
        else:
            sop = ("Spike-driven Transformer (Yao et al., NeurIPS 2023, appendix 'Energy Consumption "
                   "Analysis Details'): SOP = R x T x FLOPs for every layer (FL_Conv = k^2 h w c_in c_out, "
                   "FL_MLP = in x out)")
            mac = "the first (real-valued) conv as MACs: T x FL"
            products = ("MatMul: R x T x FLOPs of its spike operand; masks (Mul): R x T x (outputs) of "
                        "the first spike operand and token sums (ReduceSum): one SOP per event, both in "
                        "the SOP total (E_AC x (sum SOP_Conv + sum SOP_SDSA)); scales of events: own class")
        nb = ("a non-binary input value k counts as k accumulates" if self.nonbinary == "events"
              else "a layer with non-binary spike input counts as dense MACs (SpikingJelly/syops)")
        return (f"{self.name}: {sop}; {mac}, {first}; {nb}; {products}; MaxPool, Add, biases and "
                f"layouts (Flatten, Reshape, Permute, Slice: routing) cost no operation; ANN baseline "
                f"= one dense pass, every synapse a MAC")

    def operation_cost(self, o: OperationCounts, counts: RunCounts) -> OperationCost:
        """The cost per sample of one MatMul / Mul / ReduceSum / Scale under this convention."""
        inner = {a.inner: a for a in counts.attentions.values()}
        return operation_cost(o, counts.timesteps, self.name, self.nonbinary, counts.attentions, inner)

    def synops_macs(self, s: SynapseCounts, timesteps: int) -> tuple[float, float]:
        """(SOPs, MACs) per sample of one synapse layer under this convention."""
        if self.name == "spikingformer":
            if s.kind not in ("Conv2d", "Linear") or s.one_to_one:
                return 0.0, 0.0
            if s.input_kind == "binary":
                return s.input_rate * timesteps * s.dense_ops, 0.0
            if s.input_kind == "real" and self.first_layer == "exclude":
                return 0.0, 0.0
            return 0.0, float(timesteps * s.dense_ops)
        as_mac = s.input_kind == "real" or (s.input_kind == "count" and self.nonbinary == "dense")
        if as_mac:
            if s.input_kind == "real" and self.first_layer == "exclude":
                return 0.0, 0.0
            per_step = s.synapses if self.name == "exact" else s.dense_ops
            return 0.0, float(timesteps * per_step)
        if self.name == "exact":
            return s.events_x_fanout, 0.0
        return s.input_rate * timesteps * s.dense_ops, 0.0
