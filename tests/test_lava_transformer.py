"""Spiking transformers on Lava (issue 12): every zoo family as Lava processes.

Lava float == the reference == PyTorch eager (0 spike-count mismatches at every neuron, readouts
within 1e-9), and Lava fixed_pt == the emulator in fixed point (spikes and readout integers
identical), each on 10 samples in one Lava run; every layer fires (2-40 %).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from snncompile.frontend import MappingWarning, from_torch
from snncompile.ir import nodes as ir
from snncompile.quantize import quantize
from snncompile.targets import emulator, reference
from stubs import timm_helpers
from transformer_eager import PER_SAMPLE_EAGER, eager_run

pytestmark = [pytest.mark.lava, pytest.mark.slow]
NAMES = ["qkformer", "sdt_v1", "sdt_v2", "spikformer_cifar", "spikformer_imagenet", "spikingformer",
         "spikingresformer"]
N = 10


def _lava():
    from snncompile.targets import lava
    return lava


@pytest.fixture(scope="module")
def tzoo():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with timm_helpers.installed():
        import transformer_zoo
        yield transformer_zoo
    torch.set_num_threads(threads)


def _neurons(graph) -> list[str]:
    return [n.name for n in graph if isinstance(n, ir.Neuron)]


def _assert_same_spikes(graph, got, expected, what):
    for name in _neurons(graph):
        diff = int(np.sum(got.layer_counts[name] != expected.layer_counts[name]))
        assert diff == 0, f"{what}: {name}: {diff} neurons with different spike counts"


@pytest.mark.parametrize("name", NAMES)
def test_zoo_family_on_lava_float_and_fixed(tzoo, name):
    zm = tzoo.MODELS[name]
    model = zm.build().double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MappingWarning)
        graph = from_torch(model, zm.input_shape, zm.timesteps, name=name)
    x = zm.inputs(N, seed=5)
    neurons = _neurons(graph)
    # float: Lava == reference == PyTorch eager
    eager_out, eager_counts, _ = eager_run(tzoo, zm, model, x, name in PER_SAMPLE_EAGER)
    ref = reference.run(graph, x, record=True)
    lf = _lava().run(graph, x, precision="float", record=neurons)
    scale = np.abs(eager_out).max()
    assert np.abs(lf.outputs - ref.outputs).max() <= 1e-9 * scale
    assert np.abs(lf.outputs - eager_out).max() <= 1e-9 * scale
    assert np.ptp(lf.outputs, axis=0).max() > 1e-3, "outputs do not depend on the input"
    _assert_same_spikes(graph, lf, ref, "Lava float vs reference")
    for node in neurons:
        assert np.array_equal(lf.layer_counts[node], eager_counts[node]), f"Lava float vs eager: {node}"
        rate = lf.layer_counts[node].mean() / zm.timesteps
        assert 0.02 <= rate <= 0.40, f"{name}: {node} fires at {rate:.3f}"
    # fixed point: Lava fixed_pt == emulator, spike for spike, readout integer for integer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qg, _ = quantize(graph, calib=zm.inputs(8, seed=0))
    em = emulator.run(qg, x, precision="fixed", record=True)
    lx = _lava().run(qg, x, precision="fixed", record=_neurons(qg))
    assert lx.outputs.dtype.kind == "i" and np.array_equal(lx.outputs, em.outputs)
    assert np.ptp(lx.outputs, axis=0).max() > 0
    _assert_same_spikes(qg, lx, em, "Lava fixed vs emulator")
    for node in _neurons(qg):
        rate = lx.layer_counts[node].mean() / zm.timesteps
        assert 0.01 <= rate <= 0.5, f"{name} fixed: {node} fires at {rate:.3f}"
