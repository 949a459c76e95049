"""Run a chain of Lava's *stock* fixed_pt processes: Source -> (Dense | Conv -> LIF)* -> Sink.

This is the independent check of the emulator (tests, benchmarks): no snncompile Lava
mapping is involved, only ``lava.proc.{io,dense,conv,lif}`` with the integers of
``node.fixed``. A Dense after a conv population reads Lava's WHC order, so its weight
columns are permuted from PyTorch's CHW flatten order.

Timing: Lava's Dense/Conv deliver one step late, so the last layer at Lava step t+k
(k synapse stages) is the emulator's step t when the emulator is fed the input shifted
by k steps; every layer but the last must then stay at rest without input (no bias,
zero initial state) for the two to agree.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from snncompile.ir import fixed as fx
from snncompile.ir import nodes as ir
from snncompile.ir.graph import Graph

from .integer import IntegerSimulator


def _lava():
    from snncompile import lava_compat
    lava_compat.install()   # the 3.11 import hook and Lava's 'fork' runtime, once
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.conv.process import Conv
    from lava.proc.dense.process import Dense
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.lif.process import LIF
    return dict(RunSteps=RunSteps, Cfg=Loihi2SimCfg, Conv=Conv, Dense=Dense, Sink=Sink,
                Source=Source, LIF=LIF)


def _whc(a: np.ndarray) -> np.ndarray:
    return a.transpose(2, 1, 0) if a.ndim == 3 else a


def _chw_to_whc_columns(c: int, h: int, w: int) -> np.ndarray:
    """perm[j] = PyTorch (C, H, W) flat index of Lava's (W, H, C) flat position j."""
    return np.arange(c * h * w).reshape(c, h, w).transpose(2, 1, 0).reshape(-1)


def run_stock_chain(x: np.ndarray, layers: list) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Run ``x`` ((T, *in_shape) integer messages, PyTorch layout) through Lava fixed_pt.

    ``layers``: list of (synapse ir node with ``fixed``, NeuronFixed, neuron shape).
    Returns (last layer's spikes (T, *shape) PyTorch layout, its final u, final v, seconds
    spent in ``run`` (compile and start-up included))."""
    L = _lava()
    T = x.shape[0]
    data = np.stack([_whc(x[t]) for t in range(T)], axis=-1).astype(np.int32)
    src = L["Source"](data=data)
    port, prev_shape = src.s_out, tuple(x.shape[1:])
    for syn, nf, shape in layers:
        f = syn.fixed
        if isinstance(syn, ir.Linear):
            w = np.asarray(f.weight)
            if len(prev_shape) == 3:
                w = w[:, _chw_to_whc_columns(*prev_shape)]
                port = port.flatten()
            conn = L["Dense"](weights=w, weight_exp=f.weight_exp, num_weight_bits=f.num_weight_bits,
                              num_message_bits=f.num_message_bits)
        else:
            w = np.asarray(f.weight).transpose(0, 3, 2, 1)[:, ::-1, ::-1].copy()
            conn = L["Conv"](weight=w, input_shape=tuple(port.shape), padding=syn.padding[::-1],
                             stride=syn.stride[::-1], dilation=syn.dilation[::-1], groups=syn.groups,
                             num_message_bits=f.num_message_bits)
        lshape = tuple(shape[::-1])
        lif = L["LIF"](shape=lshape, du=int(f_int(nf.du)), dv=int(f_int(nf.dv)), vth=int(f_int(nf.vth)),
                       bias_mant=_whc(np.broadcast_to(nf.bias_mant, shape).copy()),
                       bias_exp=_whc(np.broadcast_to(nf.bias_exp, shape).copy()),
                       u=_whc(np.broadcast_to(nf.u_init, shape).copy()),
                       v=_whc(np.broadcast_to(nf.v_init, shape).copy()))
        port.connect(conn.s_in)
        conn.a_out.connect(lif.a_in)
        port, last, prev_shape = lif.s_out, lif, tuple(shape)
    sink = L["Sink"](shape=tuple(port.shape), buffer=T)
    port.connect(sink.a_in)
    t0 = time.perf_counter()
    try:
        src.run(condition=L["RunSteps"](num_steps=T), run_cfg=L["Cfg"](select_tag="fixed_pt"))
        seconds = time.perf_counter() - t0
        spikes, u, v = sink.data.get(), last.u.get(), last.v.get()
    finally:
        src.stop()
    return (np.stack([_whc(spikes[..., t]) for t in range(T)]).astype(np.int64),
            _whc(u).astype(np.int64), _whc(v).astype(np.int64), seconds)


def f_int(a) -> int:
    a = np.asarray(a)
    if a.size != 1:
        raise ValueError("Lava's LIF takes one du, dv, vth per population")
    return int(a.reshape(-1)[0])


def chain_graph(in_shape, layers: list, message_bits: int) -> Graph:
    """The same chain as an IR graph (Flatten inserted before a Dense after a conv)."""
    g = Graph("chain")
    prev = g.add(ir.Input("in", shape=in_shape, fixed=fx.InputFixed(num_message_bits=message_bits)))
    prev_shape = tuple(in_shape)
    for i, (syn, nf, shape) in enumerate(layers):
        if isinstance(syn, ir.Linear) and len(prev_shape) == 3:
            prev = g.add(ir.Flatten(f"flat{i}"), [prev])
        prev = g.add(syn, [prev])
        prev = g.add(ir.Neuron(f"lif{i}", shape=shape, fixed=nf), [prev])
        prev_shape = tuple(shape)
    g.add(ir.Output("out"), [prev])
    return g


def emulate_chain(x: np.ndarray, layers: list, message_bits: int):
    """The chain on the emulator, fed one step late per synapse stage (module doc):
    (last layer's spikes (T, *shape), final u, final v) of one sample."""
    g = chain_graph(x.shape[1:], layers, message_bits)
    k = len(layers)
    xs = np.concatenate([np.zeros_like(x[:k]), x])[:x.shape[0]].astype(np.float64)
    sim = IntegerSimulator(g, 1)
    outs = [sim.step(torch.from_numpy(xs[t][None]))[0].numpy() for t in range(x.shape[0])]
    last = sim.neurons[f"lif{len(layers) - 1}"]
    return np.stack(outs), last.u[0].numpy(), last.v[0].numpy()
