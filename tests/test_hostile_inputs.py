"""Hostile and broken inputs (issue 16; the cases of shared/reports/robustness-2026-12.md).

Every case asserts the command-line contract: exit status, exactly one ``error:`` line on
stderr naming the file/node and the reason, no marker file written by a crafted file, no
output or temporary file left behind. Item numbers refer to the report.
"""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from snncompile.cli import main

REPO = Path(__file__).resolve().parents[1]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_error(res, *words, out=None, status=1):
    """One ``error:`` line containing ``words``, exit ``status``, and ``out`` not written."""
    assert res.exit_code == status, (res.exit_code, res.output, res.exception)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output and "internal error" not in lines[0], res.output
    for w in words:
        assert w in lines[0], lines[0]
    if out is not None:
        out = Path(out)
        assert not out.exists() or not out.is_file() or out.stat().st_size == 0 or out.name == "keep", out
        assert not list(out.parent.glob(f".{out.name}*")), "temporary file left behind"
    return lines[0]


def with_pickle(path: Path, program: bytes) -> Path:
    """A torch.save archive whose data.pkl is replaced by ``program`` (a crafted pickle)."""
    torch.save(nn.Linear(2, 2), path)
    with zipfile.ZipFile(path) as z:
        blobs = {n: z.read(n) for n in z.namelist()}
    pkl = next(n for n in blobs if n.endswith("/data.pkl"))
    blobs[pkl] = program
    with zipfile.ZipFile(path, "w") as z:
        for name, blob in blobs.items():
            z.writestr(name, blob)
    return path


def export(model_file, tmp_path, *more):
    out = tmp_path / "out.onnx"
    return invoke("export", model_file, "--input-shape", "2", "--timesteps", "2", "-o", out, *more), out


# -- 1, 2: crafted pickles call nothing, import nothing --------------------------------------
CALLS = {
    "norse_test_function": (b"cnorse.torch.functional.test.test_lif\ntest_lif_heavi\n)R.",
                            "norse.torch.functional.test.test_lif", "not on the allow-list"),
    "model_dump_main": (b"ctorch.utils.model_dump.__main__\nmain\n)R.",
                        "torch.utils.model_dump.__main__", "not on the allow-list"),
    "plot_surrogate": (b"cspikingjelly.activation_based.surrogate\nplot_surrogate_function\n)R.",
                       None, "not a module, parameter or autograd class"),
    "class_with_constructor_args": (b"ctorch.nn.modules.linear\nLinear\nJ\x00\x00\x01\x00J\x00\x00\x01\x00\x86R.",
                                    None, "calling torch.nn.modules.linear.Linear"),
    "referenced_function_called": (b"cnorse.torch.functional.reset\nreset_value\n(K\x01K\x01K\x01K\x01tR.",
                                   None, "calling"),
    "getattr_dunder": (b"c__builtin__\ngetattr\nctorch.nn.modules.linear\nLinear\nX\x08\x00\x00\x00__init__\x86R.",
                       None, "getattr(torch.nn.modules.linear.Linear, '__init__')"),
    "os_system": (b"cposix\nsystem\nX\x0c\x00\x00\x00touch MARKER\x85R.", "posix", "not on the allow-list"),
}


@pytest.mark.parametrize("case", sorted(CALLS))
def test_crafted_pickle_runs_nothing_and_imports_nothing(case, tmp_path, monkeypatch):
    program, module, reason = CALLS[case]
    monkeypatch.chdir(tmp_path)
    before = set(sys.modules)
    path = with_pickle(tmp_path / f"{case}.pt", b"\x80\x02" + program)
    res, out = export(path, tmp_path)
    assert_error(res, f"{case}.pt", reason, out=out)
    assert not (tmp_path / "MARKER").exists()
    if module:
        assert module not in sys.modules or module in before


def test_model_dump_main_is_not_run_in_a_subprocess(tmp_path):
    """Item 2 as the report found it: importing the module ran its sys.exit(main(argv))."""
    path = with_pickle(tmp_path / "dump.pt", b"\x80\x02ctorch.utils.model_dump.__main__\nmain\n)R.")
    res = subprocess.run([sys.executable, "-m", "snncompile.cli", "export", str(path), "--input-shape", "2",
                          "--timesteps", "2", "-o", str(tmp_path / "o.onnx")], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: "), res.stderr
    assert "usage" not in res.stderr.lower() and "not on the allow-list" in res.stderr
    assert not (tmp_path / "o.onnx").exists()


# -- 3: hooks are refused by name, with and without --trust-code ------------------------------
def _hooked_model():
    from norse.torch.functional.reset import reset_value
    from spikingjelly.activation_based import neuron
    model = nn.Sequential(nn.Linear(2, 2), neuron.IFNode())
    model[0].register_forward_hook(reset_value)     # any picklable allowed function will do
    return model


@pytest.mark.parametrize("trust", [False, True])
@pytest.mark.parametrize("kind", ["forward", "forward_pre"])
def test_hooks_are_refused_not_dropped(kind, trust, tmp_path):
    from norse.torch.functional.reset import reset_value
    from spikingjelly.activation_based import neuron
    model = nn.Sequential(nn.Linear(2, 2), neuron.IFNode())
    getattr(model[0], f"register_{kind}_hook")(reset_value)
    torch.save(model, tmp_path / "hooked.pt")
    res, out = export(tmp_path / "hooked.pt", tmp_path, *(["--trust-code"] if trust else []))
    assert_error(res, "hooked.pt", "module '0'", f"{kind.replace('_', ' ')} hook", out=out)


def test_instance_forward_replacement_is_refused(tmp_path):
    """BUILD may not shadow a class method (forward) with the file's own value."""
    from spikingjelly.activation_based import neuron
    torch.save(nn.Sequential(nn.Linear(2, 2), neuron.IFNode()), tmp_path / "m.pt")
    with zipfile.ZipFile(tmp_path / "m.pt") as z:
        names = z.namelist()
        pkl = z.read(next(n for n in names if n.endswith("data.pkl")))
    # the first module state dict gains a 'forward' entry: "X\x07forward" + a None value
    marker = b"X\x08\x00\x00\x00training"
    assert marker in pkl
    crafted = pkl.replace(marker, b"X\x07\x00\x00\x00forwardNX\x08\x00\x00\x00training", 1)
    path = with_pickle(tmp_path / "fwd.pt", crafted)
    res, out = export(path, tmp_path)
    assert_error(res, "fwd.pt", "'forward'", out=out)


# -- 4: memory bombs are refused before allocating --------------------------------------------
@pytest.mark.parametrize("trust", [False, True])
def test_stride0_weight_declaring_terabytes_is_refused(trust, tmp_path):
    from spikingjelly.activation_based import neuron
    lin = nn.Linear(2, 2)
    lin.weight = nn.Parameter(torch.zeros(1).expand(1 << 20, 1 << 20), requires_grad=False)  # 4 TiB view
    torch.save(nn.Sequential(lin, neuron.IFNode()), tmp_path / "bomb.pt")
    assert (tmp_path / "bomb.pt").stat().st_size < 10_000
    res, out = export(tmp_path / "bomb.pt", tmp_path, *(["--trust-code"] if trust else []))
    assert_error(res, "bomb.pt", "GiB limit", out=out)


def test_storage_smaller_than_declared_is_refused(tmp_path):
    from spikingjelly.activation_based import neuron
    torch.save(nn.Sequential(nn.Linear(2, 2), neuron.IFNode()), tmp_path / "m.pt")
    with zipfile.ZipFile(tmp_path / "m.pt") as z:
        blobs = {n: z.read(n) for n in z.namelist()}
    key = next(n for n in blobs if "/data/" in n and len(blobs[n]) == 16)   # the 2x2 weight
    blobs[key] = blobs[key][:8]
    with zipfile.ZipFile(tmp_path / "cut.pt", "w") as z:
        for name, blob in blobs.items():
            z.writestr(name, blob)
    res, out = export(tmp_path / "cut.pt", tmp_path)
    assert_error(res, "cut.pt", "holds 8 bytes", out=out)


def test_view_past_its_storage_is_refused(tmp_path):
    from spikingjelly.activation_based import neuron
    torch.save(nn.Sequential(nn.Linear(2, 2), neuron.IFNode()), tmp_path / "m.pt")
    with zipfile.ZipFile(tmp_path / "m.pt") as z:
        pkl = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    # the weight's offset (BININT1 0 after the storage id) becomes 9: past the 4-element storage
    crafted = pkl.replace(b"QK\x00K\x02K\x02\x86", b"QK\x09K\x02K\x02\x86", 1)
    assert crafted != pkl
    res, out = export(with_pickle(tmp_path / "off.pt", crafted), tmp_path)
    assert_error(res, "off.pt", "reaches element", out=out)


def test_shipped_model_still_loads():
    from snncompile.frontend import load_model
    model = load_model(REPO / "snncompile" / "data" / "mnist_convsnn.pt")
    assert sum(p.numel() for p in model.parameters()) > 1000
