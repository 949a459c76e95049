"""The torch.compile-fused neuron update computes exactly the eager integers, wraps included."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from snncompile.ir import fixed as fx
from snncompile.ir import nodes as ir
from snncompile.targets.emulator.integer import IntNeuronState


@pytest.mark.slow
@pytest.mark.parametrize("compare,reset", [(">", "zero"), (">=", "subtract")])
def test_fused_lif_step_equals_eager(compare, reset):
    rng = np.random.default_rng(0)
    shape = (64,)
    node = ir.Neuron("n", shape=shape, fixed=fx.NeuronFixed(
        du=1000, dv=300, vth=rng.integers(1, fx.VTH_MAX, shape), bias_mant=rng.integers(-4096, 4095, shape),
        bias_exp=3, reset_mode=reset, compare=compare, reset_value=-1000,
        u_init=rng.integers(-2 ** 23, 2 ** 23, shape), v_init=rng.integers(-2 ** 23, 2 ** 23, shape)))
    eager, fused = IntNeuronState(node, 8), IntNeuronState(node, 8)
    fused.fused = True
    wrapped = 0
    for t in range(12):
        # activations up to 2**28: u' overflows 24 and 32 bits, exercising every wrap
        a = torch.from_numpy(rng.integers(-2 ** 28, 2 ** 28, (8,) + shape))
        se, sf = eager.step(a), fused.step(a)
        assert torch.equal(se, sf) and torch.equal(eager.u, fused.u) and torch.equal(eager.v, fused.v)
        wrapped += int((a.abs() >= 2 ** 25).sum())
    assert wrapped > 0 and int(se.sum()) >= 0
