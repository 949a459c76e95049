"""Models as their libraries ship them, through ``snncompile export`` and the backends.

Every model is built by the library's own code (SpikingJelly 2.0's model zoo, ...) with
random weights; BatchNorm statistics are set from one calibration batch and the BN affine
chosen so that every neuron layer fires 2-40 % (checked: a silent network proves nothing).
Exported through the CLI, the reference target must give PyTorch eager's spikes exactly
and its float readouts within 1e-9 relative (float64 on both sides).

SpikingJelly's zoo imports torchvision only for ``load_state_dict_from_url``; torchvision
cannot be installed beside the CPU torch here, so this module provides that one helper as
a stub module (the product itself never imports torchvision).
"""
from __future__ import annotations

import importlib.util
import sys
import types
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from snncompile.cli import main
from snncompile.frontend.tracing import reset_state
from snncompile.ir.onnx_format import load_onnx
from snncompile.targets import run


def _stub_torchvision() -> None:
    if importlib.util.find_spec("torchvision") is not None:
        return
    def load_state_dict_from_url(*args, **kwargs):
        raise RuntimeError("pretrained weights are not available in tests")
    tv, models, utils = (types.ModuleType(n) for n in ("torchvision", "torchvision.models", "torchvision.models.utils"))
    utils.load_state_dict_from_url = load_state_dict_from_url
    tv.models, models.utils = models, utils
    sys.modules.update({"torchvision": tv, "torchvision.models": models, "torchvision.models.utils": utils})


_stub_torchvision()
from spikingjelly.activation_based import functional, neuron  # noqa: E402
from spikingjelly.activation_based.model import ms_resnet, parametric_lif_net, sew_resnet, spiking_resnet  # noqa: E402
from spikingjelly.activation_based.model import spiking_vgg  # noqa: E402


@dataclass
class RealModel:
    name: str
    make: Callable[[], nn.Module]
    input_shape: tuple
    timesteps: int
    #: "step": one call per step (single-step SpikingJelly); "multistep": model(x[T, N, ...]);
    #: "mean": model(static image) repeats it T times inside and returns the mean over time.
    style: str
    #: BatchNorm affine (gamma, beta) of the calibration: sets the neurons' input currents.
    bn: tuple = (0.5, 0.3)
    #: Per-BatchNorm (gamma, beta) by module path, where one layer needs other currents.
    bn_at: dict = None
    #: Gain on every Linear's weights (layers without BatchNorm: the default init is too quiet).
    linear_gain: float = 1.0
    #: Gain on every Conv2d's weights (the same, for convolutions without BatchNorm).
    conv_gain: float = 1.0

    def build(self) -> nn.Module:
        torch.manual_seed(0)
        model = self.make().double().eval()
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.Linear):
                    m.weight.mul_(self.linear_gain)
                elif isinstance(m, nn.Conv2d):
                    m.weight.mul_(self.conv_gain)
        if self.style == "multistep":
            functional.set_step_mode(model, "m")
        _calibrate_batchnorm(model, self, self.bn, self.bn_at or {})
        return model

    def inputs(self, n: int, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).random((n,) + self.input_shape)

    def eager(self, model: nn.Module, x: np.ndarray) -> np.ndarray:
        """(n, T, n_out) per-step outputs; (n, n_out) for a model that returns a time mean."""
        xt = torch.from_numpy(x)
        reset_state(model)
        with torch.no_grad():
            if self.style == "step":
                out = torch.stack([model(xt) for _ in range(self.timesteps)], 1)
            elif self.style == "multistep":
                out = model(xt.unsqueeze(0).repeat((self.timesteps,) + (1,) * xt.ndim)).transpose(0, 1)
            else:
                out = model(xt)
        reset_state(model)
        return out.numpy()


def _calibrate_batchnorm(model: nn.Module, rm: RealModel, affine: tuple, at: dict) -> None:
    """Running statistics from one batch (so BN normalises), then the affine (gamma, beta)."""
    bns = [(p, m) for p, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for path, bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration calls
        gamma, beta = at.get(path, affine)
        with torch.no_grad():
            bn.weight.fill_(gamma)
            bn.bias.fill_(beta)
        bn.train()
    rm.eager(model, rm.inputs(4, seed=99))
    model.eval()


def _resnet_kwargs():
    return dict(spiking_neuron=neuron.IFNode, num_classes=10)


MODELS = {m.name: m for m in [
    RealModel("spiking_resnet18", lambda: spiking_resnet.spiking_resnet18(**_resnet_kwargs()), (3, 16, 16), 4, "step",
              (0.4, 0.0)),
    RealModel("spiking_resnet18_m", lambda: spiking_resnet.spiking_resnet18(**_resnet_kwargs()), (3, 16, 16), 4,
              "multistep", (0.4, 0.0)),
    RealModel("sew_resnet18_add", lambda: sew_resnet.sew_resnet18(cnf="ADD", **_resnet_kwargs()), (3, 16, 16), 4,
              "multistep"),
    RealModel("sew_resnet18_and", lambda: sew_resnet.sew_resnet18(cnf="AND", **_resnet_kwargs()), (3, 16, 16), 4,
              "step", (0.5, 0.5)),
    RealModel("sew_resnet18_iand", lambda: sew_resnet.sew_resnet18(cnf="IAND", **_resnet_kwargs()), (3, 16, 16), 4,
              "multistep", (0.5, 0.2), {"bn1": (0.3, -0.1)}),
    RealModel("ms_resnet18", lambda: ms_resnet.ms_resnet18(T=4, num_classes=10), (3, 16, 16), 4, "mean", (0.45, 0.05)),
    RealModel("max_resnet18", lambda: ms_resnet.max_resnet18(T=4, num_classes=10), (3, 16, 16), 4, "mean", (0.7, 0.3)),
    RealModel("plif_mnist_net", lambda: parametric_lif_net.MNISTNet(channels=8, spiking_neuron=neuron.ParametricLIFNode),
              (1, 28, 28), 4, "multistep", (0.6, 0.4), linear_gain=12.0),
    RealModel("plif_dvs_gesture_net", lambda: parametric_lif_net.DVSGestureNet(
        channels=4, spiking_neuron=neuron.ParametricLIFNode), (2, 128, 128), 4, "multistep", (0.6, 0.4),
        linear_gain=12.0),
]}


def export(model: nn.Module, rm: RealModel, tmp_path):
    path = tmp_path / f"{rm.name}.pt"
    torch.save(model, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = CliRunner().invoke(main, ["export", str(path), "--input-shape", ",".join(map(str, rm.input_shape)),
                                           "--timesteps", str(rm.timesteps), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    return load_onnx(tmp_path / "m.onnx")


def _check_rates(graph, res, T):
    rates = {n.name: float(res.layer_counts[n.name].mean()) / T for n in graph if n.kind == "Neuron"}
    bad = {k: round(v, 3) for k, v in rates.items() if not 0.02 <= v <= 0.4}
    assert not bad, f"layers outside 2-40 % firing: {bad}"
    return rates


#: ResNet-18s that take tens of seconds each on a loaded 2-core machine: run by ``make test``.
SLOW = {"spiking_resnet18", "spiking_resnet18_m", "sew_resnet18_and", "ms_resnet18", "max_resnet18"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(MODELS)])
def test_reference_equals_pytorch_eager(name, tmp_path):
    rm = MODELS[name]
    model = rm.build()
    graph = export(model, rm, tmp_path)
    x = rm.inputs(2, seed=0)
    res = run(graph, x, record=True)
    _check_rates(graph, res, rm.timesteps)
    expected = rm.eager(model, x)
    got = res.outputs.mean(1) if rm.style == "mean" else res.outputs
    assert graph.output.mode == "potential"
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())


# -- SpikingJelly's spiking VGG family: 5 max-pools to 1x1, then the 7x7 AdaptiveAvgPool2d that
# copies it (folded into the first Linear of the 4096-wide classifier) -------------------------
def _vgg(arch: str) -> Callable[[], nn.Module]:
    def make():
        # built in float64 directly: the classifier's 25088 x 4096 Linear is 800 MB, not twice that
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            return getattr(spiking_vgg, arch)(spiking_neuron=neuron.IFNode, num_classes=10)
        finally:
            torch.set_default_dtype(previous)
    return make


VGG = {m.name: m for m in [
    RealModel("spiking_vgg11_bn", _vgg("spiking_vgg11_bn"), (3, 32, 32), 4, "step", (0.5, 0.3)),
    RealModel("spiking_vgg16_bn", _vgg("spiking_vgg16_bn"), (3, 32, 32), 4, "step", (0.5, 0.3)),
    RealModel("spiking_vgg11", _vgg("spiking_vgg11"), (3, 32, 32), 4, "step", conv_gain=2.2, linear_gain=2.0),
]}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(VGG))
def test_spiking_vgg_family_equals_pytorch_eager(name):
    """Exported through the frontend API (the CLI's torch.save of a 1 GB model would double the
    memory): the same capture as ``snncompile export``."""
    from snncompile.frontend import from_torch
    rm = VGG[name]
    model = rm.build()
    graph = from_torch(model, rm.input_shape, rm.timesteps, name=rm.name)
    head = [n.kind for n in graph][-8:]
    assert head[:3] == ["MaxPool2d", "Flatten", "Linear"] and graph.node("classifier.0").weight.shape == (4096, 512)
    x = rm.inputs(2, seed=0)
    res = run(graph, x, record=True)
    _check_rates(graph, res, rm.timesteps)
    expected = rm.eager(model, x)
    np.testing.assert_allclose(res.outputs, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())


# -- snnTorch: the library's neurons in tutorial-style models --------------------------------
import snntorch as snn  # noqa: E402

import zoo  # noqa: E402


class SnnTorchRecurrent(nn.Module):
    """Tutorial loop over x[t] with explicit state, a recurrent or Lapicque hidden layer."""

    def __init__(self, T: int, kind: str):
        super().__init__()
        self.kind = kind
        self.fc1 = nn.Linear(2 * 8 * 8, 16)
        self.hidden = {
            "rleaky": lambda: snn.RLeaky(beta=0.8, linear_features=16, surrogate_disable=True),
            "rleaky_one_to_one": lambda: snn.RLeaky(beta=0.8, all_to_all=False, V=0.5, surrogate_disable=True),
            "rsynaptic": lambda: snn.RSynaptic(alpha=0.6, beta=0.8, linear_features=16, surrogate_disable=True),
            "lapicque": lambda: snn.Lapicque(R=2.0, C=1.5, time_step=0.5, surrogate_disable=True),
        }[kind]()
        self.fc2 = nn.Linear(16, 10)
        self.out = snn.Leaky(beta=0.9, surrogate_disable=True)

    def forward(self, x):
        if isinstance(self.hidden, snn.RLeaky):
            spk, mem = self.hidden.init_rleaky()
        elif isinstance(self.hidden, snn.RSynaptic):
            spk, syn, mem = self.hidden.init_rsynaptic()
        else:
            mem = self.hidden.init_lapicque()
        mem_out = self.out.init_leaky()
        out = []
        for t in range(x.shape[0]):  # the loop count comes from the data
            cur = self.fc1(x[t].flatten(1))
            if isinstance(self.hidden, snn.RLeaky):
                spk, mem = self.hidden(cur, spk, mem)
            elif isinstance(self.hidden, snn.RSynaptic):
                spk, syn, mem = self.hidden(cur, spk, syn, mem)
            else:
                spk, mem = self.hidden(cur, mem)
            s, mem_out = self.out(self.fc2(spk), mem_out)
            out.append(s)
        return torch.stack(out)


def snntorch_tutorial6_csnn(T: int) -> nn.Module:
    """snnTorch tutorial 6's convolutional SNN: init_hidden=True, conv (with bias) -> MaxPool ->
    Leaky, and a last layer with output=True (returns spikes and membrane)."""
    kw = dict(beta=0.5, init_hidden=True, surrogate_disable=True)
    return nn.Sequential(nn.Conv2d(2, 6, 3), nn.MaxPool2d(2), snn.Leaky(**kw),
                         nn.Conv2d(6, 8, 3), snn.Leaky(**kw), nn.Flatten(),
                         nn.Linear(8 * 1 * 1, 10), snn.Leaky(output=True, **kw))


def snntorch_rleaky_init_hidden(T: int) -> nn.Module:
    """RLeaky with init_hidden=True (its spikes and membrane kept inside the module) in a Sequential."""
    kw = dict(init_hidden=True, surrogate_disable=True)
    return nn.Sequential(nn.Flatten(), nn.Linear(2 * 8 * 8, 16), snn.RLeaky(beta=0.8, linear_features=16, **kw),
                         nn.Linear(16, 10), snn.Leaky(beta=0.9, **kw))


STK = {m.name: m for m in [
    zoo.ZooModel("snntorch_rleaky_init_hidden", snntorch_rleaky_init_hidden, (2, 8, 8), 8, "step", "spikes", 1.5),
    zoo.ZooModel("snntorch_rleaky", lambda T: SnnTorchRecurrent(T, "rleaky"), (2, 8, 8), 8, "loop", "spikes", 1.5),
    zoo.ZooModel("snntorch_rleaky_one_to_one", lambda T: SnnTorchRecurrent(T, "rleaky_one_to_one"), (2, 8, 8), 8,
                 "loop", "spikes", 1.5),
    zoo.ZooModel("snntorch_rsynaptic", lambda T: SnnTorchRecurrent(T, "rsynaptic"), (2, 8, 8), 8, "loop", "spikes", 1.0),
    zoo.ZooModel("snntorch_lapicque", lambda T: SnnTorchRecurrent(T, "lapicque"), (2, 8, 8), 8, "loop", "spikes", 4.0),
    zoo.ZooModel("snntorch_tutorial6", snntorch_tutorial6_csnn, (2, 8, 8), 6, "step", "spikes", 3.0),
]}


def _export_zoo(zm: zoo.ZooModel, model: nn.Module, tmp_path):
    path = tmp_path / f"{zm.name}.pt"
    torch.save(model, path)
    result = CliRunner().invoke(main, ["export", str(path), "--input-shape", ",".join(map(str, zm.input_shape)),
                                       "--timesteps", str(zm.timesteps), "-o", str(tmp_path / "m.onnx"), "--trust-code"])
    assert result.exit_code == 0, result.output
    return load_onnx(tmp_path / "m.onnx")


@pytest.mark.parametrize("name", sorted(STK))
def test_snntorch_models_equal_pytorch_eager(name, tmp_path):
    zm = STK[name]
    model = zm.build()
    graph = _export_zoo(zm, model, tmp_path)
    x = zm.inputs(12, seed=0)
    res = run(graph, x, record=True)
    _check_rates(graph, res, zm.timesteps)
    expected = zm.torch_outputs(model.double(), x)
    assert np.array_equal(res.outputs, expected)


def test_snntorch_alpha_is_refused_with_the_reason(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4), snn.Alpha(alpha=0.9, beta=0.8, init_hidden=True, surrogate_disable=True))
    torch.save(model, tmp_path / "a.pt")
    result = CliRunner().invoke(main, ["export", str(tmp_path / "a.pt"), "--input-shape", "4", "-T", "4"])
    assert result.exit_code == 1
    assert "module '1' (snntorch._neurons.alpha.Alpha): snnTorch Alpha has no exact mapping" in result.output
    assert "resets its synaptic current" in result.output


def test_conv_bias_moves_past_the_max_pool_into_the_neuron(tmp_path):
    zm = STK["snntorch_tutorial6"]
    graph = _export_zoo(zm, zm.build(), tmp_path)
    assert graph.node("0").bias is None and graph.node("1").kind == "MaxPool2d"
    assert np.shape(graph.node("2").bias) == (6, 1, 1) and np.any(graph.node("2").bias)


@pytest.mark.lava
@pytest.mark.slow
@pytest.mark.parametrize("name", ["snntorch_rleaky", "snntorch_rsynaptic", "snntorch_tutorial6"])
def test_emulator_fixed_equals_lava_fixed(name):
    from snncompile.frontend import from_torch
    from snncompile.quantize import quantize
    from snncompile.targets import emulator, lava

    zm = STK[name]
    graph = from_torch(zm.build(), zm.input_shape, zm.timesteps)
    qg, _ = quantize(graph, calib=zm.inputs(16, 0))
    x = zm.inputs(2, 1)
    em = emulator.run(qg, x, precision="fixed", record=True)
    lv = lava.run(qg, x, precision="fixed", record=True)
    assert em.outputs.sum() > 0 and np.array_equal(lv.outputs, em.outputs)
    for node in qg:
        if node.kind == "Neuron":
            assert np.array_equal(lv.layer_counts[node.name], em.layer_counts[node.name]), node.name


def _resnet_block_net() -> nn.Module:
    """SpikingJelly's own Spiking ResNet BasicBlock (shortcut spikes added to the conv's
    current before the neuron) in a tiny net."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), neuron.IFNode(),
                         spiking_resnet.BasicBlock(8, 8, spiking_neuron=neuron.IFNode),
                         nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))


BLOCK = RealModel("spiking_resnet_block", _resnet_block_net, (3, 8, 8), 4, "step", (0.5, 0.2))


def test_spiking_resnet_block_quantizes_with_its_shortcut_through_an_identity_synapse(tmp_path):
    from snncompile.quantize import quantize
    model = BLOCK.build()
    graph = export(model, BLOCK, tmp_path)
    res = run(graph, BLOCK.inputs(2, 0), record=True)
    _check_rates(graph, res, BLOCK.timesteps)
    np.testing.assert_allclose(res.outputs, BLOCK.eager(model, BLOCK.inputs(2, 0)), rtol=1e-9, atol=1e-12)
    # used to fail: "all weights round to 0 at scale 1" (the raw shortcut spikes fixed the Add's scale)
    qg, _ = quantize(graph, calib=BLOCK.inputs(8, 1))
    assert qg.node("2.to_3.add").kind == "Conv2d" and qg.node("3.conv2").fixed.weight.any()


@pytest.mark.lava
@pytest.mark.slow
def test_spiking_resnet_block_emulator_fixed_equals_lava_fixed(tmp_path):
    from snncompile.quantize import quantize
    from snncompile.targets import emulator, lava
    graph = export(BLOCK.build(), BLOCK, tmp_path)
    qg, _ = quantize(graph, calib=BLOCK.inputs(8, 1))
    x = BLOCK.inputs(2, 2)
    em = emulator.run(qg, x, precision="fixed", record=True)
    lv = lava.run(qg, x, precision="fixed", record=True)
    assert np.any(em.outputs) and np.array_equal(lv.outputs, em.outputs)
    for node in qg:
        if node.kind == "Neuron":
            assert em.layer_counts[node.name].sum() > 0
            assert np.array_equal(lv.layer_counts[node.name], em.layer_counts[node.name]), node.name


def _sew_block_net(cnf: str) -> Callable[[], nn.Module]:
    """SpikingJelly's own SEW BasicBlock with connect function ``cnf`` in a tiny net."""
    def make():
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), neuron.IFNode(),
                             sew_resnet.BasicBlock(8, 8, spiking_neuron=neuron.IFNode, cnf=cnf),
                             nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    return make


SEW_BLOCKS = {cnf: RealModel(f"sew_block_{cnf}", _sew_block_net(cnf), (3, 8, 8), 4, "step", bn)
              for cnf, bn in [("ADD", (0.5, 0.2)), ("AND", (0.5, 0.6)), ("IAND", (0.5, 0.2))]}
SEW_BLOCKS["AND"].bn_at = {"1": (0.5, 0.3)}  # the stem fires less, the block more


@pytest.mark.parametrize("cnf", sorted(SEW_BLOCKS))
def test_sew_connect_functions_are_exact_spike_logic(cnf, tmp_path):
    rm = SEW_BLOCKS[cnf]
    model = rm.build()
    graph = export(model, rm, tmp_path)
    x = rm.inputs(4, 0)
    res = run(graph, x, record=True)
    rates = _check_rates(graph, res, rm.timesteps)
    np.testing.assert_allclose(res.outputs, rm.eager(model, x), rtol=1e-9, atol=1e-12)
    if cnf != "ADD":
        logic = graph.node(f"3.{cnf.lower()}")
        assert logic.kind == "Neuron" and f"3.{cnf.lower()}" in rates


@pytest.mark.lava
@pytest.mark.slow
@pytest.mark.parametrize("cnf", ["AND", "IAND"])
def test_sew_logic_emulator_fixed_equals_lava_fixed(cnf, tmp_path):
    from snncompile.quantize import quantize
    from snncompile.targets import emulator, lava
    rm = SEW_BLOCKS[cnf]
    qg, _ = quantize(export(rm.build(), rm, tmp_path), calib=rm.inputs(8, 1))
    x = rm.inputs(2, 2)
    em = emulator.run(qg, x, precision="fixed", record=True)
    lv = lava.run(qg, x, precision="fixed", record=True)
    assert np.array_equal(lv.outputs, em.outputs)
    for node in qg:
        if node.kind == "Neuron":
            assert em.layer_counts[node.name].sum() > 0, node.name
            assert np.array_equal(lv.layer_counts[node.name], em.layer_counts[node.name]), node.name
