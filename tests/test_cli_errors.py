"""Bad input to every command: one `error:` line naming the file, exit status 1, no output file.

The commands follow the command-line contract of ARCHITECTURE.md.
"""
import numpy as np
import pytest
from click.testing import CliRunner

from snncompile.cli import COMMANDS, main
from snncompile.ir import Graph, Input, Linear, Neuron, Output
from snncompile.ir.onnx_format import save_onnx

#: command -> (its DATA.npz option or None, suffix of its -o output or None)
GRAPH_COMMANDS = {
    "inspect": (None, None),
    "run": ("--input", ".npz"),
    "quantize": (None, ".onnx"),
    "verify": ("--input", None),
    "energy": ("--input", ".json"),
}


def _needs(command):
    assert command in COMMANDS, f"command '{command}' of the contract is missing from the CLI"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_errors")
    g = Graph("tiny", timesteps=4)
    g.add(Input("in", shape=(3,)))
    g.add(Linear("fc", weight=np.full((2, 3), 0.6)), ["in"])
    g.add(Neuron("lif", shape=(2,), reset_mode="subtract"), ["fc"])
    g.add(Output("out"), ["lif"])
    save_onnx(g, d / "good.onnx")
    good = (d / "good.onnx").read_bytes()
    (d / "truncated.onnx").write_bytes(good[: len(good) // 2])
    (d / "text.onnx").write_text("# not a model\n" * 10)
    np.savez(d / "data.npz", x=np.ones((2, 4, 3)), y=np.array([0, 1]))
    np.savez(d / "wrong_shape.npz", x=np.ones((2, 4, 5)))
    np.savez(d / "no_x.npz", inputs=np.ones((2, 4, 3)))
    np.savez(d / "nan.npz", x=np.full((2, 4, 3), np.nan))
    (d / "garbage.npz").write_bytes(b"PK\x03\x04 not really a zip")
    return d


def _invoke(args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _assert_clean_failure(res, names, out=None):
    assert res.exit_code == 1, (res.exit_code, res.output)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output
    assert any(str(n) in lines[0] for n in names), lines[0]
    if out is not None:
        assert not out.exists(), f"{out} was written"
        assert not list(out.parent.glob(f".{out.name}*")), "temporary file left behind"


def _args(command, graph, data, out):
    input_flag, suffix = GRAPH_COMMANDS[command]
    args = [command, graph]
    if input_flag:
        args += [input_flag, data]
    if suffix and out is not None:
        args += ["-o", out]
    return args


def _out(command, files, name="result"):
    suffix = GRAPH_COMMANDS[command][1]
    return files / f"{command}_{name}{suffix}" if suffix else None


@pytest.mark.parametrize("command", list(GRAPH_COMMANDS))
@pytest.mark.parametrize("graph", ["missing.onnx", "truncated.onnx", "text.onnx"])
def test_bad_graph_file(files, command, graph):
    _needs(command)
    out = _out(command, files, graph)
    res = _invoke(_args(command, files / graph, files / "data.npz", out))
    _assert_clean_failure(res, [files / graph], out)


@pytest.mark.parametrize("command", [c for c, (flag, _) in GRAPH_COMMANDS.items() if flag])
@pytest.mark.parametrize("data", ["missing.npz", "wrong_shape.npz", "no_x.npz", "nan.npz", "garbage.npz"])
def test_bad_data_file(files, command, data):
    _needs(command)
    out = _out(command, files, data)
    res = _invoke(_args(command, files / "good.onnx", files / data, out))
    _assert_clean_failure(res, [files / data], out)


@pytest.mark.parametrize("command", [c for c, (_, suffix) in GRAPH_COMMANDS.items() if suffix])
def test_output_into_a_missing_folder(files, command):
    _needs(command)
    out = files / "no_such_folder" / f"out{GRAPH_COMMANDS[command][1]}"
    res = _invoke(_args(command, files / "good.onnx", files / "data.npz", out))
    _assert_clean_failure(res, [out.parent], None)
    assert not out.parent.exists()


@pytest.mark.parametrize("model", ["missing.pt", "garbage.pt"])
def test_export_bad_model_file(files, model):
    _needs("export")
    (files / "garbage.pt").write_bytes(b"\x80\x04 not a torch file")
    out = files / f"export_{model}.onnx"
    res = _invoke(["export", files / model, "--input-shape", "3", "--timesteps", "4", "-o", out])
    _assert_clean_failure(res, [files / model], out)
