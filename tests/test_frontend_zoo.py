"""The architecture matrix: export -> ONNX -> read back -> reference run gives exactly the
spikes (or readout currents) of PyTorch eager over T steps, on random inputs.

The torch model runs in float64 (``model.double()``) like the reference target: zero
mismatches, no tolerance. A potential readout (bare Linear) is a float current; it is
compared with a relative tolerance of 1e-12 (float64 summation order differs after
BatchNorm folding), while every spike of every model must be identical.
"""
import numpy as np
import pytest

import zoo
from snncompile.ir.graph import graph_differences
from snncompile.ir.onnx_format import load_onnx, save_onnx
from snncompile.targets import run

N_SAMPLES = 16


@pytest.fixture(scope="module", params=sorted(zoo.MODELS))
def exported(request, tmp_path_factory):
    zm = zoo.MODELS[request.param]
    graph = zm.graph()
    path = tmp_path_factory.mktemp("zoo") / f"{zm.name}.onnx"
    save_onnx(graph, path)
    return zm, graph, load_onnx(path)


def test_onnx_round_trip_is_bit_identical(exported):
    _, graph, back = exported
    assert graph_differences(graph, back) == []


def test_reference_equals_pytorch_eager_float64(exported):
    zm, _, back = exported
    x = zm.inputs(N_SAMPLES, seed=1)
    expected = zm.torch_outputs(zm.build().double(), x)
    got = run(back, x).outputs
    assert got.shape == expected.shape == (N_SAMPLES, zm.timesteps, got.shape[2])
    if back.output.mode == "spikes":
        assert np.array_equal(got, expected)
        assert 0 < expected.mean() < 0.6, "output layer should fire moderately"
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_every_hidden_layer_fires(exported):
    zm, _, back = exported
    res = run(back, zm.inputs(N_SAMPLES, seed=2), record=True)
    for node in back:
        if node.kind == "Neuron":
            rate = res.layer_counts[node.name].mean() / zm.timesteps
            assert 0.001 < rate < 0.6, f"{node.name} fires at rate {rate}"


def test_float32_mismatch_rate_is_tiny(exported):
    zm, _, back = exported
    x = zm.inputs(N_SAMPLES, seed=1)
    expected = zm.torch_outputs(zm.build(), x)
    got = run(back, x).outputs
    if back.output.mode == "spikes":
        assert np.mean(got != expected) <= 0.01
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
