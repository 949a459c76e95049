"""A netx network written by h5py runs on our Lava target and emulator with exactly the
spikes of a hand-built Lava network (stock Conv/Dense/LIF processes) of the same parameters."""
import numpy as np
import pytest

from snncompile import lava_compat
from snncompile.interop.netx import optimize_weight_bits, read_netx
from snncompile.targets import run

from test_netx import CUBA, CUBA_OUT, _conv_net, _params

pytestmark = [pytest.mark.lava, pytest.mark.slow]

T, STAGES = 16, 2   # two synapse stages: raw Lava's output lags ours by two steps


def _hand_built_lava(p, x):
    """netx's mapping written out with stock Lava processes; x: (T, C, H, W) -> (T, 5) spikes."""
    lava_compat.install()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.conv.process import Conv
    from lava.proc.dense.process import Dense
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.lif.process import LIF

    steps = x.shape[0] + STAGES
    data = np.zeros((6, 6, 2, steps))
    data[..., :x.shape[0]] = x.transpose(3, 2, 1, 0)                 # (T,C,H,W) -> WHC x time
    src = Source(data=data)
    w = p["conv_w"][..., 0]
    conv = Conv(weight=w[:, :, ::-1, ::-1].transpose(0, 3, 2, 1), input_shape=(6, 6, 2))
    bias1 = np.zeros((4, 4, 3), dtype=int)
    bias1[:, :] = p["conv_b"]
    lif1 = LIF(shape=(4, 4, 3), du=CUBA["iDecay"] - 1, dv=CUBA["vDecay"], vth=CUBA["vThMant"],
               bias_mant=bias1, bias_exp=6)
    mant, bits, exp = optimize_weight_bits(p["dense_w"])
    dense = Dense(weights=mant, weight_exp=exp, num_weight_bits=bits)
    lif2 = LIF(shape=(5,), du=CUBA_OUT["iDecay"] - 1, dv=CUBA_OUT["vDecay"], vth=CUBA_OUT["vThMant"],
               bias_mant=p["dense_b"], bias_exp=6)
    sink = Sink(shape=(5,), buffer=steps)
    src.s_out.connect(conv.s_in)
    conv.a_out.connect(lif1.a_in)
    lif1.s_out.transpose([2, 1, 0]).flatten().connect(dense.s_in)
    dense.a_out.connect(lif2.a_in)
    lif2.s_out.connect(sink.a_in)
    try:
        sink.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        out = sink.data.get()
    finally:
        sink.stop()
    return out.T[STAGES:]


@pytest.fixture(scope="module")
def netx_case(tmp_path_factory):
    p = _params()
    graph = read_netx(_conv_net(tmp_path_factory.mktemp("netx") / "net.net", p))
    x = (np.random.default_rng(5).random((2, T, 2, 6, 6)) < 0.4).astype(float)
    expect = np.stack([_hand_built_lava(p, xi) for xi in x])
    assert 0.1 < expect.mean() < 0.5   # moderate firing: the comparison means something
    return graph, x, expect


def test_netx_network_on_the_emulator_equals_hand_built_lava(netx_case):
    graph, x, expect = netx_case
    res = run(graph, x, backend="emulator", precision="fixed")
    np.testing.assert_array_equal(res.outputs, expect)


def test_netx_network_on_our_lava_target_equals_hand_built_lava(netx_case):
    graph, x, expect = netx_case
    res = run(graph, x, backend="lava", precision="fixed")
    np.testing.assert_array_equal(res.outputs, expect)


def test_graded_input_mlp_on_the_emulator_equals_hand_built_lava(tmp_path):
    """8-bit graded input messages into a dense CUBA layer (netx ``input_message_bits=8``)."""
    from test_netx import _write
    lava_compat.install()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.lif.process import LIF

    rng = np.random.default_rng(9)
    w, bias = rng.integers(-20, 50, (6, 4)), rng.integers(-10, 10, 6)
    neuron = dict(CUBA, iDecay=2048, vDecay=256, vThMant=4000)
    path = _write(tmp_path / "mlp.net", [{"type": b"input", "shape": np.array([4])},
                                          {"type": b"dense", "shape": np.array([6]), "weight": w,
                                           "bias": bias, "neuron": neuron}])
    graph = read_netx(path, input_message_bits=8)
    x = rng.integers(0, 30, (T, 4)).astype(float)
    data = np.zeros((4, T + 1))
    data[:, :T] = x.T
    src = Source(data=data)
    mant, bits, exp = optimize_weight_bits(w)
    dense = Dense(weights=mant, weight_exp=exp, num_weight_bits=bits, num_message_bits=8)
    lif = LIF(shape=(6,), du=neuron["iDecay"] - 1, dv=neuron["vDecay"], vth=neuron["vThMant"],
              bias_mant=bias, bias_exp=6)
    sink = Sink(shape=(6,), buffer=T + 1)
    src.s_out.connect(dense.s_in)
    dense.a_out.connect(lif.a_in)
    lif.s_out.connect(sink.a_in)
    try:
        sink.run(condition=RunSteps(num_steps=T + 1), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        expect = sink.data.get().T[1:]
    finally:
        sink.stop()
    assert 0.1 < expect.mean() < 0.7
    res = run(graph, x[None], backend="emulator", precision="fixed")
    np.testing.assert_array_equal(res.outputs[0], expect)
