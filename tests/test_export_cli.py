"""``snncompile export``: the happy path end to end, and each bad input with one clear
``error:`` line, exit status 1 and no output file left behind."""
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import zoo
from snncompile.cli import main
from snncompile.ir.onnx_format import load_onnx
from snncompile.targets import run


def _export(*args):
    result = CliRunner().invoke(main, ["export", *map(str, args)])
    return result


def _assert_fails(result, pattern, out_dir):
    assert result.exit_code == 1, result.output
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    import re
    assert re.search(pattern, lines[0]), lines[0]
    assert not [p for p in out_dir.iterdir() if p.suffix in (".onnx", ".nir")], list(out_dir.iterdir())


@pytest.fixture
def saved(tmp_path):
    zm = zoo.MODELS["sj_conv_maxpool"]
    torch.save(zm.build(), tmp_path / "net.pt")
    return zm, tmp_path / "net.pt"


def test_export_default_output_beside_model_runs_like_pytorch(saved):
    zm, path = saved
    result = _export(path, "--input-shape", "2,8,8", "--timesteps", zm.timesteps)
    assert result.exit_code == 0, result.output
    out = path.with_suffix(".onnx")
    assert f"wrote {out}" in result.output
    graph = load_onnx(out)
    assert graph.timesteps == zm.timesteps and graph.input.shape == (2, 8, 8)
    x = zm.inputs(4, seed=3)
    np.testing.assert_allclose(run(graph, x).outputs, zm.torch_outputs(zm.build().double(), x),
                               rtol=1e-12, atol=1e-12)


def test_trust_code_model_exports_with_o(tmp_path):
    torch.save(zoo.MODELS["sj_sew"].build(), tmp_path / "sew.pt")
    result = _export(tmp_path / "sew.pt", "--input-shape", "2,8,8", "-T", "5", "--trust-code",
                     "-o", tmp_path / "g.onnx")
    assert result.exit_code == 0, result.output
    assert [n.kind for n in load_onnx(tmp_path / "g.onnx")].count("Add") == 1


def test_missing_file(tmp_path):
    _assert_fails(_export(tmp_path / "none.pt", "--input-shape", "2,8,8", "-T", "4"),
                  r"model file '.*none.pt' does not exist", tmp_path)


def test_not_a_torch_file(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"\x00\x01 definitely not torch")
    _assert_fails(_export(tmp_path / "junk.pt", "--input-shape", "2,8,8", "-T", "4"),
                  r"junk.pt' is not a PyTorch file", tmp_path)


def test_disallowed_classes_without_trust_code(tmp_path):
    torch.save(zoo.MODELS["sj_ms"].build(), tmp_path / "ms.pt")
    _assert_fails(_export(tmp_path / "ms.pt", "--input-shape", "2,8,8", "-T", "4"),
                  r"'zoo.MS(Net|Block)'.*not on the allow-list.*--trust-code", tmp_path)


def test_unsupported_module_names_its_path(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(128, 10), nn.Sequential(nn.ReLU()))
    torch.save(model, tmp_path / "relu.pt")
    _assert_fails(_export(tmp_path / "relu.pt", "--input-shape", "2,8,8", "-T", "4"),
                  r"module '2.0' \(torch.nn.modules.activation.ReLU\) is not supported", tmp_path)


@pytest.mark.parametrize("shape, pattern", [
    ("2,8", r"input shape \(2, 8\) must be \(F,\) or \(C, H, W\)"),
    ("a,b,c", r"--input-shape 'a,b,c' must be positive integers"),
    ("3,8,8", r"does not run on inputs of shape \(N, 3, 8, 8\) in module '0' \(Conv2d\)"),
    ("0,8,8", r"must be positive integers"),
])
def test_wrong_input_shape(saved, shape, pattern):
    _, path = saved
    _assert_fails(_export(path, "--input-shape", shape, "-T", "4", "-o", path.parent / "o.onnx"),
                  pattern, path.parent)


def test_missing_input_shape_or_timesteps(saved):
    _, path = saved
    _assert_fails(_export(path, "-T", "4"), r"needs --input-shape and --timesteps", path.parent)
    _assert_fails(_export(path, "--input-shape", "2,8,8", "-T", "0"), r"--timesteps must be at least 1",
                  path.parent)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_weights(tmp_path, bad):
    model = zoo.MODELS["sj_mlp"].build()
    with torch.no_grad():
        model[1].weight[0, 0] = bad
    torch.save(model, tmp_path / "bad.pt")
    _assert_fails(_export(tmp_path / "bad.pt", "--input-shape", "2,8,8", "-T", "4"),
                  r"parameter '1.weight' of the model has 1 NaN/Inf value", tmp_path)


def test_unwritable_output_folder(saved, tmp_path):
    _, path = saved
    _assert_fails(_export(path, "--input-shape", "2,8,8", "-T", "4", "-o", tmp_path / "no" / "g.onnx"),
                  r"folder '.*no' does not exist", tmp_path)


def test_nir_output_and_nir_input_dispatch(tmp_path):
    zm = zoo.MODELS["sj_mlp"]
    torch.save(zm.build(), tmp_path / "mlp.pt")
    result = _export(tmp_path / "mlp.pt", "--input-shape", "2,8,8", "-T", "6", "-o", tmp_path / "g.nir")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "g.nir").exists()
    back = _export(tmp_path / "g.nir", "-T", "6", "--dt", "1e-4", "-o", tmp_path / "h.onnx")
    assert back.exit_code == 0, back.output
    graph = load_onnx(tmp_path / "h.onnx")
    x = zm.inputs(4, seed=5)
    assert np.array_equal(run(graph, x).outputs, zm.torch_outputs(zm.build().double(), x))


def test_nir_output_of_unsupported_graph_leaves_nothing(saved, tmp_path):
    _, path = saved
    _assert_fails(_export(path, "--input-shape", "2,8,8", "-T", "5", "-o", tmp_path / "g.nir"),
                  r"MaxPool2d", tmp_path)
