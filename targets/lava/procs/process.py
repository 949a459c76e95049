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
    added before the max. On binary spikes the output is the OR of the window.
    """

    def __init__(self, *, in_shape: tuple, out_shape: tuple, kernel_size: tuple, stride: tuple,
                 padding: tuple, bias=0.0, name: str = None) -> None:
        super().__init__(in_shape=tuple(in_shape), out_shape=tuple(out_shape),
                         kernel_size=tuple(kernel_size), stride=tuple(stride),
                         padding=tuple(padding), bias=bias, name=name)
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
    ``bias`` is the constant part of the value, added to what arrives.
    """

    def __init__(self, *, shape: tuple, n_samples: int, steps: int, period: int, phase: int,
                 final_step: int, path: str, keep_steps: bool, bias=0.0, name: str = None) -> None:
        super().__init__(shape=tuple(shape), n_samples=int(n_samples), steps=int(steps),
                         period=int(period), phase=int(phase), final_step=int(final_step),
                         path=str(path), keep_steps=bool(keep_steps), bias=bias, name=name)
        self.a_in = InPort(shape=tuple(shape))
