"""ONNX round trips: every node kind and neuron setting, dtypes, recurrence, ``fixed``; bad files."""
import dataclasses
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from snncompile.errors import SnnCompileError
from snncompile.ir import (
    Add, AvgPool2d, Conv2d, Flatten, Graph, Input, Linear, MaxPool2d, Neuron, Output, SumPool2d,
    graph_differences,
)
from snncompile.ir import fixed as fixed_module
from snncompile.ir.onnx_format import load_onnx, save_onnx, stamp_digest, to_model
from snncompile.targets import run

RNG = np.random.default_rng(7)


def _every_kind_graph(weight_dtype=np.float32) -> Graph:
    """Input -> Conv -> Neuron -> SumPool -> AvgPool -> MaxPool -> Flatten -> Linear -> Add(rec) -> Neuron."""
    g = Graph("every_kind", timesteps=6)
    g.meta = {"framework": "hand", "nir_r_convention": "r=1"}
    g.add(Input("in", shape=(2, 8, 8)))
    g.add(Conv2d("features.0", weight=RNG.normal(size=(4, 2, 3, 3)).astype(weight_dtype),
                 bias=RNG.normal(size=4).astype(weight_dtype), padding=1), ["in"])
    g.add(Neuron("features.1", shape=(4, 8, 8), du=np.full((4, 1, 1), 0.25),
                 threshold=np.linspace(0.5, 1.0, 4).reshape(4, 1, 1), reset_mode="subtract",
                 compare=">=", source="spikingjelly.LIFNode"), ["features.0"])
    g.add(SumPool2d("sum_pool", kernel_size=2, stride=2), ["features.1"])
    g.add(AvgPool2d("avg_pool", kernel_size=3, stride=1, padding=1), ["sum_pool"])
    g.add(MaxPool2d("max_pool", kernel_size=2, stride=2), ["avg_pool"])
    g.add(Flatten("flat"), ["max_pool"])
    g.add(Linear("fc", weight=RNG.normal(size=(5, 16)).astype(weight_dtype)), ["flat"])
    g.add(Add("join"), ["fc"])
    g.add(Neuron("lif", shape=(5,), dv=0.1, reset_mode="zero", reset_value=-0.5,
                 v_init=RNG.normal(size=5), u_init=0.2, bias=np.linspace(0, 0.1, 5)), ["join"])
    g.add(Linear("rec", weight=RNG.normal(size=(5, 5)), bias=np.zeros(5)), ["lif"])
    g.add(Linear("rec2", weight=RNG.normal(size=(5, 5))), ["lif"])
    g.add_edge("rec", "join", delay=1)
    g.add_edge("rec2", "join", delay=1)
    g.add(Output("out", mode="spikes"), ["lif"])
    return g


def _round_trip(g: Graph, tmp_path) -> Graph:
    path = tmp_path / "g.onnx"
    save_onnx(g, path)
    return load_onnx(path)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int8])
def test_every_kind_round_trips_bit_identical_and_runs_the_same(tmp_path, dtype):
    g = _every_kind_graph(dtype)
    back = _round_trip(g, tmp_path)
    assert graph_differences(back, g) == []
    assert back.node("fc").weight.dtype == dtype
    assert (back.name, back.timesteps, back.meta) == (g.name, g.timesteps, g.meta)
    assert back.order() == g.order()
    assert [back.delay(s, "join") for s in back.inputs_of("join")] == [0, 1, 1]
    x = RNG.random((3, 6, 2, 8, 8)) < 0.4
    want, got = run(g, x), run(back, x)
    assert want.counts.sum() > 0
    np.testing.assert_array_equal(got.outputs, want.outputs)


def test_saved_model_passes_the_full_checker_and_documents_time(tmp_path):
    path = tmp_path / "g.onnx"
    save_onnx(_every_kind_graph(), path)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    ops = {(n.domain, n.op_type) for n in model.graph.node}
    assert {("", "Conv"), ("", "Gemm"), ("", "AveragePool"), ("", "MaxPool"), ("", "Flatten"), ("", "Sum"),
            ("", "Cast"), ("ai.snncompile", "Neuron"), ("ai.snncompile", "SumPool"),
            ("ai.snncompile", "Delay"), ("ai.snncompile", "Output")} == ops
    assert "ONE time step" in model.doc_string
    # the shape inference functions of our schemas agree with the IR's shapes
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim[1:]] for v in inferred.graph.value_info}
    assert shapes["sum_pool"] == [4, 4, 4] and shapes["features.1"] == [4, 8, 8] and shapes["rec::prev"] == [5]


NEURON_SETTINGS = [
    dict(reset_mode=mode, compare=cmp) for mode in ("zero", "subtract", "none") for cmp in (">", ">=")
] + [
    dict(du=np.array([0.1, 0.2, 0.3]).reshape(3, 1, 1), dv=np.full((3, 4, 4), 0.05), threshold=0.7),
    dict(reset_mode="subtract", reset_amount=np.full((3, 1, 1), 0.3), threshold=0.5),
    dict(u_init=np.arange(48.0).reshape(3, 4, 4) / 100, v_init=-0.25, bias=0.01, reset_value=-1.0),
    dict(shape=(), source=""),
]


@pytest.mark.parametrize("settings", NEURON_SETTINGS)
def test_every_neuron_setting_round_trips(tmp_path, settings):
    g = Graph("neuron", timesteps=None)
    g.add(Input("in", shape=(3, 4, 4)))
    settings = {"shape": (3, 4, 4), "source": "norse.LIFCell", **settings}
    g.add(Neuron("n", **settings), ["in"])
    g.add(Output("out"), ["n"])
    back = _round_trip(g, tmp_path)
    assert graph_differences(back, g) == []
    assert back.timesteps is None
    assert back.node("n").source == settings["source"]


def test_conv_settings_and_1d_flatten_round_trip(tmp_path):
    g = Graph("conv", timesteps=2)
    g.add(Input("in", shape=(4, 9, 7)))
    g.add(Conv2d("c", weight=RNG.normal(size=(6, 2, 3, 2)), stride=(2, 1), padding=(1, 0), dilation=(2, 1),
                 groups=2), ["in"])
    g.add(Neuron("n", shape=(6, 4, 6)), ["c"])
    g.add(Flatten("f"), ["n"])
    g.add(Flatten("f1d"), ["f"])
    g.add(Linear("fc", weight=RNG.normal(size=(3, 144)), bias=RNG.normal(size=3)), ["f1d"])
    g.add(Output("out", mode="potential"), ["fc"])
    back = _round_trip(g, tmp_path)
    assert graph_differences(back, g) == []
    assert back.node("c").bias is None and back.node("out").mode == "potential"


@dataclasses.dataclass(eq=False)
class _TestFixed:
    """A stand-in for any fixed-point dataclass: every field type the format must carry."""

    weight: np.ndarray
    exp: int
    scale: float
    mode: str
    flag: bool
    nothing: object
    pair: tuple
    items: list
    table: dict
    scalar: np.int16
    derived: int = dataclasses.field(init=False, default=0)

    def __eq__(self, other):
        def same(a, b):
            if isinstance(a, np.ndarray) or isinstance(b, (np.ndarray, np.generic)):
                return type(a) is type(b) and a.dtype == b.dtype and np.asarray(a).tobytes() == np.asarray(b).tobytes()
            if isinstance(a, (list, tuple)):
                return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
            if isinstance(a, dict):
                return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
            return type(a) is type(b) and a == b
        return all(same(getattr(self, f.name), getattr(other, f.name)) for f in dataclasses.fields(self))


def test_fixed_dataclass_round_trips_generically(tmp_path, monkeypatch):
    monkeypatch.setattr(fixed_module, "_TestFixed", _TestFixed, raising=False)
    g = _every_kind_graph()
    fixed = _TestFixed(weight=np.arange(-6, 6, dtype=np.int32).reshape(3, 4), exp=-3, scale=0.1 + 0.2,
                       mode="mixed", flag=True, nothing=None, pair=(1, np.arange(3, dtype=np.uint8)),
                       items=[2.5, "x"], table={"a": np.float32(1.5), "b": [1]}, scalar=np.int16(-7))
    fixed.derived = 42
    g.node("fc").fixed = fixed
    back = _round_trip(g, tmp_path)
    assert graph_differences(back, g) == []
    got = back.node("fc").fixed
    assert got == fixed and got is not fixed
    assert got.derived == 42 and got.weight.dtype == np.int32 and isinstance(got.pair, tuple)
    assert back.node("lif").fixed is None


def test_quantizer_fixed_classes_round_trip_on_every_node_that_carries_one(tmp_path):
    g = _every_kind_graph()
    g.node("in").fixed = fixed_module.InputFixed(scale=2.0, num_message_bits=8)
    g.node("fc").fixed = fixed_module.SynapseFixed(weight=np.arange(80).reshape(5, 16) - 40, weight_exp=-2,
                                                   scale=12.5)
    g.node("sum_pool").fixed = fixed_module.SynapseFixed(weight=np.int64(3))
    g.node("lif").fixed = fixed_module.NeuronFixed(du=4095, dv=409, vth=np.arange(5), bias_mant=np.arange(5) - 2,
                                                   reset_mode="zero", compare=">=", scale=64.0)
    g.node("out").fixed = fixed_module.ReadoutFixed(mode="spikes", bias=np.zeros(5, dtype=np.int64))
    back = _round_trip(g, tmp_path)
    assert graph_differences(back, g) == []
    assert back.node("in").fixed == g.node("in").fixed
    assert back.node("lif").fixed.vth.tolist() == [0, 1, 2, 3, 4]


def test_unknown_fixed_class_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(fixed_module, "_TestFixed", _TestFixed, raising=False)
    g = _every_kind_graph()
    g.node("fc").fixed = _TestFixed(np.zeros(1), 0, 1.0, "", False, None, (), [], {}, np.int16(0))
    path = tmp_path / "g.onnx"
    save_onnx(g, path)
    monkeypatch.delattr(fixed_module, "_TestFixed")
    with pytest.raises(SnnCompileError, match=r"g\.onnx': node 'fc': fixed-point class '_TestFixed' is not "
                                              r"defined in snncompile.ir.fixed"):
        load_onnx(path)


# ----------------------------------------------------------------------------- bad files
def _assert_refused(path, reason):
    with pytest.raises(SnnCompileError, match=reason) as info:
        load_onnx(path)
    assert str(path) in str(info.value)


def test_missing_file_and_folder(tmp_path):
    _assert_refused(tmp_path / "nope.onnx", "does not exist")
    _assert_refused(tmp_path, "is a folder")
    (tmp_path / "empty.onnx").touch()
    _assert_refused(tmp_path / "empty.onnx", "is empty")


def test_non_onnx_file_is_refused(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a protobuf\n" * 20)
    _assert_refused(path, "not a readable ONNX file|not an snncompile graph")


def test_truncated_files_are_refused_at_every_cut(tmp_path):
    good = tmp_path / "g.onnx"
    save_onnx(_every_kind_graph(), good)
    data = good.read_bytes()
    for cut in (len(data) // 7, len(data) // 2, len(data) - 3, len(data) - 1):
        path = tmp_path / f"cut{cut}.onnx"
        path.write_bytes(data[:cut])
        _assert_refused(path, "not a readable ONNX file|fails the ONNX checker|not an snncompile graph")


def test_a_flipped_weight_byte_is_reported_as_corruption(tmp_path):
    path = tmp_path / "g.onnx"
    g = _every_kind_graph(np.float64)
    save_onnx(g, path)
    data = bytearray(path.read_bytes())
    at = bytes(data).find(g.node("rec").weight.tobytes())
    assert at > 0
    data[at + 3] ^= 0x10
    path.write_bytes(bytes(data))
    onnx.load(str(path))  # still a well-formed protobuf: only the digest can tell
    _assert_refused(path, "is corrupted: its content does not match the SHA-256 digest")
    model = onnx.load(str(path))
    del model.metadata_props[[p.key for p in model.metadata_props].index("snncompile.sha256")]
    onnx.save(model, str(path))
    _assert_refused(path, "is corrupted: its content has no SHA-256 digest")


def test_random_corruption_is_refused_or_harmless(tmp_path):
    good = tmp_path / "g.onnx"
    g = _every_kind_graph()
    save_onnx(g, good)
    data = good.read_bytes()
    rng = np.random.default_rng(11)
    path = tmp_path / "damaged.onnx"
    refused = 0
    for _ in range(150):
        damaged = bytearray(data)
        for at in rng.integers(len(data), size=rng.integers(1, 4)):
            damaged[at] = rng.integers(256)
        path.write_bytes(bytes(damaged))
        try:
            back = load_onnx(path)
        except SnnCompileError as exc:
            assert str(path) in str(exc)
            refused += 1
        else:  # the damage hit bytes that carry no meaning (doc string, producer name...)
            assert graph_differences(back, g) == [] and back.meta == g.meta
    assert refused > 100


def test_plain_onnx_model_is_not_an_snncompile_graph(tmp_path):
    relu = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                             [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [1, 3])],
                             [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [1, 3])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(relu, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    _assert_refused(path, "is an ONNX model but not an snncompile graph")


def test_unknown_op_in_an_snncompile_graph_is_named(tmp_path):
    model = to_model(_every_kind_graph())
    model.graph.node[-2].op_type = "Relu"
    path = tmp_path / "relu.onnx"
    onnx.save(stamp_digest(model), str(path))
    _assert_refused(path, r"node '.*' uses op 'Relu' of domain 'ai.onnx', which is not part of the snncompile")


def test_model_failing_the_checker_is_refused(tmp_path):
    model = to_model(_every_kind_graph())
    vi = next(v for v in model.graph.value_info if v.name == "sum_pool")
    vi.type.tensor_type.shape.dim[2].dim_value = 5  # SumPool's inference says 4
    path = tmp_path / "bad_shape.onnx"
    onnx.save(stamp_digest(model), str(path))
    _assert_refused(path, "fails the ONNX checker: .*differ")


def test_save_is_all_or_nothing(tmp_path):
    with pytest.raises(SnnCompileError, match="does not exist"):
        save_onnx(_every_kind_graph(), tmp_path / "missing_dir" / "g.onnx")
    g = _every_kind_graph()
    g.node("fc").weight = np.ones((5, 17))  # shape no longer fits Flatten's 16
    with pytest.raises(SnnCompileError, match=r"node 'fc' \(Linear\): expects input shape \(17,\)"):
        save_onnx(g, tmp_path / "g.onnx")
    assert os.listdir(tmp_path) == []


def test_zoo_graphs_round_trip(tmp_path):
    import zoo
    for name, entry in zoo.MODELS.items():
        g = entry.graph()
        back = _round_trip(g, tmp_path)
        assert graph_differences(back, g) == [], name


def test_graph_input_needs_a_fixed_per_sample_shape(tmp_path):
    model = to_model(_every_kind_graph())
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    path = tmp_path / "dynamic.onnx"
    onnx.save(stamp_digest(model), str(path))
    _assert_refused(path, r"graph input 'in' needs a batch dimension and a fixed per-sample shape, "
                          r"has \['N', 2, 'H', 8\]")

