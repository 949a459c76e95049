"""Loihi fixed-point parameters attached to IR nodes (``node.fixed``), and their exact integer meaning.

A quantized graph keeps its float parameters (for reports and SQNR) and carries, on its
Input, every synapse, every Neuron and the Output, one of the dataclasses below with
the integers Lava's ``fixed_pt`` models receive. This docstring is THE written source of
truth for the integer semantics: the emulator (``snncompile.targets.emulator``) implements
it literally and the Lava fixed-point mapping (``snncompile.targets.lava``) must build
Lava processes that compute exactly this. Every equation was checked against the
installed lava-nc 0.10.0 source (``lava/proc/{lif,dense,conv}/models.py``,
``lava/proc/conv/utils.py``, ``lava/utils/weightutils.py``) and is re-checked by
``tests/test_emulator_lava.py`` against Lava's stock processes.

Notation: all values are integers (the emulator computes them exactly: int64 (or, where proven exact, int32) states,
products in float32/float64 only where provably exact, see ``targets/emulator/integer.py``).
``wrap32(x)`` = x reduced to int32 two's complement (what numpy int32 arithmetic and
Lava's int32 ports do); ``wrap24(x) = ((x + 2**23) mod 2**24) - 2**23`` (Lava Conv's
``signed_clamp``); ``rtz(x) = sign(x) * (|x| >> 12)`` (rounds toward zero);
``x >> k`` is an arithmetic (floor) shift; ``shift(x, e)`` = ``x << e`` if ``e > 0`` else
``x >> -e``. Time is *eager* (step t of the model, as the float IR): a synapse has no
delay here; Lava's one step of latency per synapse stage is the Lava target's business.
A recurrent (``delay=1``) edge delivers the producer's integer value of the previous step
(zeros at step 0).

Value domains on edges: the Input emits integer messages, a Neuron emits spikes 0/1,
a synapse emits integer activations ``a`` (units of a neuron's ``u`` before the 6-bit
MSB alignment), MaxPool/Flatten pass their input's domain through, Add sums.

Input (``InputFixed``)::

    num_message_bits == 0:  m = (x != 0)                       # binary spikes
    num_message_bits == b:  m = clip(rint(x * scale), -2**(b-1), 2**(b-1) - 1)
                            # rint = round half to even (numpy.rint)

Synapses (``SynapseFixed``). The message ``m`` received is first made binary when the
synapse's ``num_message_bits == 0`` (``m = (m != 0)``, Lava's ``astype(bool)``); with
``num_message_bits > 0`` it is used as is (graded)::

    Linear (Lava Dense, fixed_pt):
        W = lava_dense_weights(weight, num_weight_bits)   # Lava's clip + truncate, below
        acc = W @ m                     # binary messages: summed in int64 (numpy sum)
        acc = wrap32(W @ m)             # graded messages: an int32 dot product wraps
        a = wrap32(shift(acc, weight_exp))                # sent through an int32 port
    Conv2d (Lava Conv, fixed_pt; weight_exp and num_weight_bits are IGNORED by Lava,
    weights are neither clipped nor truncated):
        a = wrap24(conv2d(m, weight))      # PyTorch cross-correlation semantics and
                                           # layout (C_out, C_in/groups, kH, kW), exact integers
    SumPool2d / AvgPool2d (a Conv whose kernel is the scalar mantissa ``weight`` in
    every tap of its own channel, zero padding; AvgPool's 1/k^2 lives in the scales):
        a = wrap24(weight * window_sum(m))

``lava_dense_weights`` (``lava.utils.weightutils``): sign mode from the weights
(all >= 0: excitatory, all <= 0: inhibitory, else mixed); clip to [0, 255]
(excitatory), [-255, 0] (inhibitory) or [-256, 255] (mixed); then drop
``k = 8 - num_weight_bits + (1 if mixed else 0)`` LSBs: ``W = (W >> k) << k``
(inhibitory: ``W = -((-W >> k) << k)``). So mixed-sign 8-bit weights lose their LSB.
The quantizer stores weights that this leaves unchanged; netx-imported ones may not be.

MaxPool2d: max over each window of the integer input (padding never wins).
Flatten: reshape in PyTorch (C-major) order. Add: ``wrap32(sum of inputs)`` (Lava's
InPort adds the int32 arrays of all connected OutPorts).

Neuron (``NeuronFixed``; Lava ``PyLifModelBitAcc`` extended with our own process for
``>=``, ``reset_value``, subtractive reset). Per step, with ``a`` the summed input::

    u' = rtz(u * (4096 - (du + 1))) + wrap32(wrap32(a) << 6)       # note du + 1
    u' = wrap32(u')
    u  = u' - 2**24 if u' > 2**23 else (u' + 2**24 if u' <= -2**23 else u')
                                    # 24-bit wrap exactly as Lava codes it (one fold)
    v' = wrap32(rtz(v * (4096 - dv)) + u + shift(bias_mant, bias_exp))
    v  = clip(v', -(2**23 - 1), 2**23 - 1)                           # saturates
    s  = v > (vth << 6)            (compare ">", stock LIF)   or   v >= (vth << 6)
    reset "zero":     v = where(s, reset_value, v)           (stock LIF: reset_value 0)
    reset "subtract": v = clip(v - reset_amount * s, -(2**23 - 1), 2**23 - 1)
    reset "none":     v unchanged
    (u is never reset.) Initial state: u = u_init, v = v_init.

``du``/``dv`` are Lava's 12-bit values (``du = 4095``: current forgotten each step,
``du = -1``: non-leaky current, ``dv = 0``: non-leaky voltage); ``vth`` a mantissa of at
most 17 bits; ``bias_mant`` 13-bit signed; ``reset_value``/``reset_amount``/``u_init``/
``v_init`` are in full (already shifted) 24-bit state units. All are arrays
broadcastable to the population shape (shape ``()`` = one per population, as Lava's LIF
needs for ``du``, ``dv``, ``vth``).

Spiking-transformer kinds (issue 11). A Loihi-style chip computes them without a multiplier
wherever an operand is spikes: a product of spikes is an AND, a sum of spikes a popcount, a
product with spikes a sum of the values the spikes select. Values are exact integers
(int64 in the emulator), and every arithmetic result is a dendritic accumulator of 24 bits,
as a Conv's::

    Reshape / Permute / Slice:  the same integers re-indexed (axon routing; no arithmetic).
    MatMul(a, b):   c = wrap24(a @ b)          # exact integer sum over the contracted axis K
    Mul(a, b):      c = wrap24(a * b)          # elementwise, size-1 axes broadcast
    ReduceSum:      c = wrap24(sum over axis)
    Scale (``SynapseFixed``; a one-to-one synapse, a 1x1 depthwise Conv/SumPool whose
    mantissa may differ per element, ``weight`` of the node's weight shape):
                    a = wrap24(shift(weight * m, weight_exp) + bias)
                    # weight_exp as Lava Dense's (shift: << e, or arithmetic >> -e); the
                    # quantizer sets it only on the Scales that realign a membrane shortcut
                    # (quantize.realign), elsewhere it is 0

The emulator counts every wrap24 that changes a value ("wrap" events, in the quantization
report) -- it never hides one. What each product needs, by operand kinds
(``passes.operands``; ``K`` the contracted length, ``k`` the largest count):

* spike x spike (``q @ k^T``, ``k^T @ v``; Mul = AND): AND + popcount, 1-bit operands, result
  0..K (``ceil(log2(K+1))`` bits: ``k^T @ v`` of Spikformer-8-512, N = 196: 8 bits).
* count x spike / spike x count (``attn @ v``, ``q @ (k^T v)``): sum of the selected counts,
  operand of ``ceil(log2(k+1))`` bits, result <= K*k (8-512: d*N = 12,544, 14 bits).
* real x spike (SpikingResformer's ``y1^T @ x``): sum of the selected integer activations of
  the synapse producing ``y`` (graded messages, ``num_message_bits`` of the quantizer's
  ``input_bits``): exact given that activation, result <= K * max|y| (log2(K) bits more).
* ReduceSum of spikes: popcount 0..n; of counts/reals: exact sum (log2(n) bits more).
* real x real: no multiplier-free form; the quantizer refuses it (the emulator would still
  compute the exact product).
All fit the 24-bit accumulator for the published sizes; a wider value wraps, and is counted.

Scales through them: spikes and counts have scale 1, so a product's scale is its real
operand's (``sigma_a * sigma_b``) and layouts and sums keep their input's. A synapse or
Scale whose value reaches a neuron only through Add, layouts, ReduceSum and products with
spikes/counts delivers that neuron's units (``S / 64``, as a synapse into it). A ``Scale``
of a count into a neuron is exact when its weight and the threshold are dyadic: ``* 0.125``
(with SpikingJelly's ``1/tau``: ``* 0.0625``) before a threshold-0.5 LIF gets mantissa ``k``
and ``vth = 4k`` (``8k``); and since ``a`` enters ``u`` shifted by 6 bits, the halving leak
``dv = 2048`` is exact for 6 steps. A synapse (or Scale) whose value feeds a product keeps
its constant part as its own integer ``bias`` (a bias times spikes is not a constant that
could move into the neuron; on a chip the graded neuron emitting ``y`` carries it); every
other synapse has ``bias == 0`` (its constant moved into the neuron or readout).

Output (``ReadoutFixed``): ``spikes``: the spikes themselves. ``potential``: our
integrator readout: per step the value is ``wrap32(a) + bias`` (its input activation plus
the readout's own bias mantissa), accumulated exactly (int64, no wrap) over time; the
run's ``outputs`` hold the per-step integers and ``counts`` their sum. ``membrane``: per
step the value is the integer ``v`` (after the step) of the Neuron it reads, a leaky
integrator whose ``vth`` is ``VTH_MAX`` (reached only by a saturated v) and reset ``none``;
``scale`` is that neuron's. Divide by ``ReadoutFixed.scale`` to get back float units.

Scales (``scale`` fields, informational for the integer semantics, used by reports and
to convert back): an integer value equals the float value times ``scale``; for a
neuron, ``v_int = v_float * scale`` and ``u_int = u_float * scale``; its input
activation ``a_int = a_float * scale / 64``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

import numpy as np

#: Loihi register widths used by Lava's fixed_pt models.
STATE_BITS = 24
STATE_MAX = 2 ** (STATE_BITS - 1)          # u wraps above this, v saturates at STATE_MAX - 1
DECAY_SHIFT = 12
DECAY_UNITY = 2 ** DECAY_SHIFT
ACT_SHIFT = 6                              # a_in << 6 before adding to u
VTH_SHIFT = 6                              # vth << 6 before comparing with v
VTH_MAX = 2 ** 17 - 1                      # 17-bit threshold mantissa
BIAS_MANT_MIN, BIAS_MANT_MAX = -(2 ** 12), 2 ** 12 - 1   # 13-bit signed
BIAS_EXP_MIN, BIAS_EXP_MAX = 0, 7
WEIGHT_EXP_MIN, WEIGHT_EXP_MAX = -8, 7     # Loihi's weight exponent range
DU_MIN, DU_MAX = -1, 4095                  # -1: non-leaky current (du + 1 == 0)
DV_MIN, DV_MAX = 0, 4095


def _int_array(value) -> np.ndarray:
    return np.asarray(value, dtype=np.int64)


class _FixedBase:
    """Equality by field, arrays compared bit for bit (ONNX round trips compare these)."""

    def __eq__(self, other):
        if type(self) is not type(other):
            return NotImplemented
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                a, b = np.asarray(a), np.asarray(b)
                if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None


@dataclass(eq=False)
class InputFixed(_FixedBase):
    """How the Input's float values become integer messages (see module docstring)."""

    scale: float = 1.0
    num_message_bits: int = 0          # 0: binary spikes (x != 0)

    def __post_init__(self):
        self.scale = float(self.scale)
        self.num_message_bits = int(self.num_message_bits)


@dataclass(eq=False)
class SynapseFixed(_FixedBase):
    """Integer synapse of a Linear (Lava Dense), Conv2d (Lava Conv), pooling or Scale node.

    ``weight``: the mantissas as Lava receives them, in the IR node's layout (Linear
    ``(out, in)``, Conv ``(C_out, C_in/groups, kH, kW)`` PyTorch cross-correlation order;
    the Lava mapping flips/transposes for Lava's WHC true convolution); shape ``()``
    for pooling (the mantissa of every tap). ``weight_exp`` acts on Linear and Scale.
    """

    weight: np.ndarray = None
    weight_exp: int = 0
    num_weight_bits: int = 8
    num_message_bits: int = 0          # of the messages it receives; 0: binary spikes
    scale: float = 1.0                 # a_int = a_float * scale
    in_scale: float = 1.0              # message_int = message_float * in_scale
    #: Integer added to the output: 0 unless the synapse feeds a product (module docstring).
    bias: np.ndarray = None

    def __post_init__(self):
        self.weight = _int_array(self.weight)
        self.bias = _int_array(0 if self.bias is None else self.bias)
        self.weight_exp = int(self.weight_exp)
        self.num_weight_bits = int(self.num_weight_bits)
        self.num_message_bits = int(self.num_message_bits)
        self.scale = float(self.scale)
        self.in_scale = float(self.in_scale)


@dataclass(eq=False)
class NeuronFixed(_FixedBase):
    """Integer LIF parameters (Lava's units; equations in the module docstring)."""

    du: np.ndarray = None
    dv: np.ndarray = None
    vth: np.ndarray = None
    bias_mant: np.ndarray = None
    bias_exp: np.ndarray = None
    reset_mode: str = "zero"
    reset_value: np.ndarray = None
    reset_amount: np.ndarray = None
    compare: str = ">"
    u_init: np.ndarray = None
    v_init: np.ndarray = None
    scale: float = 1.0                 # v_int = v_float * scale

    def __post_init__(self):
        defaults = {"du": 4095, "dv": 0, "vth": 1, "bias_mant": 0, "bias_exp": 0,
                    "reset_value": 0, "u_init": 0, "v_init": 0}
        for key, default in defaults.items():
            val = getattr(self, key)
            setattr(self, key, _int_array(default if val is None else val))
        self.reset_amount = _int_array(np.left_shift(self.vth, VTH_SHIFT) if self.reset_amount is None
                                       else self.reset_amount)
        self.reset_mode = str(self.reset_mode)
        self.compare = str(self.compare)
        self.scale = float(self.scale)

    def effective_bias(self) -> np.ndarray:
        """``bias_mant << bias_exp`` (right shift for a negative exponent), as Lava's scale_bias."""
        return np.where(self.bias_exp >= 0, np.left_shift(self.bias_mant, np.maximum(self.bias_exp, 0)),
                        np.right_shift(self.bias_mant, np.maximum(-self.bias_exp, 0)))


@dataclass(eq=False)
class ReadoutFixed(_FixedBase):
    """Integer readout of the Output node (integrator for a potential readout)."""

    mode: str = "spikes"
    bias: np.ndarray = None            # added per step to the activation (potential readout)
    scale: float = 1.0                 # value_int = value_float * scale

    def __post_init__(self):
        self.mode = str(self.mode)
        self.bias = _int_array(0 if self.bias is None else self.bias)
        self.scale = float(self.scale)


FIXED_TYPES = {cls.__name__: cls for cls in (InputFixed, SynapseFixed, NeuronFixed, ReadoutFixed)}


# -- small integer helpers shared by the emulator, the quantizer and the Lava mapping --------

def wrap32(x: np.ndarray) -> np.ndarray:
    """Reduce int64 values to int32 two's complement (kept in int64)."""
    return ((np.asarray(x, dtype=np.int64) + 2 ** 31) % 2 ** 32) - 2 ** 31


def wrap24(x: np.ndarray) -> np.ndarray:
    """Lava Conv's ``signed_clamp(x, bits=24)``: wrap into [-2**23, 2**23)."""
    return ((np.asarray(x, dtype=np.int64) + 2 ** 23) % 2 ** 24) - 2 ** 23


def dense_sign_mode(weight: np.ndarray) -> str:
    """Lava's ``determine_sign_mode``: 'excitatory', 'inhibitory' or 'mixed'."""
    w = np.asarray(weight)
    if w.size == 0 or w.min() >= 0:
        return "excitatory"
    if w.max() <= 0:
        return "inhibitory"
    return "mixed"


def lava_dense_weights(weight: np.ndarray, num_weight_bits: int = 8, sign_mode: Optional[str] = None
                       ) -> np.ndarray:
    """The weights Lava's fixed-point Dense actually uses: clip to 8 bits, truncate LSBs."""
    w = np.asarray(weight, dtype=np.int64)
    mode = sign_mode or dense_sign_mode(w)
    if mode == "inhibitory":
        w = -w
    mixed = int(mode == "mixed")
    w = np.clip(w, -256 * mixed, 255)
    k = 8 - int(num_weight_bits) + mixed
    w = (w >> k) << k
    if mode == "inhibitory":
        w = -w
    return w


# -- range checks on load: a file may hold any number; Lava's registers hold these ----------

#: Synapse weight mantissas Lava's Dense/Conv receive (8 bits and a sign).
WEIGHT_MANT_MIN, WEIGHT_MANT_MAX = -256, 255
#: ``num_message_bits`` of graded messages Lava's ports carry (0: binary spikes).
MESSAGE_BITS_MAX = 24
#: Initial/reset states and readout biases are 24-bit state values.
STATE_LIMIT = 2 ** STATE_BITS
_MODES = {"reset_mode": ("zero", "subtract", "none"), "compare": (">", ">="),
          "mode": ("spikes", "potential", "membrane")}


class FixedRangeError(ValueError):
    """A fixed-point field outside what Lava's fixed_pt models hold (the message says which)."""


def _in_range(name: str, value, lo: int, hi: int, shape=None) -> None:
    arr = np.asarray(value)
    if arr.size and (arr.min() < lo or arr.max() > hi):
        bad = arr.min() if arr.min() < lo else arr.max()
        raise FixedRangeError(f"{name} = {int(bad)} is outside Loihi's range [{lo}, {hi}]")
    if shape is not None:
        try:
            np.broadcast_to(arr, shape)
        except ValueError:
            raise FixedRangeError(f"{name} has shape {arr.shape}, which does not fit the "
                                  f"population of shape {tuple(shape)}") from None


def _positive_scale(name: str, value: float) -> None:
    if not np.isfinite(value) or value <= 0:
        raise FixedRangeError(f"{name} = {value} must be a finite positive number")


def _choice(name: str, value: str) -> None:
    if value not in _MODES[name]:
        raise FixedRangeError(f"{name} {value!r} is not one of {', '.join(map(repr, _MODES[name]))}")


def check_ranges(fixed, weight_shape=None, shape=None) -> None:
    """Raise FixedRangeError when a field of ``fixed`` is outside Lava's limits (module
    constants) or does not fit the node: ``weight_shape`` of its synapse (``()`` for
    pooling), ``shape`` of its neuron population."""
    if isinstance(fixed, InputFixed):
        _positive_scale("scale", fixed.scale)
        _in_range("num_message_bits", fixed.num_message_bits, 0, MESSAGE_BITS_MAX)
    elif isinstance(fixed, SynapseFixed):
        if weight_shape is not None and fixed.weight.shape != tuple(weight_shape):
            raise FixedRangeError(f"weight has shape {fixed.weight.shape}, the node's weight {tuple(weight_shape)}")
        _in_range("weight", fixed.weight, WEIGHT_MANT_MIN, WEIGHT_MANT_MAX)
        _in_range("weight_exp", fixed.weight_exp, WEIGHT_EXP_MIN, WEIGHT_EXP_MAX)
        _in_range("num_weight_bits", fixed.num_weight_bits, 1, 8)
        _in_range("num_message_bits", fixed.num_message_bits, 0, MESSAGE_BITS_MAX)
        _positive_scale("scale", fixed.scale)
        _positive_scale("in_scale", fixed.in_scale)
        _in_range("bias", fixed.bias, -STATE_LIMIT, STATE_LIMIT, shape)
    elif isinstance(fixed, NeuronFixed):
        _in_range("du", fixed.du, DU_MIN, DU_MAX, shape)
        _in_range("dv", fixed.dv, DV_MIN, DV_MAX, shape)
        _in_range("vth", fixed.vth, 0, VTH_MAX, shape)
        _in_range("bias_mant", fixed.bias_mant, BIAS_MANT_MIN, BIAS_MANT_MAX, shape)
        _in_range("bias_exp", fixed.bias_exp, BIAS_EXP_MIN, BIAS_EXP_MAX, shape)
        for key in ("reset_value", "reset_amount", "u_init", "v_init"):
            _in_range(key, getattr(fixed, key), -STATE_LIMIT, STATE_LIMIT, shape)
        _choice("reset_mode", fixed.reset_mode)
        _choice("compare", fixed.compare)
        _positive_scale("scale", fixed.scale)
    elif isinstance(fixed, ReadoutFixed):
        _choice("mode", fixed.mode)
        _in_range("bias", fixed.bias, -STATE_LIMIT, STATE_LIMIT, shape)
        _positive_scale("scale", fixed.scale)


#: IR node class -> the fixed-point dataclass it may carry.
FIXED_OF = {"Input": "InputFixed", "Linear": "SynapseFixed", "Conv2d": "SynapseFixed",
            "SumPool2d": "SynapseFixed", "AvgPool2d": "SynapseFixed", "Scale": "SynapseFixed",
            "Neuron": "NeuronFixed", "Output": "ReadoutFixed"}


#: The spiking-transformer kinds (issue 11): Lava maps them (issue 12), both emulator engines run
#: them; NIR refuses them.
TRANSFORMER_KIND_NAMES = ("Reshape", "Permute", "Slice", "MatMul", "Mul", "ReduceSum", "Scale")


def check_graph(graph) -> None:
    """:func:`check_ranges` on every node of a read graph (ONNX, netx), as one SnnCompileError
    naming the node; also that each node carries the dataclass of its kind."""
    from snncompile.errors import SnnCompileError

    transformer = any(type(n).__name__ in TRANSFORMER_KIND_NAMES for n in graph)
    for node in graph:
        fixed = getattr(node, "fixed", None)
        if type(fixed).__name__ not in FIXED_TYPES:
            continue
        kind = type(node).__name__
        if type(fixed).__name__ != FIXED_OF.get(kind):
            raise SnnCompileError(f"node '{node.name}' ({kind}) carries fixed-point {type(fixed).__name__}, "
                                  f"expected {FIXED_OF.get(kind) or 'none'}")
        weight_shape = np.shape(node.weight) if kind in ("Linear", "Conv2d", "Scale") else ()
        try:
            check_ranges(fixed, weight_shape=weight_shape, shape=graph.shape(node.name))
        except FixedRangeError as exc:
            raise SnnCompileError(f"node '{node.name}': fixed-point {exc}") from None
        if isinstance(fixed, SynapseFixed) and np.any(fixed.bias) and not transformer:
            # a synapse bias belongs to a synapse feeding a product: transformer graphs only
            raise SnnCompileError(f"node '{node.name}': fixed-point synapse bias is only part of "
                                  f"spiking-transformer graphs (a synapse feeding a product); this graph "
                                  f"has none, and Lava's synapses have no bias")
