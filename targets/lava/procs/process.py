"""Lava processes of our own, for what stock Lava lacks (numpy-only, light imports).

Lava's compiler imports every ``.py`` in this folder to find ProcessModels, so this
folder must import nothing but numpy and lava. Constant configuration travels in
``proc_params`` (no ``Var.get`` needed); only neuron state is a ``Var``.

Time: Lava step ``tau = time_step - 1`` (0-based). Samples run back to back with
period ``period``; a stage whose pipeline latency is ``phase`` sees model step ``t`` of
sample ``k`` at ``tau = k * period + t + phase``.
"""
from __future__ import annotations

import numpy as np

from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var


class SampleSource(AbstractProcess):
    """Presents ``n`` samples back to back: model step t of sample k at Lava step k*period + t.

    ``data``: (n, steps, *shape) for spike/current trains, or (n, *shape) with
    ``static=True`` for a value presented at every step (direct encoding). Outside a
    sample's ``steps`` it sends zeros.
    """

    def __init__(self, *, data: np.ndarray, shape: tuple, steps: int, period: int,
                 static: bool, name: str = None) -> None:
        super().__init__(data=data, shape=tuple(shape), steps=int(steps), period=int(period),
                         static=bool(static), name=name)
        self.s_out = OutPort(shape=tuple(shape))


class Delay(AbstractProcess):
    """Sends its (fan-in summed) input ``delay`` steps later: delay balancing of joins.

    With ``gate_phase >= 0`` it is a recurrent edge: it sends zeros at model step 0 of
    every sample (``(tau - gate_phase) % period == 0``), the IR's "previous step" of the
    first step, and otherwise its delayed input plus ``bias`` (the constant current of
    the recurrent source, which the IR also delays).
    """

    def __init__(self, *, shape: tuple, delay: int, period: int = 1, gate_phase: int = -1,
                 bias=0.0, name: str = None) -> None:
        super().__init__(shape=tuple(shape), delay=int(delay), period=int(period),
                         gate_phase=int(gate_phase), bias=bias, name=name)
        self.a_in = InPort(shape=tuple(shape))
        self.s_out = OutPort(shape=tuple(shape))


class MaxPool(AbstractProcess):
    """Max over each spatial window of a WHC tensor (zero latency); padding never wins.

    ``bias`` (broadcastable to ``in_shape``) is the constant part of the input current,
    added before the max (fixed point: a synapse's own integer bias, then the synapse's
    ``wrap_bits`` wrap, as ``ir.fixed`` computes that synapse). On binary spikes the output is
    the OR of the window.
    """

    def __init__(self, *, in_shape: tuple, out_shape: tuple, kernel_size: tuple, stride: tuple,
                 padding: tuple, bias=0.0, wrap_bits: int = 0, name: str = None) -> None:
        super().__init__(in_shape=tuple(in_shape), out_shape=tuple(out_shape),
                         kernel_size=tuple(kernel_size), stride=tuple(stride),
                         padding=tuple(padding), bias=bias, wrap_bits=int(wrap_bits), name=name)
        self.a_in = InPort(shape=tuple(in_shape))
        self.s_out = OutPort(shape=tuple(out_shape))


class SnnNeuron(AbstractProcess):
    """The IR's LIF-family neuron where Lava's LIF falls short.

    Per-neuron ``du``, ``dv``, ``vth``, ``bias`` (into v), ``u_bias`` (constant input
    current, into u), ``reset_value``, ``reset_amount``, ``u_init``, ``v_init``; reset mode
    zero|subtract|none; compare '>' or '>='. Like ``LIFReset`` its state returns to
    ``u_init``/``v_init`` at the start of every sample (``(tau - phase) % period == 0``),
    before integrating. Equations: ``snncompile.ir.nodes`` (float) and
    ``snncompile.ir.fixed`` (integer). With ``send_v`` it also sends its membrane ``v``
    (after the step) on ``v_out`` every step: a membrane readout (leaky integrator).
    """

    def __init__(self, *, shape: tuple, params: dict, reset_mode: str, compare: str,
                 period: int, phase: int, send_v: bool = False, name: str = None) -> None:
        super().__init__(shape=tuple(shape), params=params, reset_mode=reset_mode,
                         compare=compare, period=int(period), phase=int(phase), send_v=bool(send_v),
                         name=name)
        self.a_in = InPort(shape=tuple(shape))
        self.s_out = OutPort(shape=tuple(shape))
        self.v_out = OutPort(shape=tuple(shape))
        self.u = Var(shape=tuple(shape), init=params["u_init"])
        self.v = Var(shape=tuple(shape), init=params["v_init"])


class Collector(AbstractProcess):
    """Keeps compact results of one value for each sample window and writes them to
    ``path`` (``.npz``) at Lava step ``final_step``: reading back one file instead of
    ``Var.get``, which moves one element per message.

    ``keep_steps=True``: ``values`` (n, steps, size), every step (the output layer).
    ``keep_steps=False``: ``counts`` (n, size) sums over time and ``step_sums`` (n, steps).
    ``gather``: the port positions of the value's elements in IR (C) order: results are kept
    in IR order. ``bias`` (IR order) is the constant part of the value, added to what arrives.
    """

    def __init__(self, *, shape: tuple, n_samples: int, steps: int, period: int, phase: int,
                 final_step: int, path: str, keep_steps: bool, gather, bias=0.0,
                 name: str = None) -> None:
        super().__init__(shape=tuple(shape), n_samples=int(n_samples), steps=int(steps),
                         period=int(period), phase=int(phase), final_step=int(final_step),
                         path=str(path), keep_steps=bool(keep_steps), gather=np.asarray(gather),
                         bias=bias, name=name)
        self.a_in = InPort(shape=tuple(shape))


class Route(AbstractProcess):
    """Re-arranges a value (zero latency): ``out.flat[k] = in.flat[gather[k]]``.

    Only where a consumer needs another arrangement than the one a value arrived in (a Conv
    needs its WHC image, a neuron population a one-to-one port; ``layout.py``). On a chip this
    is not a computation but the routing of the producer's output axons, fixed at mapping time;
    here it costs one Lava process, and it counts no neurons or synapses in the size report.
    """

    def __init__(self, *, in_shape: tuple, out_shape: tuple, gather, name: str = None) -> None:
        super().__init__(in_shape=tuple(in_shape), out_shape=tuple(out_shape),
                         gather=np.asarray(gather, dtype=np.int64), name=name)
        self.a_in = InPort(shape=tuple(in_shape))
        self.s_out = OutPort(shape=tuple(out_shape))


class Product(AbstractProcess):
    """A product of two activations of the same model step: ``MatMul`` or ``Mul`` of the IR.

    One process holds a layer of product units, in the style of Lava's ``ProdNeuron`` (two
    dendritic inputs, a graded output, one step of latency: what arrives at step t leaves at
    t + 1). Each operand arrives on its own port (``lhs_in``, ``rhs_in``) in whatever
    arrangement its producer left it; ``gather`` picks its elements in IR order, ``const`` adds
    its constant part (float: the bias currents Lava's Dense/Conv lack; fixed point: a feeding
    synapse's own integer bias, wrapped to that synapse's ``wrap`` bits as ``ir.fixed`` does).

    ``op``: ``"matmul"`` (``(..., n, k) @ (..., k, m)``) or ``"mul"`` (elementwise, size-1
    axes broadcast). Output: the IR value in C order (a flat port), graded messages of 24 bits:
    fixed point computes ``wrap24`` of the exact integer result (``ir.fixed``), float the
    float64 product. What a chip does per operand kind (``operands``: spike, count, real):

    * spike x spike: each unit ANDs two spike trains and an accumulator popcounts them
      (1-bit inputs, a Dense of ones): Loihi 2 neuro-cores, stock neuron models.
    * spike x count / count x spike / real x spike: a spike gates a graded value (the
      product unit passes the graded payload when its spike input is 1), then the same
      accumulation: a neuro-core with a two-input (ProdNeuron-style) microcoded neuron and
      graded spikes of up to 24 bits, which Loihi 2's neuro-cores support; no embedded core
      or host is needed.
    * graded x graded (real x real): a true multiplier of two 24-bit values; the quantizer
      refuses it, and a chip would need its embedded cores for it.
    """

    def __init__(self, *, op: str, lhs_shape: tuple, rhs_shape: tuple, out_shape: tuple,
                 lhs_port: tuple, rhs_port: tuple, lhs_gather, rhs_gather, lhs_const=0,
                 rhs_const=0, lhs_wrap: int = 0, rhs_wrap: int = 0, operands=("real", "real"),
                 name: str = None) -> None:
        size = int(np.prod(out_shape))
        super().__init__(op=str(op), lhs_shape=tuple(lhs_shape), rhs_shape=tuple(rhs_shape),
                         out_shape=tuple(out_shape), lhs_gather=np.asarray(lhs_gather, dtype=np.int64),
                         rhs_gather=np.asarray(rhs_gather, dtype=np.int64), lhs_const=lhs_const,
                         rhs_const=rhs_const, lhs_wrap=int(lhs_wrap), rhs_wrap=int(rhs_wrap),
                         operands=tuple(operands), name=name)
        self.lhs_in = InPort(shape=tuple(lhs_port))
        self.rhs_in = InPort(shape=tuple(rhs_port))
        self.s_out = OutPort(shape=(size,))


class Accumulate(AbstractProcess):
    """A one-input linear stage with a 24-bit accumulator, one step of latency: the IR's
    ``Scale`` (``op="scale"``: ``wrap24(shift(weight * x, weight_exp) + bias)`` per element)
    and a ``ReduceSum`` of graded values (``op="sum"`` over ``axis``: ``wrap24(sum)``).

    On a chip: a one-to-one Dense with a weight exponent (Scale) or a Dense of ones (sum) into
    graded 24-bit accumulators, in the neuro-cores. Lava's own Dense would wrap at 32 bits
    and clip weights to 8 bits, which is not the IR's integer semantics, so this is ours (a
    ReduceSum of spikes uses Lava's Dense of ones: exact there). Input elements are gathered
    in IR order (``gather``) with their constant part (``const``/``wrap``, as ``Product``);
    float: ``weight * x`` (the float bias travels as the value's constant part) or the sum.
    """

    def __init__(self, *, op: str, in_shape: tuple, out_shape: tuple, in_port: tuple, gather,
                 const=0, wrap: int = 0, weight=1, weight_exp: int = 0, bias=0, axis: int = 0,
                 keepdim: bool = False, binary: bool = False, name: str = None) -> None:
        size = int(np.prod(out_shape))
        super().__init__(op=str(op), in_shape=tuple(in_shape), out_shape=tuple(out_shape),
                         gather=np.asarray(gather, dtype=np.int64), const=const, wrap=int(wrap),
                         weight=weight, weight_exp=int(weight_exp), bias=bias, axis=int(axis),
                         keepdim=bool(keepdim), binary=bool(binary), name=name)
        self.a_in = InPort(shape=tuple(in_port))
        self.s_out = OutPort(shape=(size,))
