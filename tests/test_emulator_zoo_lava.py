"""Emulator fixed == the Lava target in fixed point, spike for spike, on the architecture matrix.

20 samples per zoo model, same quantized graph for both; every neuron layer's spike
counts and the outputs must be identical (0 mismatches).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from snncompile.ir import nodes as ir
from snncompile.quantize import quantize
from snncompile.targets import emulator

sys.path.insert(0, str(Path(__file__).parent))
import zoo  # noqa: E402

pytestmark = [pytest.mark.lava, pytest.mark.slow]
N = 20


def _lava():
    from snncompile.targets import lava
    return lava


@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_emulator_equals_lava_fixed(name):
    m = zoo.MODELS[name]
    x = m.inputs(N, 1)
    qg, _ = quantize(m.graph(), calib=m.inputs(16, 0))
    em = emulator.run(qg, x, precision="fixed", record=True)
    lv = _lava().run(qg, x, precision="fixed", record=True)
    assert lv.outputs.shape == em.outputs.shape
    assert np.array_equal(lv.outputs, em.outputs), f"{int(np.sum(lv.outputs != em.outputs))} output mismatches"
    for node in qg:
        if isinstance(node, ir.Neuron):
            assert node.name in lv.layer_counts, f"Lava recorded no counts for {node.name}"
            diff = int(np.sum(lv.layer_counts[node.name] != em.layer_counts[node.name]))
            assert diff == 0, f"layer {node.name}: {diff} neurons with different spike counts"
