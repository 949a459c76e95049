"""Narrow integer fields of the Lava mapping: what each Lava model holds in fewer bits
than the IR allows, and what we do about it (issue 13: Lava's int8 ``groups`` silently
zeroed every pooling layer of 128+ channels).

Audited against lava-nc 0.10.0 (``lava/proc/{conv,dense,sparse,lif}/models.py``) and our
own models (``procs/models.py``, ``procs/conv.py``). Each row is either made wide, proven
harmless, or refused by :func:`check_graph` / :func:`check_conv` with a message that
names the node, the field, the allowed range and the value:

=========================================  =====================  =====================================
field (Lava model)                         Lava's type            here
=========================================  =====================  =====================================
Conv groups, kernel_size, stride,          int8 (wraps at 128)    int32 in our Conv models (procs/conv.py);
padding, dilation                                                 tests up to 1024 groups, 128+ strides
Conv num_message_bits, weight_exp,         int8                   int32 (weight_exp, num_weight_bits are
num_weight_bits                                                   ignored by Lava's Conv: ir.fixed)
Conv partial sums                          float32 (exact<2**24)  float64; refused when
                                                                  max|m| * max L1(weights) >= 2**53
Conv / pool weights (fixed)                int32                  refused outside int32
Conv output a_buf (fixed)                  int32, wrap24          as ir.fixed specifies (wrap24)
Dense weights (fixed)                      int32, clipped to 8 b  as ir.fixed specifies (emulated)
Dense weight_exp (proc_params)             Python int, a shift    refused outside [-8, 7] (Loihi)
Dense num_weight_bits (proc_params)        Python int             refused outside [1, 8]
num_message_bits (Input, every synapse)    int / int8             refused outside [0, 24]: messages
                                                                  travel in int32 ports, Loihi's graded
                                                                  spikes carry at most 24 bits
LIF a_in (stock LIFReset, fixed)           int16 port             harmless: numpy adds the int32 sender
                                                                  arrays (test above 2**15)
LIF bias_mant (stock LIFReset)             int16                  refused outside 13-bit [-4096, 4095]
LIF bias_exp                               int16                  refused outside [0, 7]
LIF du, dv                                 uint16 (12 bits)       refused outside [-1, 4095] / [0, 4095]
LIF vth                                    int32 (17 bits)        refused outside [0, 2**17 - 1]
LIF u, v (stock)                           int32                  24-bit states: fit
SnnNeuron u, v, parameters (ours)          int64                  fit
SampleSource / Delay / MaxPool (ours)      int32 ports            messages <= 24 bits, Add wraps at
                                                                  int32 as ir.fixed specifies
Route / Product / Accumulate (ours)        int32 ports, int64     products and sums exact in int64, then
                                           arithmetic             wrap24 (ir.fixed); int64 overflow is
                                                                  congruent mod 2**24, so still exact
AND of spikes (stock Sparse + LIF)         8-bit weights of 1     exact: du = dv = 4095 forget the state
Sum of spikes (stock Sparse of ones)       int32 sums             exact: at most n << 2**23
Collector (ours)                           int64                  exact
LIFReset reset_interval / offset           Python int             fit (any T)
=========================================  =====================  =====================================
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from snncompile.errors import SnnCompileError
from snncompile.ir import fixed as fx
from snncompile.ir import nodes as ir

#: Largest number of bits a message may carry (Loihi 2 graded spikes; Lava's ports are int32).
MAX_MESSAGE_BITS = 24
#: float64 holds every integer below this exactly: the bound of our Conv's exactness.
EXACT_FLOAT64 = 2 ** 53


@dataclass(frozen=True)
class Field:
    """One integer field of ``node.fixed`` and the range the Lava models hold exactly."""

    kinds: tuple
    name: str
    lo: int
    hi: int
    why: str


FIXED_FIELDS = (
    Field((ir.Input,) + ir.SYNAPSES, "num_message_bits", 0, MAX_MESSAGE_BITS,
          "messages travel in Lava's int32 ports and Loihi's graded spikes carry at most 24 bits"),
    Field((ir.Linear,), "weight_exp", fx.WEIGHT_EXP_MIN, fx.WEIGHT_EXP_MAX, "Loihi's weight exponent"),
    Field((ir.Linear,), "num_weight_bits", 1, 8, "Lava's Dense truncates 8-bit weights to it"),
    Field((ir.Conv2d, ir.SumPool2d, ir.AvgPool2d), "weight", -2 ** 31, 2 ** 31 - 1,
          "Lava's fixed-point Conv keeps its weights as int32"),
    Field((ir.Neuron,), "du", fx.DU_MIN, fx.DU_MAX, "Loihi's 12-bit current decay"),
    Field((ir.Neuron,), "dv", fx.DV_MIN, fx.DV_MAX, "Loihi's 12-bit voltage decay"),
    Field((ir.Neuron,), "vth", 0, fx.VTH_MAX, "Loihi's 17-bit threshold mantissa"),
    Field((ir.Neuron,), "bias_mant", fx.BIAS_MANT_MIN, fx.BIAS_MANT_MAX,
          "Loihi's 13-bit bias mantissa (Lava's LIF keeps it as int16)"),
    Field((ir.Neuron,), "bias_exp", fx.BIAS_EXP_MIN, fx.BIAS_EXP_MAX, "Loihi's 3-bit bias exponent"),
)


def check_graph(graph, precision: str) -> None:
    """Refuse a fixed-point graph with a value Lava's models would not hold exactly."""
    if precision != "fixed":
        return
    for node in graph:
        f = getattr(node, "fixed", None)
        if f is None:
            continue
        for field in FIXED_FIELDS:
            if not isinstance(node, field.kinds) or not hasattr(f, field.name):
                continue
            values = np.asarray(getattr(f, field.name))
            if values.size and (values.min() < field.lo or values.max() > field.hi):
                bad = values.min() if values.min() < field.lo else values.max()
                raise SnnCompileError(
                    f"node '{node.name}' ({node.kind}): fixed-point {field.name} = {int(bad)} is outside "
                    f"[{field.lo}, {field.hi}] ({field.why}); the Lava target refuses it rather than "
                    f"wrap it")


def check_conv(name: str, kind: str, weight: np.ndarray, num_message_bits: int) -> None:
    """Refuse a fixed-point Conv whose partial sums could pass 2**53 (our float64 Conv
    would then round): bound = max|message| * max over outputs of sum |weights|."""
    w = np.abs(np.asarray(weight, dtype=np.float64)).reshape(len(weight), -1)
    max_msg = 1 if num_message_bits == 0 else 2 ** (num_message_bits - 1)
    bound = max_msg * float(w.sum(axis=1).max(initial=0.0))
    if bound >= EXACT_FLOAT64:
        raise SnnCompileError(
            f"node '{name}' ({kind}): its partial sums can reach {bound:.3g} (messages of "
            f"{num_message_bits} bits times the weights), beyond 2**53 where the Lava target's "
            f"float64 Conv is exact; not supported")
