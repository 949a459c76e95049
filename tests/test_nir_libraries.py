"""NIR written by snnTorch's and SpikingJelly's own exporters, read back by us: the same
spikes as the PyTorch model where NIR can express it, a precise warning or error where not."""
import numpy as np
import pytest
import torch

import snntorch as snn  # noqa: E402
from spikingjelly.activation_based import neuron as sj_neuron  # noqa: E402
from snntorch import utils as snn_utils  # noqa: E402
from spikingjelly.activation_based import functional, layer  # noqa: E402

from snncompile.errors import SnnCompileError  # noqa: E402
from snncompile.interop.library_nir import library_to_nir  # noqa: E402
from snncompile.interop.nir import read_nir  # noqa: E402
from snncompile.targets import run  # noqa: E402


def _snntorch_net(reset="zero", neuron_cls=None):
    torch.manual_seed(0)
    neuron_cls = neuron_cls or snn.Leaky
    return torch.nn.Sequential(
        torch.nn.Linear(6, 8),
        neuron_cls(beta=torch.full((8,), 0.85), threshold=torch.full((8,), 1.0), init_hidden=True,
                   reset_mechanism=reset),
        torch.nn.Linear(8, 4),
        snn.Leaky(beta=torch.linspace(0.5, 0.95, 4), threshold=torch.full((4,), 0.7), init_hidden=True,
                  reset_mechanism="zero", output=True),
    )


def _snntorch_outputs(net, x):
    snn_utils.reset(net)
    with torch.no_grad():
        out = [net(x[t])[0] for t in range(x.shape[0])]
    snn_utils.reset(net)
    return torch.stack(out, 1).numpy()


def test_snntorch_leaky_zero_reset_round_trip_gives_the_same_spikes(tmp_path):
    net = _snntorch_net()
    x = (torch.rand(40, 16, 6, generator=torch.Generator().manual_seed(1)) < 0.5).float() * 1.5
    expect = _snntorch_outputs(net, x)
    _, warnings = library_to_nir(net, x[0], path=tmp_path / "snt.nir")
    assert warnings == []
    graph = read_nir(tmp_path / "snt.nir")  # dt implied by snnTorch's r = tau/dt
    assert float(graph.meta["nir.dt"]) == pytest.approx(1e-4)
    assert graph.meta["nir.r_convention.1"].startswith("r=tau/dt")
    res = run(graph, x.permute(1, 0, 2).numpy())
    assert read_nir(tmp_path / "snt.nir", dt=5e-5).meta["nir.dt_source"] == (
        "given (the file suggests dt = 0.0001, implied by r = tau/dt or r = 1/dt of 1, 3)")
    assert expect.sum() > 50
    np.testing.assert_array_equal(res.outputs, expect)


def test_snntorch_subtract_reset_is_warned_by_module_name(tmp_path):
    net = _snntorch_net(reset="subtract")
    _, warnings = library_to_nir(net, torch.zeros(1, 6), path=tmp_path / "sub.nir")
    assert warnings == [
        "module '1' (snntorch.Leaky): reset_mechanism='subtract' is written by snnTorch's NIR exporter "
        "as a reset to zero (NIR has no subtractive or no-reset field): the NIR graph's spikes will "
        "differ from the model's"]
    # and they do differ: the warning is not hypothetical
    x = (torch.rand(40, 16, 6, generator=torch.Generator().manual_seed(1)) < 0.5).float() * 1.5
    res = run(read_nir(tmp_path / "sub.nir"), x.permute(1, 0, 2).numpy())
    assert not np.array_equal(res.outputs, _snntorch_outputs(net, x))


def test_snntorch_synaptic_zero_reset_quirk_is_warned():
    _, warnings = library_to_nir(_snntorch_net(neuron_cls=_synaptic), torch.zeros(1, 6))
    assert warnings == ["module '1' (snntorch.Synaptic): snnTorch's Synaptic reset to zero also zeroes "
                        "the synaptic current; NIR resets only v after a spike: the NIR graph's spikes "
                        "will differ"]


def _synaptic(beta, threshold, init_hidden, reset_mechanism):
    return snn.Synaptic(alpha=torch.full((8,), 0.6), beta=beta, threshold=threshold,
                        init_hidden=init_hidden, reset_mechanism=reset_mechanism)


def test_snntorch_module_its_exporter_would_drop_is_an_error():
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(),
                              snn.Leaky(beta=torch.full((4,), 0.9), init_hidden=True, reset_mechanism="zero"))
    with pytest.raises(SnnCompileError, match=r"module '1' \(ReLU\): snnTorch's NIR exporter does not export ReLU"):
        library_to_nir(net, torch.zeros(1, 4))


def _sj_net():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        layer.Conv2d(1, 4, 3, padding=1), sj_neuron.LIFNode(tau=2.0, v_reset=0.0),
        layer.AvgPool2d(2), layer.Flatten(), layer.Linear(64, 10),
        sj_neuron.LIFNode(tau=3.0, decay_input=False, v_reset=-0.1, v_threshold=0.5),
        layer.Linear(10, 5), sj_neuron.IFNode(v_reset=0.0, v_threshold=0.6))
    with torch.no_grad():
        net[0].weight.mul_(3.0)
        net[4].weight.mul_(3.0)
        net[6].weight.mul_(2.0)
    functional.set_step_mode(net, "m")
    return net


def test_spikingjelly_round_trip_gives_the_same_spikes(tmp_path):
    net = _sj_net()
    x = (torch.rand(25, 6, 1, 8, 8, generator=torch.Generator().manual_seed(2)) < 0.4).float()
    functional.reset_net(net)
    with torch.no_grad():
        expect = net(x).permute(1, 0, 2).numpy()
    functional.reset_net(net)
    _, warnings = library_to_nir(net, x[:, :1], path=tmp_path / "sj.nir")
    assert len(warnings) == 3 and all("fires on v >= v_threshold" in w for w in warnings)
    assert warnings[0].startswith("module '1' (spikingjelly.LIFNode)")
    graph = read_nir(tmp_path / "sj.nir")
    assert graph.meta["nir.r_convention._7"].startswith("r=1/dt")
    res = run(graph, x.permute(1, 0, 2, 3, 4).numpy())
    assert expect.sum() > 30
    np.testing.assert_array_equal(res.outputs, expect)


def test_spikingjelly_batchnorm_maxpool_and_soft_reset_are_named_errors():
    bn = torch.nn.Sequential(layer.Conv2d(1, 2, 3), layer.BatchNorm2d(2), sj_neuron.IFNode())
    with pytest.raises(SnnCompileError, match=r"module '1' \(BatchNorm2d\): NIR has no BatchNorm node"):
        library_to_nir(bn, torch.zeros(1, 1, 5, 5))
    mp = torch.nn.Sequential(layer.Conv2d(1, 2, 3), sj_neuron.IFNode(), layer.MaxPool2d(2))
    with pytest.raises(SnnCompileError, match=r"module '2' \(MaxPool2d\): NIR has no MaxPool node"):
        library_to_nir(mp, torch.zeros(1, 1, 5, 5))
    soft = torch.nn.Sequential(layer.Linear(3, 2), sj_neuron.IFNode(v_reset=None))
    with pytest.raises(SnnCompileError, match=r"module '1' \(spikingjelly.IFNode\): soft reset"):
        library_to_nir(soft, torch.zeros(1, 3))


def test_snntorch_scalar_beta_that_its_exporter_cannot_shape_is_named():
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), snn.Leaky(beta=0.9, init_hidden=True, reset_mechanism="zero"))
    with pytest.raises(SnnCompileError, match=r"module '1' \(snntorch.Leaky\): snnTorch's NIR exporter needs "
                                              r"beta, threshold as tensors with one value per neuron"):
        library_to_nir(net, torch.zeros(1, 4))
