"""Norse leaky-integrator readouts (LICell, LILinearCell, LIBoxCell) and Norse's own ConvNet.

An LI cell is a LIF cell that never spikes and returns its membrane ``v``: in the IR a Neuron
with ``threshold = +inf`` and no reset, read by an Output in mode ``membrane``. Every stage
reads that neuron's ``v``: the reference (float64, == Norse eager within 1e-9), the emulator's
torch and event engines (integer v), Lava (our neuron process sends v to the collector), the
quantizer (v's integer scale), ONNX, NIR (LI / CubaLI) and the energy counts.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import norse.torch as norse
from norse.torch.models.conv import ConvNet
from snncompile.cli import main
from snncompile.errors import SnnCompileError
from snncompile.frontend import from_torch
from snncompile.ir.graph import graph_differences
from snncompile.ir.onnx_format import load_onnx, save_onnx
from snncompile.quantize import quantize
from snncompile.targets import emulator, run

T = 8


class LIReadoutNet(nn.Module):
    """Linear -> LIFCell -> a leaky-integrator readout, looped over x (T, N, F) as Norse users do."""

    def __init__(self, readout: str):
        super().__init__()
        self.fc = nn.Linear(16, 12)
        self.lif = norse.LIFCell(norse.LIFParameters(v_th=torch.tensor(0.3)))
        self.readout = readout
        if readout == "LILinearCell":
            self.out = norse.LILinearCell(12, 5)
        else:
            self.fc_out = nn.Linear(12, 5, bias=False)
            self.out = norse.LICell(norse.LIParameters(tau_syn_inv=torch.tensor(150.0), v_leak=torch.tensor(0.1))) \
                if readout == "LICell" else norse.LIBoxCell(norse.LIBoxParameters(tau_mem_inv=torch.tensor(80.0)))

    def forward(self, x):
        s1 = s2 = None
        voltages = []
        for t in range(x.shape[0]):
            z, s1 = self.lif(self.fc(x[t]), s1)
            v, s2 = self.out(z if self.readout == "LILinearCell" else self.fc_out(z), s2)
            voltages.append(v)
        return torch.stack(voltages)


def _build(readout: str) -> nn.Module:
    torch.manual_seed(0)
    model = LIReadoutNet(readout).double()
    with torch.no_grad():
        model.fc.weight.mul_(4.0)
    return model


def _inputs(n: int, seed: int, shape=(16,)) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, T) + shape) < 0.3).astype(np.float64)


def _eager(model: nn.Module, x: np.ndarray, record: tuple = ()) -> tuple[np.ndarray, dict]:
    """(N, T, n_out) outputs of the model, and per recorded LIF module its spike counts (N, ...)."""
    counts, hooks = {}, []
    for name in record:
        def hook(m, args, out, name=name):
            counts[name] = counts.get(name, 0) + out[0]
        hooks.append(model.get_submodule(name).register_forward_hook(hook))
    with torch.no_grad():
        out = model(torch.from_numpy(x).transpose(0, 1)).transpose(0, 1)
    for h in hooks:
        h.remove()
    return out.reshape(x.shape[0], x.shape[1], -1).numpy(), {k: v.numpy() for k, v in counts.items()}


def _rates(graph, res, spiking: list[str]) -> dict:
    rates = {k: float(res.layer_counts[k].mean()) / T for k in spiking}
    assert all(0.02 <= r <= 0.4 for r in rates.values()), f"spiking layers outside 2-40 %: {rates}"
    return rates


@pytest.mark.parametrize("readout", ["LICell", "LILinearCell", "LIBoxCell"])
def test_li_readouts_equal_norse_eager(readout, tmp_path):
    model = _build(readout)
    graph = from_torch(model, (16,), T)
    save_onnx(graph, tmp_path / "li.onnx")
    onnx.checker.check_model(str(tmp_path / "li.onnx"))
    back = load_onnx(tmp_path / "li.onnx")
    assert not graph_differences(graph, back)
    out = back.node("out")
    assert back.output.mode == "membrane" and out.never_fires and out.reset_mode == "none"
    x = _inputs(4, 0)
    res = run(back, x, record=True)
    _rates(back, res, ["lif"])
    assert not res.layer_counts["out"].any()              # the integrator never fires
    expected, spikes = _eager(model, x, record=("lif",))
    assert np.array_equal(res.layer_counts["lif"], spikes["lif"])   # 0 spike mismatches
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(res.outputs, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())


def _conv_net() -> nn.Module:
    """Norse's own ConvNet (conv -> LIF -> max-pool twice, fc -> LIF, LILinearCell), 16x16 input,
    with weights scaled so that every LIF layer fires."""
    torch.manual_seed(0)
    model = ConvNet(num_channels=1, feature_size=16)
    with torch.no_grad():
        for layer, gain in ((model.conv1, 40.0), (model.conv2, 3.0), (model.fc1, 8.0)):
            layer.weight.mul_(gain)
        model.out.input_weights.mul_(3.0)
    return model


def test_norse_conv_net_exports_from_its_checkpoint(tmp_path):
    """``export CKPT --model norse.torch.models.conv:ConvNet``: its LIFParameters(method='super')
    cannot be torch.save'd whole. Its forward fills a preallocated (T, N, 10) voltage buffer step
    by step (``voltages[ts, :, :] = v``), scales a conv (``10 * conv2(z)``) and applies relu to spikes."""
    model = _conv_net()
    torch.save(model.state_dict(), tmp_path / "convnet.pt")
    result = CliRunner().invoke(main, [
        "export", str(tmp_path / "convnet.pt"), "--model", "norse.torch.models.conv:ConvNet",
        "--model-kwargs", '{"num_channels": 1, "feature_size": 16}', "--input-shape", "1,16,16",
        "-T", str(T), "-o", str(tmp_path / "convnet.onnx")])
    assert result.exit_code == 0, result.output
    assert "readout membrane" in result.output
    onnx.checker.check_model(str(tmp_path / "convnet.onnx"))
    graph = load_onnx(tmp_path / "convnet.onnx")
    assert [n.kind for n in graph].count("Neuron") == 4 and graph.output.mode == "membrane"
    x = _inputs(2, 0, (1, 16, 16))
    res = run(graph, x, record=True)
    _rates(graph, res, ["lif0", "lif1", "lif2"])
    # the same weights in float64, with a float64 voltage buffer (ConvNet's dtype argument)
    ref = ConvNet(num_channels=1, feature_size=16, dtype=torch.float64).double()
    ref.load_state_dict(model.state_dict())
    expected, spikes = _eager(ref, x, record=("lif0", "lif1", "lif2"))
    for name in ("lif0", "lif1", "lif2"):
        assert np.array_equal(res.layer_counts[name], spikes[name]), name
    np.testing.assert_allclose(res.outputs, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())


class LIOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.out = norse.LILinearCell(16, 5)

    def forward(self, x):
        s, voltages = None, []
        for t in range(x.shape[0]):
            v, s = self.out(x[t], s)
            voltages.append(v)
        return torch.stack(voltages)


def test_fixed_point_membrane_is_v_scaled_back_on_both_engines():
    torch.manual_seed(0)
    model = LIOnly().double()
    graph = from_torch(model, (16,), T)
    x = _inputs(6, 1)
    ref = run(graph, x)
    qg, _ = quantize(graph, calib=x)
    fixed = qg.output.fixed
    assert fixed.mode == "membrane" and fixed.scale == qg.node("out").fixed.scale
    torch_engine = emulator.run(qg, x, precision="fixed", engine="torch")
    events = emulator.run(qg, x, precision="fixed", engine="events")
    assert np.array_equal(torch_engine.outputs, events.outputs)
    vmax = np.abs(ref.outputs).max()
    assert np.abs(torch_engine.outputs).max() > 2 ** 20             # v uses the 24-bit range
    # 8-bit weights: the integer v, scaled back, is the float v within a few % of its range
    assert np.abs(torch_engine.outputs / fixed.scale - ref.outputs).max() < 0.03 * vmax


@pytest.mark.lava
def test_lava_reads_the_membrane_float_and_fixed():
    from snncompile.targets import lava
    model = _build("LILinearCell")
    graph = from_torch(model, (16,), T)
    x = _inputs(2, 2)
    ref = run(graph, x, record=True)
    _rates(graph, ref, ["lif"])
    lava_float = lava.run(graph, x, precision="float")
    np.testing.assert_allclose(lava_float.outputs, ref.outputs, rtol=1e-12, atol=1e-12)
    qg, _ = quantize(graph, calib=_inputs(8, 3))
    em = emulator.run(qg, x, precision="fixed", record=True)
    lv = lava.run(qg, x, precision="fixed", record=True)
    assert np.abs(em.outputs).max() > 2 ** 16
    assert np.array_equal(lv.outputs, em.outputs)                    # v for v, every step
    assert em.layer_counts["lif"].sum() > 0
    for name in ("lif", "out"):
        assert np.array_equal(lv.layer_counts[name], em.layer_counts[name]), name


def test_nir_writes_li_and_cuba_li(tmp_path):
    import nir

    from snncompile.interop.nir import read_nir, write_nir
    for readout, kind in (("LIBoxCell", nir.LI), ("LILinearCell", nir.CubaLI)):
        graph = from_torch(_build(readout), (16,), T)
        write_nir(graph, tmp_path / "li.nir", dt=1e-3)
        assert isinstance(nir.read(str(tmp_path / "li.nir")).nodes["out"], kind)
        back = read_nir(tmp_path / "li.nir", dt=1e-3)     # read back: LI as a leaky potential readout
        x = _inputs(2, 4)
        np.testing.assert_allclose(run(back, x).outputs, run(graph, x).outputs, rtol=1e-9, atol=1e-12)


def test_energy_counts_the_integrator_updates():
    from snncompile.energy import analyze
    graph = from_torch(_build("LICell"), (16,), T)
    x = _inputs(2, 5)
    rep = analyze(graph, run(graph, x, record=True), x=x)
    rows = {r.name: r for r in rep.layers}
    assert rows["out"].neuron_updates_per_sample == 5 * T and rows["out"].spikes_per_sample == 0
    assert rows["lif"].spikes_per_sample > 0


class MembraneIntoALayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.out = norse.LICell()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        v, _ = self.out(x)
        return self.fc(v)


def test_membrane_used_as_a_layer_input_is_refused():
    with pytest.raises(SnnCompileError, match=r"module 'fc' .*: its input is the membrane of leaky "
                                              r"integrator 'out' \(a readout: allowed only as the model's output\)"):
        from_torch(MembraneIntoALayer(), (4,), 4)


def test_membrane_readout_of_a_resetting_neuron_is_refused():
    from snncompile.ir import nodes as ir
    from snncompile.ir.graph import Graph
    g = Graph("bad", timesteps=4)
    g.add(ir.Input("in", shape=(3,)))
    g.add(ir.Neuron("n", shape=(3,)), ["in"])
    g.add(ir.Output("out", mode="membrane"), ["n"])
    with pytest.raises(SnnCompileError, match=r"node 'out' \(Output\): a membrane readout reads the v of a "
                                              r"Neuron without reset, but its input 'n' is a Neuron with reset 'zero'"):
        g.validate()


def test_chip_map_makes_the_integrator_the_readout_population():
    from snncompile.chip.network import build_network
    graph = from_torch(_build("LILinearCell"), (16,), T)
    roles = {p.name: p.role for p in build_network(graph).populations}
    assert roles == {"lif": "neuron", "out": "readout"}
