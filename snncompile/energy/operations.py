"""How the spiking-transformer operations are charged, per convention.

Why a module of its own: these operations (MatMul, Mul, ReduceSum, Scale) are not synapses
with weights, and the conventions disagree most about them. Rules (per sample, ``e`` = the
events of an operand: the sum of its values over time, a spike train's number of spikes):

``exact`` (SpikingJelly 2.0 ``op_counter`` rules for products, so totals equal ``SynOpCounter``):

* MatMul ``(.., n, k) @ (.., k, m)``: two spike trains: one synaptic op per (1,1)
  coincidence (the sum of the product); spikes ``a`` x dense: ``e_a * m``; dense x spikes
  ``b``: ``e_b * n``; a count operand (an integer sum of spikes) x real: ``k`` accumulates
  per value ``k`` (``nonbinary=events``) or dense MACs; real x real: ``T * FL`` MACs.
* Mul (a mask, an AND of spike trains): class ``mask``, one op per event of each non-real
  operand times the number of outputs it reaches (broadcast); real x real: ``T * FL`` MACs.
* ReduceSum: class ``reduce``, one add per input event; of a real input ``T * (n_in - n_out)``.
* Scale: class ``scale``, one op per input event (the scale accumulated per event); of a real
  input one MAC per element and step.

``paper``: as exact, except a MatMul of two spike trains by the rate formula
``fr_a * T * FL = e_a * m`` (it ignores the coincidences).

``sdt`` (Spike-driven Transformer, Yao et al., NeurIPS 2023, appendix "Energy Consumption
Analysis Details": ``SOP = R * T * FLOPs`` for every layer, masks included in the SOP sum
``E_AC * (sum SOP_Conv + sum SOP_SDSA)``): MatMul as ``paper``; a Mul's ``R * T * FLOPs`` with
``R`` the rate of its first spike operand and FLOPs its outputs; a ReduceSum of spikes ``e``
SOPs; Scale as exact. Mask and sum SOPs are AC-priced SOPs, reported in their class.

``spikingformer`` (``zhouchenlin2096/Spikingformer``,
``energy_consumption_calculation/flops_counter.py``, ``get_energy_cost``, lines 44-61):
every spike self-attention (``snncompile.energy.attention``) costs
``T * heads * N * d * d * (min(fr_k, fr_v) + fr_q)`` ACs, on its outer MatMul (the inner
one costs 0); any other MatMul is refused; masks, reductions and scales are not counted
(the script counts only modules named ``conv``/``head`` and the attention).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from snncompile.energy.counts import AttentionCounts, OperationCounts
from snncompile.errors import SnnCompileError

#: The op classes of operations that are not synaptic ops or MACs (each priced by its own constant).
OP_CLASSES = ("mask", "reduce", "scale")
_CLASS_OF = {"Mul": "mask", "ReduceSum": "reduce", "Scale": "scale"}


@dataclass(frozen=True)
class OperationCost:
    """Per sample: AC-priced synaptic ops, MACs, and ops of the kind's own class."""

    synops: float = 0.0
    macs: float = 0.0
    ops: float = 0.0
    op_class: Optional[str] = None


def _outputs_reached(o: OperationCounts, side: int) -> float:
    return float(np.prod(o.out_shape)) / float(np.prod(o.in_shapes[side]))


def _matmul(o: OperationCounts, T: int, name: str, nonbinary: str) -> OperationCost:
    (ka, kb), (ea, eb) = o.input_kinds, o.input_events
    n, m = o.in_shapes[0][-2], o.in_shapes[1][-1]
    if ka == kb == "binary":
        return OperationCost(synops=o.coincidences if name == "exact" else ea * m)
    if ka == "binary":
        return OperationCost(synops=ea * m)
    if kb == "binary":
        return OperationCost(synops=eb * n)
    if "count" in (ka, kb) and nonbinary == "events":
        return OperationCost(synops=ea * m if ka == "count" else eb * n)
    return OperationCost(macs=float(T * o.dense_ops))


def _events_or_dense(o: OperationCounts, T: int, dense: float, op_class: str) -> OperationCost:
    """One op per input event; ``dense`` ops of the class for a real input."""
    (e,) = o.input_events
    return OperationCost(ops=float(dense) if e is None else e, op_class=op_class)


def operation_cost(o: OperationCounts, T: int, name: str, nonbinary: str = "events",
                   attentions: Optional[dict] = None, inner: Optional[dict] = None) -> OperationCost:
    """The cost per sample of operation ``o`` under convention ``name`` (see the module doc).
    ``attentions``/``inner``: outer/inner MatMul name -> AttentionCounts (spikingformer)."""
    if name == "spikingformer":
        return _spikingformer(o, T, attentions or {}, inner or {})
    if o.kind == "MatMul":
        return _matmul(o, T, name, nonbinary)
    if o.kind == "Mul":
        spiking = [i for i, e in enumerate(o.input_events) if e is not None]
        if not spiking:
            return OperationCost(macs=float(T * o.dense_ops))
        if name == "sdt":
            i = spiking[0]
            return OperationCost(synops=o.input_events[i] * _outputs_reached(o, i), op_class="mask")
        return OperationCost(ops=sum(o.input_events[i] * _outputs_reached(o, i) for i in spiking),
                             op_class="mask")
    if o.kind == "ReduceSum":
        cost = _events_or_dense(o, T, T * (np.prod(o.in_shapes[0]) - np.prod(o.out_shape)), "reduce")
        if name == "sdt" and o.input_events[0] is not None:
            return OperationCost(synops=cost.ops, op_class="reduce")
        return cost
    if o.input_events[0] is None:     # Scale of a real value: a multiply-add per element and step
        return OperationCost(macs=float(T * o.dense_ops))
    return _events_or_dense(o, T, 0, "scale")


def _spikingformer(o: OperationCounts, T: int, attentions: dict, inner: dict) -> OperationCost:
    if o.kind != "MatMul":
        return OperationCost(op_class=_CLASS_OF[o.kind])          # not counted by the script
    if o.name in inner:
        return OperationCost()                                   # charged on its outer MatMul
    att: Optional[AttentionCounts] = attentions.get(o.name)
    if att is None:
        raise SnnCompileError(
            f"node '{o.name}' (MatMul of {' x '.join(o.input_kinds)}): the spikingformer convention "
            f"charges only spike self-attention (q @ (k^T @ v) or (q @ k^T) @ v of spike trains); "
            f"use --convention exact for this graph")
    return OperationCost(synops=spikingformer_attention_acs(att, T))


def spikingformer_attention_acs(att: AttentionCounts, T: int) -> float:
    """``SSA_Nac = T * heads * N * d * d * (min(fr_k, fr_v) + fr_q)`` (flops_counter.py, lines 52-60)."""
    return T * att.heads * att.tokens * att.head_dim * att.head_dim * (min(att.fr_k, att.fr_v) + att.fr_q)
