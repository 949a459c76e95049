"""The torch engine's fast mechanics give the integers of its int64 paths, bit for bit.

The compiled neuron update (``lif_kernel``: one pass, int32 lanes, in the activations' memory
order), channels-last convs, the separable max-pool and the exact float Add are checked
against the int64 paths written out (``IntNeuronState.fast`` and ``_IntSynapse.float_paths``
off) on the zoo's spiking transformers in fixed point, and per neuron near every wrap.
Timings are in benchmarks/ex5_spikformer.py, not here.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from snncompile.ir import fixed as fx
from snncompile.ir import nodes as ir
from snncompile.quantize import quantize
from snncompile.targets import emulator
from snncompile.targets.emulator.integer import IntNeuronState, _IntSynapse, max_pool

ZOO = ["qkformer", "sdt_v1", "sdt_v2", "spikformer_cifar", "spikformer_imagenet", "spikingformer", "spikingresformer"]


def _int64_everywhere(fn):
    saved = IntNeuronState.fast, _IntSynapse.float_paths
    IntNeuronState.fast, _IntSynapse.float_paths = False, False
    try:
        return fn()
    finally:
        IntNeuronState.fast, _IntSynapse.float_paths = saved


@pytest.mark.parametrize("name", ZOO)
def test_zoo_fast_torch_engine_equals_int64_paths(zoo_export, name):
    zm, g = zoo_export(name)
    x = zm.inputs(8, seed=5)
    qg, _ = quantize(g, calib=x[:4])
    fast = emulator.run(qg, x, precision="fixed", record=True, engine="torch")
    slow = _int64_everywhere(lambda: emulator.run(qg, x, precision="fixed", record=True, engine="torch"))
    assert np.array_equal(fast.outputs, slow.outputs)
    assert fast.layer_counts.keys() == slow.layer_counts.keys() == {n.name for n in qg} - {qg.output.name}
    for node in qg:
        if node is qg.output:
            continue
        assert np.array_equal(fast.layer_counts[node.name], slow.layer_counts[node.name]), node.name
        if isinstance(node, ir.Neuron):
            assert 0.01 <= fast.layer_counts[node.name].mean() / zm.timesteps <= 0.5, node.name


def _neuron(rng, shape, du, reset, compare, bias_exp=6):
    return ir.Neuron("n", shape=shape, fixed=fx.NeuronFixed(
        du=du, dv=rng.integers(0, 4096, shape), vth=rng.integers(1, 2 ** 17, shape),
        bias_mant=rng.integers(-4096, 4096, shape), bias_exp=bias_exp, reset_mode=reset, compare=compare,
        reset_value=0 if du == 4095 else rng.integers(-2 ** 22, 2 ** 22, shape),
        u_init=rng.integers(-2 ** 31, 2 ** 31, shape), v_init=rng.integers(-2 ** 23, 2 ** 23, shape)))


@pytest.mark.parametrize("du,dv", [(-1, None), (4095, None), (7, 0)])
@pytest.mark.parametrize("compare,reset", [(">", "zero"), (">=", "subtract"), (">", "none")])
@pytest.mark.parametrize("channels_last", [False, True])
def test_compiled_neuron_update_equals_int64_step_near_every_wrap(du, dv, compare, reset, channels_last):
    """u starts anywhere in int32 and activations reach 2**30 (u and v wrap, fold, saturate);
    per-neuron parameters; channels-last activations give the same states and spikes."""
    rng = np.random.default_rng(7)
    shape = (6, 5, 4)
    node = _neuron(rng, shape, du, reset, compare)
    if dv is not None:
        node.fixed.dv = np.zeros(shape, np.int64)
    kernel, exact = IntNeuronState(node, 9), IntNeuronState(node, 9)
    exact.fast = False
    spikes = 0
    for t in range(16):
        peak = 2 ** [6, 12, 17, 24, 30][t % 5]
        a = torch.from_numpy(rng.integers(-peak, peak + 1, (9,) + shape).astype(np.float64))
        if channels_last:
            a = a.contiguous(memory_format=torch.channels_last)
        s_kernel, s_exact = kernel.step(a), exact.step(a)
        assert kernel.v.dtype == torch.int32 and exact.v.dtype == torch.int64
        assert torch.equal(s_kernel, s_exact)
        assert torch.equal(kernel.u.to(torch.int64), exact.u) and torch.equal(kernel.v.to(torch.int64), exact.v)
        spikes += int(s_exact.sum())
    assert 0.05 <= spikes / (16 * 9 * 120) <= 0.95


def test_a_parameter_beyond_32_bits_takes_the_int64_step():
    rng = np.random.default_rng(8)
    node = _neuron(rng, (30,), 7, "zero", ">", bias_exp=np.where(np.arange(30) == 3, 20, 6))
    state = IntNeuronState(node, 4)
    assert state.kernel_par is None
    state.step(torch.ones(4, 30))
    assert state.v.dtype == torch.int64


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("kernel,stride,padding", [((3, 3), (2, 2), (1, 1)), ((2, 3), (1, 2), (0, 1)),
                                                   ((2, 2), (2, 2), (0, 0)), ((3, 2), (3, 1), (1, 0))])
def test_max_pool_equals_torch(kernel, stride, padding, channels_last):
    m = torch.randint(-2 ** 20, 2 ** 20, (3, 4, 11, 10), generator=torch.Generator().manual_seed(0)).float()
    if channels_last:
        m = m.contiguous(memory_format=torch.channels_last)
    assert torch.equal(max_pool(m, kernel, stride, padding), F.max_pool2d(m, kernel, stride, padding))
