"""Legacy SpikingJelly (``spikingjelly.clock_driven``, 0.0.0.0.12) on SpikingJelly 2.0.

The neurons are held to the legacy equations written out below from the 0.0.0.0.12 source
(``spikingjelly/clock_driven/neuron.py``, release commit 1171f524): charge, then
``heaviside(v - v_threshold)``, then hard reset ``(1 - s) * v + s * v_reset`` or soft reset
``v - s * v_threshold``. A model file written the way the official transformer code is
exports from its checkpoint with ``--model`` and its reference run equals PyTorch eager.
"""
import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from snncompile.cli import main
from snncompile.frontend import legacy_spikingjelly
from snncompile.ir.onnx_format import load_onnx
from snncompile.targets import run
from test_export_cli import _assert_fails

legacy_spikingjelly.install()
from spikingjelly.clock_driven import functional, layer, neuron, surrogate  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "legacy_clock_driven_net.py"


# -- the legacy equations, from clock_driven/neuron.py at 0.0.0.0.12 ----------------------
def legacy_charge(v, x, kind, tau, decay_input, v_reset):
    if kind == "IF":
        return v + x
    if kind == "PLIF":  # 1/tau is w.sigmoid(), multiplied
        k = tau
        if decay_input:
            return v + (x - v) * k if v_reset is None or v_reset == 0. else v + (x - (v - v_reset)) * k
        return v * (1. - k) + x if v_reset is None or v_reset == 0. else v - (v - v_reset) * k + x
    if decay_input:
        return v + (x - v) / tau if v_reset is None or v_reset == 0. else v + (x - (v - v_reset)) / tau
    return v * (1. - 1. / tau) + x if v_reset is None or v_reset == 0. else v - (v - v_reset) / tau + x


def legacy_run(x_seq, kind, tau=2., decay_input=True, v_threshold=1., v_reset=0.):
    """Spikes and membrane of a legacy neuron over x_seq (T, ...), same dtype arithmetic."""
    v = torch.full_like(x_seq[0], 0. if v_reset is None else v_reset)
    spikes, vs = [], []
    for x in x_seq:
        v = legacy_charge(v, x, kind, tau, decay_input, v_reset)
        s = (v - v_threshold >= 0).to(x.dtype)  # surrogate.heaviside
        v = v - s * v_threshold if v_reset is None else (1. - s) * v + s * v_reset
        spikes.append(s)
        vs.append(v)
    return torch.stack(spikes), torch.stack(vs)


CASES = {
    "transformer_lif": (neuron.MultiStepLIFNode, dict(tau=2.0, detach_reset=True, backend="cupy"), "LIF"),
    "attn_lif": (neuron.MultiStepLIFNode, dict(tau=2.0, v_threshold=0.5, detach_reset=True, backend="cupy"), "LIF"),
    "lif_soft_no_decay_input": (neuron.MultiStepLIFNode, dict(tau=3.0, decay_input=False, v_reset=None), "LIF"),
    "lif_v_reset": (neuron.MultiStepLIFNode, dict(tau=2.5, v_reset=-0.2, v_threshold=0.8), "LIF"),
    "lif_v_reset_no_decay_input": (neuron.MultiStepLIFNode, dict(tau=4.0, decay_input=False, v_reset=0.1), "LIF"),
    "if": (neuron.MultiStepIFNode, dict(backend="cupy"), "IF"),
    "if_soft": (neuron.MultiStepIFNode, dict(v_reset=None, v_threshold=1.5), "IF"),
    "plif": (neuron.MultiStepParametricLIFNode, dict(init_tau=3.0, backend="cupy"), "PLIF"),
    "plif_soft_no_decay_input": (neuron.MultiStepParametricLIFNode,
                                 dict(init_tau=2.0, decay_input=False, v_reset=None), "PLIF"),
    "single_lif": (neuron.LIFNode, dict(tau=2.0, v_reset=None, cupy_fp32_inference=True), "LIF"),
    "single_if": (neuron.IFNode, dict(), "IF"),
    "single_plif": (neuron.ParametricLIFNode, dict(init_tau=2.5, v_reset=-0.1), "PLIF"),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", sorted(CASES))
def test_neurons_compute_the_legacy_equations(case, dtype):
    cls, kwargs, kind = CASES[case]
    node = cls(**kwargs).to(dtype)
    gen = torch.Generator().manual_seed(3)
    x = (torch.randn(12, 4, 32, generator=gen) * 0.8 + 0.45).to(dtype)
    with torch.no_grad():
        if cls.__name__.startswith("MultiStep"):
            got = node(x)
        else:  # single-step: one call per step
            got = torch.stack([node(xt) for xt in x])
        tau = node.w.sigmoid() if kind == "PLIF" else getattr(node, "tau", None)
        p = {k: v for k, v in kwargs.items() if k in ("decay_input", "v_threshold", "v_reset")}
        want, want_v = legacy_run(x, kind, tau=tau, **p)
    assert torch.equal(got, want), f"{int((got != want).sum())} spike mismatches"
    assert 0.02 < float(want.mean()) < 0.7, f"fires at {float(want.mean())}"
    if cls.__name__.startswith("MultiStep"):  # legacy MultiStep nodes keep v_seq
        if not kwargs.get("decay_input", True) and kwargs.get("v_reset", 0.) in (None, 0.):
            # legacy v * (1 - 1/tau) + x, 2.0 v - v/tau + x: the same up to the last bit
            torch.testing.assert_close(node.v_seq, want_v, rtol=4 * torch.finfo(dtype).eps,
                                       atol=16 * torch.finfo(dtype).eps)
        else:
            assert torch.equal(node.v_seq, want_v)
    functional.reset_net(node)
    assert float(np.asarray(node.v).max()) == (0. if kwargs.get("v_reset", 0.) is None else kwargs.get("v_reset", 0.))


def test_defaults_match_legacy():
    lif, plif, if_ = neuron.MultiStepLIFNode(), neuron.MultiStepParametricLIFNode(), neuron.MultiStepIFNode()
    for node in (lif, plif, if_, neuron.LIFNode(), neuron.IFNode(), neuron.ParametricLIFNode()):
        assert (node.v_threshold, node.v_reset, node.detach_reset) == (1., 0., False)
        assert type(node.surrogate_function) is surrogate.Sigmoid and node.surrogate_function.alpha == 4.
    assert (lif.tau, lif.decay_input, plif.decay_input) == (2., True, True)
    assert (lif.step_mode, plif.step_mode, if_.step_mode, neuron.LIFNode().step_mode) == ("m", "m", "m", "s")
    assert neuron.MultiStepParametricLIFNode(init_tau=3.0).w.item() == pytest.approx(-math.log(3.0 - 1.))
    assert list(plif.state_dict()) == ["w"] and list(lif.state_dict()) == []  # checkpoints' key names
    assert type(lif).__module__ == "spikingjelly.clock_driven.neuron" and type(lif).__qualname__ == "MultiStepLIFNode"


def test_layers_surrogates_and_refusals():
    seq = layer.SeqToANNContainer(torch.nn.Linear(3, 2))
    assert seq(torch.ones(4, 5, 3)).shape == (4, 5, 2)
    drop = layer.MultiStepDropout(0.5).train()
    out = drop(torch.ones(6, 2, 100))
    assert torch.equal(out[0], out[5]) and 0 < float((out == 0).float().mean()) < 1  # one mask per sequence
    assert torch.equal(drop.eval()(torch.ones(3, 2)), torch.ones(3, 2))
    assert surrogate.ATan().alpha == 2.0 and surrogate.heaviside(torch.tensor([0., -1e-9])).tolist() == [1., 0.]
    assert surrogate.atan.apply(torch.tensor([0.5, -0.5]), 2.0).tolist() == [1., 0.]
    from spikingjelly.clock_driven.neuron import MultiStepLIFNode, surrogate as from_neuron  # as Spikformer does
    assert from_neuron is surrogate and MultiStepLIFNode is neuron.MultiStepLIFNode and layer.functional is functional
    with pytest.raises(NotImplementedError, match=r"MultiStepLIFNode\(backend='lava'\): only backend 'torch' and "
                                                  r"'cupy'"):
        neuron.MultiStepLIFNode(backend="lava")
    with pytest.raises(NotImplementedError, match=r"spikingjelly.clock_driven.neuron.QIFNode is not provided by "
                                                  r"snncompile's SpikingJelly 0.0.0.0.12 compatibility layer"):
        neuron.QIFNode()
    with pytest.raises(ModuleNotFoundError, match=r"spikingjelly.clock_driven.neuron_kernel is not provided"):
        import spikingjelly.clock_driven.neuron_kernel  # noqa: F401


def test_hook_is_opt_in_and_last_on_meta_path():
    script = ("import sys\n"
              "import snncompile.cli, snncompile.frontend\n"
              "try:\n    import spikingjelly.clock_driven\nexcept ModuleNotFoundError:\n    print('absent')\n"
              "from snncompile.frontend import legacy_spikingjelly as L\n"
              "L.install(); L.install()\n"
              "print(sys.meta_path.count(L._FINDER), sys.meta_path[-1] is L._FINDER)\n"
              "from spikingjelly.clock_driven.neuron import MultiStepLIFNode\n"
              "print(MultiStepLIFNode.__mro__[1].__module__)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["absent", "1", "True", "spikingjelly.activation_based.neuron.lif"]


# -- a legacy model file, exported from its checkpoint --------------------------------------
def _fixture_module():
    spec = importlib.util.spec_from_file_location("legacy_clock_driven_net", FIXTURE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # so torch.save(model) can name its class
    spec.loader.exec_module(module)
    return module


def _trained(module, T):
    torch.manual_seed(0)
    model = module.LegacyConvSNN()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                m.weight.mul_(6.0)
        model.fc_lif.w.fill_(-math.log(3.0 - 1.))  # a learned tau of 3
        bn = model.conv[1]
        bn.running_mean.uniform_(-0.2, 0.2), bn.running_var.uniform_(0.5, 1.5), bn.bias.uniform_(-0.1, 0.3)
    return model.eval()


def _assert_equals_eager(graph, model, module, T):
    x = (torch.rand(6, T, 2, 8, 8, generator=torch.Generator().manual_seed(1)) < 0.3).double()
    got = run(graph, x.numpy(), record=True)
    model = model.double()
    module.reset(model)
    with torch.no_grad():
        want = model(x.transpose(0, 1)).transpose(0, 1).reshape(6, T, -1).numpy()
    module.reset(model)
    assert np.array_equal(got.outputs, want), f"{np.sum(got.outputs != want)} spike mismatches"
    assert 0.02 < want.mean() < 0.6
    for node in graph:
        if node.kind == "Neuron":
            rate = got.layer_counts[node.name].mean() / T
            assert 0.02 < rate < 0.6, f"{node.name} fires at rate {rate}"


def test_legacy_model_file_exports_from_its_checkpoint(tmp_path):
    module, T = _fixture_module(), 4
    model = _trained(module, T)
    torch.save({"epoch": 300, "model": torch.nn.DataParallel(model).state_dict()}, tmp_path / "checkpoint.pth")
    result = CliRunner().invoke(main, ["export", str(tmp_path / "checkpoint.pth"), "--model",
                                       f"{FIXTURE}:LegacyConvSNN", "--input-shape", "2,8,8", "-T", str(T)])
    assert result.exit_code == 0, result.output
    graph = load_onnx(tmp_path / "checkpoint.onnx")
    assert [n.kind for n in graph].count("Neuron") == 3
    _assert_equals_eager(graph, model, module, T)


def test_whole_legacy_models_load_through_the_hook(tmp_path, monkeypatch):
    module, T = _fixture_module(), 4
    model = _trained(module, T)
    torch.save(model, tmp_path / "whole.pt")
    monkeypatch.syspath_prepend(str(FIXTURE.parent))
    result = CliRunner().invoke(main, ["export", str(tmp_path / "whole.pt"), "--trust-code",
                                       "--input-shape", "2,8,8", "-T", str(T)])
    assert result.exit_code == 0, result.output
    _assert_equals_eager(load_onnx(tmp_path / "whole.onnx"), model, module, T)
    # library classes only: the allow-list path (no --trust-code) accepts the legacy names too
    torch.manual_seed(0)
    mlp = module.legacy_mlp()
    with torch.no_grad():
        mlp[0].weight.mul_(4.0), mlp[2].weight.mul_(3.0)
    torch.save(mlp, tmp_path / "mlp.pt")
    result = CliRunner().invoke(main, ["export", str(tmp_path / "mlp.pt"), "--input-shape", "20", "-T", "5"])
    assert result.exit_code == 0, result.output
    x = (torch.rand(8, 5, 20, generator=torch.Generator().manual_seed(2)) < 0.4).double()
    got = run(load_onnx(tmp_path / "mlp.onnx"), x.numpy()).outputs
    mlp = mlp.double()
    with torch.no_grad():  # single-step legacy neurons: one call per step
        want = torch.stack([mlp(x[:, t]) for t in range(5)], 1).numpy()
    module.reset(mlp)
    assert np.array_equal(got, want) and 0.02 < want.mean() < 0.6, want.mean()


def test_unprovided_legacy_neuron_in_model_code_is_one_error(tmp_path):
    code = tmp_path / "qif_net.py"
    code.write_text("import torch.nn as nn\nfrom spikingjelly.clock_driven import neuron\n"
                    "def net():\n    return nn.Sequential(nn.Linear(4, 4), neuron.QIFNode())\n")
    torch.save(torch.nn.Sequential(torch.nn.Linear(4, 4)).state_dict(), tmp_path / "w.pt")
    _assert_fails(CliRunner().invoke(main, ["export", str(tmp_path / "w.pt"), "--model", f"{code}:net",
                                            "--input-shape", "4", "-T", "2"]),
                  r"calling net\(\*\*\{\}\) raised NotImplementedError: spikingjelly.clock_driven.neuron.QIFNode "
                  r"is not provided by snncompile's SpikingJelly 0.0.0.0.12 compatibility layer", tmp_path)
