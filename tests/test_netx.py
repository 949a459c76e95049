"""lava-dl netx HDF5 import: a network written here by h5py with known parameters becomes a
quantized IR graph with netx's integers, runs on our targets like a hand-built Lava network
of the same parameters, and bad files fail with clear errors."""
import h5py
import numpy as np
import pytest

from snncompile.errors import SnnCompileError
from snncompile.interop.netx import optimize_weight_bits, read_netx
from snncompile.ir import fixed as fx
from snncompile.targets import run

CUBA = dict(type=b"CUBA", iDecay=1024, vDecay=128, vThMant=1500, refDelay=1, gradedSpike=False)
#: the dense layer's neuron of the conv net (chosen with CUBA for moderate firing)
CUBA_OUT = dict(CUBA, iDecay=4096, vDecay=512, vThMant=1200)


def _write(path, layers):
    """Write a netx file: ``layers`` is a list of dicts (nested dict = subgroup)."""
    def put(group, spec):
        for key, value in spec.items():
            if isinstance(value, dict):
                put(group.create_group(key), value)
            else:
                group.create_dataset(key, data=value)
    with h5py.File(path, "w") as f:
        root = f.create_group("layer")
        for i, spec in enumerate(layers):
            put(root.create_group(str(i)), spec)
    return path


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return dict(
        conv_w=rng.integers(-40, 100, (3, 2, 3, 3, 1)),   # slayer writes a trailing unit dim
        conv_b=rng.integers(-5, 10, 3),
        dense_w=rng.integers(-30, 80, (5, 3 * 4 * 4)),
        dense_b=rng.integers(0, 40, 5),
    )


def _conv_net(path, p, overrides=None):
    layers = [
        {"type": b"input", "shape": np.array([2, 6, 6])},
        {"type": b"conv", "shape": np.array([3, 4, 4]), "weight": p["conv_w"], "bias": p["conv_b"],
         "stride": np.array([1, 1]), "padding": np.array([0, 0]), "dilation": np.array([1, 1]),
         "groups": 1, "neuron": dict(CUBA)},
        {"type": b"flatten"},
        {"type": b"dense", "shape": np.array([5]), "weight": p["dense_w"], "bias": p["dense_b"],
         "neuron": dict(CUBA_OUT)},
    ]
    for i, spec in (overrides or {}).items():
        layers[i] = {**layers[i], **spec}
    return _write(path, layers)


def test_netx_parameters_become_the_fixed_point_dataclasses(tmp_path):
    p = _params()
    graph = read_netx(_conv_net(tmp_path / "net.net", p))
    assert [n.name for n in graph] == ["input", "1.conv", "1.neuron", "3.flatten", "3.dense",
                                      "3.neuron", "output"]
    conv, n1, dense, n3 = (graph.node(k) for k in ("1.conv", "1.neuron", "3.dense", "3.neuron"))
    np.testing.assert_array_equal(conv.fixed.weight, p["conv_w"][..., 0])
    np.testing.assert_array_equal(conv.weight, p["conv_w"][..., 0])     # PyTorch layout kept
    assert n1.fixed == fx.NeuronFixed(du=1023, dv=128, vth=1500, bias_mant=p["conv_b"].reshape(3, 1, 1),
                                      bias_exp=6, scale=64.0)
    assert n3.fixed.du == 4095 and n3.fixed.dv == 512 and n3.fixed.vth == 1200
    mant, bits, exp = optimize_weight_bits(p["dense_w"])
    assert dense.fixed == fx.SynapseFixed(weight=mant, weight_exp=exp, num_weight_bits=bits, scale=1.0)
    # float twin in v_int / 64 units: threshold vThMant, du = iDecay/4096, weights as Lava uses them
    assert float(n1.threshold) == 1500.0 and float(n1.du) == 0.25 and float(n1.dv) == 128 / 4096
    np.testing.assert_array_equal(dense.weight, fx.lava_dense_weights(mant, bits) * 2.0 ** exp)
    assert graph.input.fixed == fx.InputFixed(num_message_bits=0)
    assert graph.output.mode == "spikes" and graph.output.fixed.mode == "spikes"


def test_optimize_weight_bits_matches_netx_on_known_matrices():
    # mixed signs, all even: scale_bits = floor(log2(min(127/100, 128/64))) + 1 = 1,
    # n = 1 (all divisible by 2) - 1 (signed) = 0 -> 7 bits, exponent -1
    w = np.array([[100, -64], [2, 0]])
    mant, bits, exp = optimize_weight_bits(w)
    assert (bits, exp) == (7, -1) and np.array_equal(mant, w << 1)
    assert np.array_equal(fx.lava_dense_weights(mant, bits) >> 1, w)
    # small excitatory weights are scaled up into the 8 bits: 255/15 -> 4 bits of scale
    w = np.array([[15, 3], [1, 0]])
    mant, bits, exp = optimize_weight_bits(w)
    assert exp == -4 and np.array_equal(mant, w << 4) and bits == 8 - 4 - 0
    assert np.array_equal(fx.lava_dense_weights(mant, bits) >> 4, w)  # Lava gives w back exactly


def test_dense_readout_without_neuron_is_a_potential_readout(tmp_path):
    path = _write(tmp_path / "mlp.net", [
        {"type": b"input", "shape": np.array([4])},
        {"type": b"dense", "shape": np.array([3]), "weight": np.arange(12).reshape(3, 4) - 4,
         "neuron": dict(CUBA, vThMant=20)},
        {"type": b"dense", "shape": np.array([2]), "weight": np.array([[10, -10, 3], [0, 5, 5]])},
    ])
    graph = read_netx(path, input_message_bits=8)
    assert graph.output.mode == "potential" and graph.input.fixed.num_message_bits == 8
    assert graph.node("1.dense").fixed.num_message_bits == 8
    assert graph.node("2.dense").fixed.num_message_bits == 0
    res = run(graph, np.ones((1, 6, 4)) * 3)
    assert res.outputs.shape == (1, 6, 2)


@pytest.mark.parametrize("override, message", [
    ({1: {"type": b"pool"}}, r"layer 1: layer type 'pool' is not supported"),
    ({1: {"neuron": dict(CUBA, refDelay=3)}}, r"layer 1: refDelay=3: a refractory period is not representable"),
    ({1: {"neuron": dict(CUBA, gradedSpike=True)}}, r"layer 1: gradedSpike=True"),
    ({3: {"delay": np.arange(5)}}, r"layer 3: axonal delays \(up to 4 steps\) are not representable"),
    ({3: {"weight": np.ones((5, 40), dtype=int)}}, r"layer 3: dense weight of shape \(5, 40\) does not fit 48 inputs"),
    ({1: {"shape": np.array([3, 5, 5])}}, r"layer 1: declared shape \(3, 5, 5\) but the convolution of \(2, 6, 6\) gives \(3, 4, 4\)"),
    ({2: {"type": b"average"}}, r"layer 2: layer type 'average' is not supported"),
])
def test_unsupported_or_inconsistent_layers_are_named(tmp_path, override, message):
    path = _conv_net(tmp_path / "bad.net", _params(), override)
    with pytest.raises(SnnCompileError, match=r"netx file '.*bad.net', " + message):
        read_netx(path)


def test_corrupt_and_foreign_files_are_clear_errors(tmp_path):
    junk = tmp_path / "junk.net"
    junk.write_bytes(b"\x89HDF garbage")
    with pytest.raises(SnnCompileError, match=r"netx file '.*junk.net' is not a readable netx HDF5 network"):
        read_netx(junk)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(SnnCompileError, match=r"other.h5' has no 'layer' group \(found: x\)"):
        read_netx(tmp_path / "other.h5")
    with pytest.raises(SnnCompileError, match=r"does not exist"):
        read_netx(tmp_path / "missing.net")


def test_cli_exports_netx_to_onnx_and_runs_it_in_fixed_point(tmp_path):
    from click.testing import CliRunner

    from snncompile.cli import main
    from snncompile.ir.onnx_format import load_onnx

    net = _conv_net(tmp_path / "net.net", _params())
    runner = CliRunner()
    result = runner.invoke(main, ["export", str(net), "-T", "12", "-o", str(tmp_path / "net.onnx")])
    assert result.exit_code == 0, result.output
    graph = load_onnx(tmp_path / "net.onnx")
    assert graph.node("3.dense").fixed == read_netx(net).node("3.dense").fixed
    x = (np.random.default_rng(2).random((3, 12, 2, 6, 6)) < 0.4).astype(float)
    np.savez(tmp_path / "x.npz", x=x)
    result = runner.invoke(main, ["run", str(tmp_path / "net.onnx"), "--input", str(tmp_path / "x.npz"),
                                  "--backend", "emulator", "--precision", "fixed", "-o", str(tmp_path / "o.npz")])
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "o.npz") as out:
        expect = run(read_netx(net), x, backend="emulator", precision="fixed").outputs
        assert expect.sum() > 0
        np.testing.assert_array_equal(out["spikes"], expect)
    (tmp_path / "junk.net").write_bytes(b"junk")
    bad = runner.invoke(main, ["export", str(tmp_path / "junk.net"), "-o", str(tmp_path / "m.onnx")])
    assert bad.exit_code == 1 and "junk.net' is not a readable netx HDF5 network" in bad.output
    assert not (tmp_path / "m.onnx").exists()


def test_network_without_input_layer_takes_its_input_size_from_the_first_dense_weight(tmp_path):
    w = np.arange(15).reshape(3, 5) - 5
    graph = read_netx(_write(tmp_path / "noin.net", [
        {"type": b"dense", "shape": np.array([3]), "weight": w, "neuron": dict(CUBA, vThMant=10)}]))
    assert graph.input.shape == (5,) and graph.inputs_of("0.dense") == ["input"]
    conv_first = _write(tmp_path / "conv.net", [{"type": b"conv", "shape": np.array([3, 4, 4]),
                                                 "weight": np.ones((3, 2, 3, 3))}])
    with pytest.raises(SnnCompileError, match=r"layer 0: 'conv' layer before any input layer"):
        read_netx(conv_first)


def test_netx_network_written_as_nir_keeps_its_float_twin_and_says_so(tmp_path):
    from snncompile.interop.nir import read_nir, write_nir
    graph = read_netx(_conv_net(tmp_path / "net.net", _params()))
    notes = write_nir(graph, tmp_path / "net.nir")
    assert notes[0] == ("graph 'net' is quantized: NIR carries its float parameters only (the "
                        "integers of 6 node(s) are not written)")
    # netx neurons start at v = 0 although they have a bias; NIR readers start at v_leak
    assert [n.split(":")[0] for n in notes[1:]] == ["node '1.neuron' (Neuron)", "node '3.neuron' (Neuron)"]
    assert all("initial state" in n for n in notes[1:])
    back = read_nir(tmp_path / "net.nir")
    assert np.all(back.node("3.neuron").threshold == 1200.0) and back.node("3.dense").weight.shape == (5, 48)
