"""Hostile and broken inputs (issue 16; the cases of shared/reports/robustness-2026-12.md).

Every case asserts the command-line contract: exit status, exactly one ``error:`` line on
stderr naming the file/node and the reason, no marker file written by a crafted file, no
output or temporary file left behind. Item numbers refer to the report.
"""
import os
import re
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
    shape = [] if Path(model_file).suffix in (".net", ".nir") else ["--input-shape", "2", "--timesteps", "2"]
    return invoke("export", model_file, *shape, "-o", out, *more), out


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
    psutil = pytest.importorskip("psutil")
    program, module, reason = CALLS[case]
    monkeypatch.chdir(tmp_path)
    before, children = set(sys.modules), {p.pid for p in psutil.Process().children(recursive=True)}
    path = with_pickle(tmp_path / f"{case}.pt", b"\x80\x02" + program)
    res, out = export(path, tmp_path)
    assert_error(res, f"{case}.pt", reason, out=out)
    assert not (tmp_path / "MARKER").exists()
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= children, "a child process was started"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{case}.pt"], "the file wrote something"
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


# -- a tiny graph and data shared by the command cases ----------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from snncompile.ir import Graph, Input, Linear, Neuron, Output
    from snncompile.ir.onnx_format import save_onnx
    d = tmp_path_factory.mktemp("hostile")
    g = Graph("tiny", timesteps=8)
    g.add(Input("in", shape=(3,)))
    g.add(Linear("fc", weight=np.array([[0.6, 0.3, -0.2], [0.1, 0.5, 0.4]])), ["in"])
    g.add(Neuron("lif", shape=(2,), reset_mode="subtract"), ["fc"])
    g.add(Output("out"), ["lif"])
    save_onnx(g, d / "g.onnx")
    rng = np.random.default_rng(0)
    x = (rng.random((400, 8, 3)) < 0.5).astype(np.float32)
    np.savez(d / "d.npz", x=x, y=rng.integers(0, 2, 400))
    np.savez(d / "small.npz", x=x[:4], y=np.array([0, 1, 1, 0]))
    # Long enough that a stop signal lands mid-run even when a loaded machine is slow to start Lava.
    long = (rng.random((4000, 8, 3)) < 0.5).astype(np.float32)
    np.savez(d / "long.npz", x=long, y=rng.integers(0, 2, 4000))
    return d


# -- 13, 14, 15: -o writes only regular files, in the places it can -------------------------
def quantize_to(tiny, out):
    return invoke("quantize", tiny / "g.onnx", "-o", out)


def test_fifo_socket_and_device_are_refused_and_kept(tiny, tmp_path):
    import socket
    import stat
    fifo = tmp_path / "fifo.onnx"
    os.mkfifo(fifo)
    assert_error(quantize_to(tiny, fifo), "fifo.onnx", "FIFO", out=fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    sock_path = tmp_path / "sock.onnx"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    try:
        assert_error(quantize_to(tiny, sock_path), "sock.onnx", "socket", out=sock_path)
        assert stat.S_ISSOCK(os.stat(sock_path).st_mode)
    finally:
        sock.close()
    dev = tmp_path / "null.onnx"
    try:
        os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))   # a /dev/null of our own
    except PermissionError:
        pytest.skip("cannot create a device node here (not root)")
    assert_error(quantize_to(tiny, dev), "null.onnx", "character device", out=dev)
    assert stat.S_ISCHR(os.stat(dev).st_mode)


def test_existing_folder_as_output_is_one_usage_error(tiny, tmp_path):
    res = quantize_to(tiny, tmp_path)
    assert_error(res, "is a directory", status=2)


def test_symlink_is_written_through_and_kept(tiny, tmp_path):
    target = tmp_path / "real.onnx"
    target.write_text("old")
    link = tmp_path / "link.onnx"
    link.symlink_to(target)
    res = quantize_to(tiny, link)
    assert res.exit_code == 0, res.output
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes()[:2] != b"ol" and target.stat().st_size > 100
    dangling = tmp_path / "dangling.onnx"
    dangling.symlink_to(tmp_path / "new.onnx")
    assert quantize_to(tiny, dangling).exit_code == 0
    assert (tmp_path / "new.onnx").stat().st_size > 100 and dangling.is_symlink()


def test_symlink_loop_is_named_a_loop(tiny, tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    a.symlink_to(b)
    b.symlink_to(a)
    assert_error(quantize_to(tiny, a), "symlink loop")


@pytest.mark.parametrize("where", ["/proc/snncompile-x.onnx", "/sys/snncompile-x.onnx", "FILE/x.onnx",
                                   "LONG"])
def test_unwritable_places_give_one_error_line(where, tiny, tmp_path):
    if where == "FILE/x.onnx":
        (tmp_path / "FILE").write_text("a regular file")
        out = tmp_path / where
    elif where == "LONG":
        out = tmp_path / ("n" * 245 + ".onnx")     # legal (250 bytes); its temporary name must fit too
        res = quantize_to(tiny, out)
        assert res.exit_code == 0, res.output
        assert out.stat().st_size > 100 and len(list(tmp_path.iterdir())) == 1
        return
    else:
        out = Path(where)
    assert_error(quantize_to(tiny, out), "cannot write", out=None)
    assert not Path(where).exists()


def test_mode_follows_umask_and_overwrite_keeps_mode(tiny, tmp_path):
    old = os.umask(0o027)
    try:
        assert quantize_to(tiny, tmp_path / "m.onnx").exit_code == 0
    finally:
        os.umask(old)
    assert (tmp_path / "m.onnx").stat().st_mode & 0o777 == 0o640
    os.chmod(tmp_path / "m.onnx", 0o604)
    assert quantize_to(tiny, tmp_path / "m.onnx").exit_code == 0
    assert (tmp_path / "m.onnx").stat().st_mode & 0o777 == 0o604


def test_hard_link_keeps_the_old_content(tiny, tmp_path):
    """Documented: an output is a new file moved into place (all or nothing), so another
    hard link to the file it replaces keeps the old content."""
    out = tmp_path / "m.onnx"
    out.write_text("old")
    os.link(out, tmp_path / "other")
    assert quantize_to(tiny, out).exit_code == 0
    assert (tmp_path / "other").read_text() == "old" and out.stat().st_size > 100


# -- 18: click's own errors follow the same contract ------------------------------------------
@pytest.mark.parametrize("args, words", [
    (["export", "FOLDER"], ["'MODEL'", "is a directory"]),
    (["run", "G", "--input", "D", "--steps", "-5"], ["--steps", "-5"]),
    (["run", "G", "--input", "D", "--steps", "abc"], ["--steps", "'abc'"]),
    (["run", "G"], ["--input"]),
    (["energy", "G", "--input", "D", "--bogus"], ["--bogus"]),
    (["nosuchcommand"], ["nosuchcommand"]),
])
def test_usage_errors_are_one_error_line(args, words, tiny):
    args = [str(tiny) if a == "FOLDER" else str(tiny / "g.onnx") if a == "G" else
            str(tiny / "small.npz") if a == "D" else a for a in args]
    res = invoke(*args)
    line = assert_error(res, *words, status=2)
    assert "Usage:" not in res.output and "--help" in line


def test_usage_error_in_a_subprocess(tiny):
    res = subprocess.run([sys.executable, "-m", "snncompile.cli", "run", str(tiny / "g.onnx"), "--input",
                          str(tiny / "small.npz"), "--steps", "-5"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: ")


# -- 11, 12: a stop signal during a Lava run leaves nothing behind --------------------------
def _stop_mid_run(args, cwd, signum, whole_group=False):
    """Start the command, wait until Lava's workers run, signal it; return (result, workers
    and shared memory that were seen, those still there 5 s after it exited)."""
    import signal
    import time
    psutil = pytest.importorskip("psutil")
    proc = subprocess.Popen([sys.executable, "-m", "snncompile.cli", *map(str, args)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    parent, kids, deadline = psutil.Process(proc.pid), [], time.time() + 120
    while time.time() < deadline and len(kids) < 3 and proc.poll() is None:
        time.sleep(0.2)
        kids = parent.children(recursive=True)
    time.sleep(1.0)
    kids = parent.children(recursive=True)
    shm = set()
    for p in [parent, *kids]:
        try:
            shm |= {m.path for m in p.memory_maps() if m.path.startswith("/dev/shm/")}
        except psutil.Error:
            pass
    assert proc.poll() is None, "the run ended before the signal: use more samples"
    (os.killpg if whole_group else os.kill)(proc.pid, signum)
    out, err = proc.communicate(timeout=60)
    time.sleep(5)
    alive = [k.pid for k in kids if k.is_running() and k.status() != psutil.STATUS_ZOMBIE]
    return proc.returncode, err, len(kids), alive, sorted(s for s in shm if os.path.exists(s)), len(shm)


@pytest.mark.lava
@pytest.mark.slow
@pytest.mark.parametrize("command, extra, group, signame", [
    ("run", ["--backend", "lava", "-o", "out.npz"], False, "SIGTERM"),
    ("energy", ["--backend", "lava", "-o", "out.json"], True, "SIGTERM"),
    ("verify", ["--lava-samples", "4000"], False, "SIGTERM"),
    ("run", ["--backend", "lava", "-o", "out.npz"], True, "SIGHUP"),
])
def test_stop_signal_during_lava_run_leaves_nothing(command, extra, group, signame, tiny, tmp_path):
    import signal
    signum = getattr(signal, signame)
    rc, err, n_kids, alive, shm_left, n_shm = _stop_mid_run(
        [command, tiny / "g.onnx", "--input", tiny / "long.npz", *extra], tmp_path, signum, group)
    assert n_kids >= 3 and n_shm > 0, "Lava was not running when the signal came"
    assert rc == 128 + signum, err
    # stderr: the command's progress lines (issue 14's feedback), then exactly one error line
    lines = err.splitlines()
    assert lines[-1].startswith(f"error: stopped by {signame}"), err
    assert [line for line in lines if line.startswith("error")] == lines[-1:], err
    assert all(re.match(r"^[a-z]+ \([a-z, ]+\): \d+(/\d+)? samples( \.\.\.)?$|^verify: running Lava on \d+ sample",
                        line) for line in lines[:-1]), err
    assert alive == [], f"{len(alive)} process(es) of the run still alive 5 s later"
    assert shm_left == [], f"shared memory left: {shm_left[:3]}"
    assert list(tmp_path.iterdir()) == [], "an output or temporary file was left"


# -- 5, 6: crafted ONNX, re-signed (the digest is a checksum, not a signature) ----------------
def _meta_set(m, key, value):
    for p in m.metadata_props:
        if p.key == key:
            p.value = value
            return
    m.metadata_props.add(key=key, value=value)


def _meta_get(m, key):
    return next(p.value for p in m.metadata_props if p.key == key)


def _init_set(m, name, arr):
    from onnx import numpy_helper
    i = next(i for i, t in enumerate(m.graph.initializer) if t.name == name)
    m.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.asarray(arr), name))


def _fixed_field(m, node, field, spec):
    import json
    d = json.loads(_meta_get(m, "snncompile.fixed:" + node))
    d["fields"][field] = spec
    _meta_set(m, "snncompile.fixed:" + node, json.dumps(d))


def _self_loop(m):
    from onnx import helper
    from snncompile.ir.onnx_format import DOMAIN
    m.graph.node.insert(0, helper.make_node("Delay", [], ["fc_d"], name="fc_d", domain=DOMAIN, source="fc"))
    m.graph.node[1].input[0] = "fc_d"


#: case -> (edit of the quantized tiny graph, words of the error)
CRAFTED_ONNX = {
    "self_loop_delay": (_self_loop, ["fc"]),
    "timesteps_text": (lambda m: _meta_set(m, "snncompile.timesteps", "abc"), ["timesteps", "'abc'"]),
    "timesteps_negative": (lambda m: _meta_set(m, "snncompile.timesteps", "-3"), ["timesteps", "'-3'"]),
    "timesteps_1e9": (lambda m: _meta_set(m, "snncompile.timesteps", "1000000000"), ["timesteps"]),
    "timesteps_float": (lambda m: _meta_set(m, "snncompile.timesteps", "4.5"), ["timesteps"]),
    "meta_is_a_list": (lambda m: _meta_set(m, "snncompile.meta", "[1, 2]"), ["JSON object", "list"]),
    "vth_2e40": (lambda m: _init_set(m, "lif::fixed.vth", np.array(2 ** 40)), ["'lif'", "vth", "131071"]),
    "vth_negative": (lambda m: _init_set(m, "lif::fixed.vth", np.array(-5)), ["'lif'", "vth = -5"]),
    "vth_string": (lambda m: _fixed_field(m, "lif", "vth", {"value": "abc", "type": "str"}), ["vth", "integers"]),
    "vth_bigint": (lambda m: _fixed_field(m, "lif", "vth", {"value": 10 ** 30, "type": "int"}), ["vth"]),
    "weight_wrong_shape": (lambda m: _init_set(m, "fc::fixed.weight", np.ones((3, 2), np.int64)),
                           ["'fc'", "shape (3, 2)"]),
    "weight_1d": (lambda m: _init_set(m, "fc::fixed.weight", np.ones((1,), np.int64)), ["'fc'", "shape (1,)"]),
    "weight_2e40": (lambda m: _init_set(m, "fc::fixed.weight", np.full((2, 3), 2 ** 40)), ["'fc'", "[-256, 255]"]),
    "weight_nan": (lambda m: _init_set(m, "fc::fixed.weight", np.full((2, 3), np.nan)), ["'fc'", "float64"]),
    "du_99999": (lambda m: _init_set(m, "lif::fixed.du", np.array(99999)), ["du = 99999"]),
    "bias_exp_1e6": (lambda m: _init_set(m, "lif::fixed.bias_exp", np.array(10 ** 6)), ["bias_exp = 1000000"]),
    "bias_mant_2e20": (lambda m: _init_set(m, "lif::fixed.bias_mant", np.array(2 ** 20)), ["bias_mant"]),
    "weight_exp_200": (lambda m: _fixed_field(m, "fc", "weight_exp", {"value": 200, "type": "int"}),
                       ["weight_exp = 200"]),
    "reset_mode_bogus": (lambda m: _fixed_field(m, "lif", "reset_mode", {"value": "bogus", "type": "str"}),
                         ["reset_mode 'bogus'"]),
    "message_bits_99": (lambda m: _fixed_field(m, "in", "num_message_bits", {"value": 99, "type": "int"}),
                        ["num_message_bits = 99"]),
    "scale_nan": (lambda m: _fixed_field(m, "in", "scale", {"value": float("nan"), "type": "float"}), ["scale"]),
    "fields_a_list": (lambda m: _meta_set(m, "snncompile.fixed:lif", '{"dataclass": "NeuronFixed", "fields": [1]}'),
                      ["'lif'", "fields"]),
    "fixed_on_wrong_kind": (lambda m: _meta_set(m, "snncompile.fixed:fc", _meta_get(m, "snncompile.fixed:in")),
                            ["'fc'", "InputFixed"]),
    "fixed_of_no_node": (lambda m: _meta_set(m, "snncompile.fixed:nonode", _meta_get(m, "snncompile.fixed:in")),
                         ["nonode"]),
    "graph_name_newline": (lambda m: _meta_set(m, "snncompile.graph_name", "tiny\nerror: injected"),
                           ["control character"]),
}


@pytest.fixture(scope="module")
def quantized(tiny):
    res = invoke("quantize", tiny / "g.onnx", "-o", tiny / "gq.onnx")
    assert res.exit_code == 0, res.output
    return tiny / "gq.onnx"


def resign(src, dst, edit):
    import onnx
    from snncompile.ir.onnx_format import stamp_digest
    m = onnx.load(str(src))
    edit(m)
    onnx.save(stamp_digest(m), str(dst))
    return dst


@pytest.mark.parametrize("case", sorted(CRAFTED_ONNX))
def test_crafted_onnx_gives_one_error_line(case, quantized, tiny, tmp_path):
    edit, words = CRAFTED_ONNX[case]
    path = resign(quantized, tmp_path / f"{case}.onnx", edit)
    assert_error(invoke("inspect", path), f"{case}.onnx", *words)
    out = tmp_path / "o.npz"
    res = invoke("run", path, "--input", tiny / "small.npz", "--backend", "emulator", "--precision", "fixed",
                 "-o", out)
    assert_error(res, f"{case}.onnx", *words, out=out)


# -- 4, 6, 7: netx files ------------------------------------------------------------------
CUBA = dict(type=b"CUBA", iDecay=1024, vDecay=128, vThMant=1500, refDelay=1, gradedSpike=False)


def write_netx(path, layers):
    import h5py

    def put(group, spec):
        for key, value in spec.items():
            if isinstance(value, dict):
                put(group.create_group(key), value)
            elif isinstance(value, tuple) and value[0] == "DECLARED":      # declared, never written
                group.create_dataset(key, shape=value[1], dtype="f4")
            else:
                group.create_dataset(key, data=value)
    with h5py.File(path, "w") as f:
        root = f.create_group("layer")
        for i, spec in enumerate(layers):
            put(root.create_group(str(i)), spec)
    return path


def netx_layers(conv=None, dense=None, neuron=None):
    rng = np.random.default_rng(0)
    return [
        {"type": b"input", "shape": np.array([2, 6, 6])},
        {"type": b"conv", "shape": np.array([3, 4, 4]), "weight": rng.integers(-40, 100, (3, 2, 3, 3, 1)),
         "bias": rng.integers(-5, 10, 3), "stride": np.array([1, 1]), "padding": np.array([0, 0]),
         "dilation": np.array([1, 1]), "groups": 1, "neuron": dict(CUBA, **(neuron or {})), **(conv or {})},
        {"type": b"flatten"},
        {"type": b"dense", "shape": np.array([5]), "weight": rng.integers(-30, 80, (5, 48)),
         "bias": rng.integers(0, 40, 5), "neuron": dict(CUBA), **(dense or {})},
    ]


NAN_W = np.full((5, 48), np.nan)
CRAFTED_NETX = {
    "nan_decay": (dict(neuron={"iDecay": np.nan}), ["layer 1", "iDecay", "NaN"]),
    "zero_stride": (dict(conv={"stride": np.array([0, 0])}), ["layer 1", "stride", ">= 1"]),
    "negative_stride": (dict(conv={"stride": np.array([-1, -1])}), ["layer 1", "stride"]),
    "negative_padding": (dict(conv={"padding": np.array([-2, -2])}), ["layer 1", "padding", ">= 0"]),
    "weight_5d": (dict(conv={"weight": np.ones((3, 2, 3, 3, 2), np.int64)}), ["layer 1", "conv weight"]),
    "nan_weights": (dict(dense={"weight": NAN_W}), ["layer 3", "NaN"]),
    "inf_weights": (dict(dense={"weight": np.full((5, 48), np.inf)}), ["layer 3", "NaN or Inf"]),
    "zero_size_shape": (dict(dense={"shape": np.array([0])}), ["layer 3", "positive"]),
    "declared_never_written": (dict(dense={"weight": ("DECLARED", (1 << 18, 1 << 18))}), ["MiB"]),
    "bias_2e20": (dict(conv={"bias": np.full(3, 2 ** 20)}), ["1.neuron", "bias_mant"]),
    "threshold_2e20": (dict(neuron={"vThMant": 2 ** 20}), ["1.neuron", "vth"]),
    "idecay_99999": (dict(neuron={"iDecay": 99999}), ["1.neuron", "du"]),
    "conv_weight_2e40": (dict(conv={"weight": np.full((3, 2, 3, 3, 1), 2 ** 40)}), ["1.conv", "weight"]),
}


@pytest.mark.parametrize("case", sorted(CRAFTED_NETX))
def test_crafted_netx_gives_one_error_line(case, tmp_path):
    edits, words = CRAFTED_NETX[case]
    path = write_netx(tmp_path / f"{case}.net", netx_layers(**edits))
    assert path.stat().st_size < 100_000
    res, out = export(path, tmp_path)
    assert_error(res, f"{case}.net", *words, out=out)


def test_valid_netx_still_exports(tmp_path):
    res, out = export(write_netx(tmp_path / "ok.net", netx_layers()), tmp_path)
    assert res.exit_code == 0, res.output
    assert out.stat().st_size > 1000


# -- 4, 19: NIR files ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def nir_file(tiny):
    from snncompile.interop.nir import write_nir
    from snncompile.ir.onnx_format import load_onnx
    write_nir(load_onnx(tiny / "g.onnx"), tiny / "g.nir")
    return tiny / "g.nir"


def _edit_h5(src, dst, edit):
    import shutil
    import h5py
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


def _retype(f, name, new):
    del f[name]
    f[name] = new


CRAFTED_NIR = {
    "unknown_node_type": (lambda f: _retype(f, "node/nodes/lif/type", b"Bogus"),
                          ["node 'node/nodes/lif'", "'Bogus'", "does not define"]),
    "declared_never_written": (lambda f: (f["node/nodes/fc"].__delitem__("weight"),
                                          f["node/nodes/fc"].create_dataset("weight", shape=(1 << 18, 1 << 18),
                                                                            dtype="f4")), ["MiB"]),
    "timesteps_nan": (lambda f: _retype(f, "node/metadata/timesteps", np.nan), ["timesteps"]),
    "timesteps_negative": (lambda f: _retype(f, "node/metadata/timesteps", -4), ["timesteps"]),
}


@pytest.mark.parametrize("case", sorted(CRAFTED_NIR))
def test_crafted_nir_gives_one_error_line(case, nir_file, tmp_path):
    edit, words = CRAFTED_NIR[case]
    path = _edit_h5(nir_file, tmp_path / f"{case}.nir", edit)
    assert path.stat().st_size < 100_000
    res, out = export(path, tmp_path)
    assert_error(res, f"{case}.nir", *words, out=out)


# -- 8, 9, 10, 17, 19: data inputs ---------------------------------------------------------
DATA_CASES = {
    "zero_samples": (dict(x=np.zeros((0, 8, 3))), ["0 samples"]),
    "zero_d_x": (dict(x=np.array(1.0)), ["0-d"]),
    "label_99": (dict(x=np.ones((2, 8, 3)), y=np.array([0, 99])), ["label 99", "2 outputs"]),
    "label_minus_1": (dict(x=np.ones((2, 8, 3)), y=np.array([-1, 0])), ["label -1"]),
    "label_2e63": (dict(x=np.ones((2, 8, 3)), y=np.array([2 ** 63, 0], dtype=np.uint64)), ["label 9223372036854775808"]),
    "zero_d_y": (dict(x=np.ones((2, 8, 3)), y=np.array(1)), ["'y'"]),
}


def _data(tmp_path, case):
    arrays, words = DATA_CASES[case]
    np.savez(tmp_path / f"{case}.npz", **arrays)
    return tmp_path / f"{case}.npz", words


@pytest.mark.parametrize("case", sorted(DATA_CASES))
@pytest.mark.parametrize("command", ["run_reference", "run_emulator", "verify", "energy"])
def test_bad_data_gives_one_error_line(command, case, tiny, tmp_path):
    if command == "energy" and case.startswith("label"):
        pytest.skip("energy does not read labels")
    data, words = _data(tmp_path, case)
    out = tmp_path / "o.npz"
    args = {"run_reference": ["run", tiny / "g.onnx", "--input", data, "-o", out],
            "run_emulator": ["run", tiny / "g.onnx", "--input", data, "--backend", "emulator",
                             "--precision", "fixed", "-o", out],
            "verify": ["verify", tiny / "g.onnx", "--input", data, "--no-lava-float", "--lava-samples", "1"],
            "energy": ["energy", tiny / "g.onnx", "--input", data, "-o", tmp_path / "o.json"]}[command]
    assert_error(invoke(*args), f"{case}.npz", *words, out=out)


@pytest.mark.parametrize("case", ["zero_samples", "zero_d_x"])
def test_bad_calibration_data_gives_one_error_line(case, tiny, tmp_path):
    data, words = _data(tmp_path, case)
    out = tmp_path / "q.onnx"
    assert_error(invoke("quantize", tiny / "g.onnx", "--calib", data, "-o", out), f"{case}.npz", *words, out=out)


@pytest.mark.parametrize("steps", ["1000000000", "100000000000000"])
def test_huge_steps_are_refused_before_allocating(steps, tiny, tmp_path):
    out = tmp_path / "o.npz"
    np.savez(tmp_path / "static.npz", x=np.ones((4, 3)))
    res = invoke("run", tiny / "g.onnx", "--input", tmp_path / "static.npz", "--steps", steps, "-o", out)
    assert_error(res, "GiB", "fewer samples or steps", out=out)


def test_input_special_files_are_named(tiny, tmp_path):
    os.mkfifo(tmp_path / "fifo.npz")
    assert_error(invoke("run", tiny / "g.onnx", "--input", tmp_path / "fifo.npz"), "fifo.npz", "FIFO")
    (tmp_path / "a.npz").symlink_to(tmp_path / "b.npz")
    (tmp_path / "b.npz").symlink_to(tmp_path / "a.npz")
    assert_error(invoke("run", tiny / "g.onnx", "--input", tmp_path / "a.npz"), "a.npz", "symlink loop")
    np.save(tmp_path / "arr.npy", np.ones((2, 8, 3)))
    os.rename(tmp_path / "arr.npy", tmp_path / "arr.npz")
    assert_error(invoke("run", tiny / "g.onnx", "--input", tmp_path / "arr.npz"), "arr.npz", ".npy array")


def test_a_state_dict_of_an_int_says_an_int(tmp_path):
    torch.save(5, tmp_path / "five.pt")
    res, out = export(tmp_path / "five.pt", tmp_path)
    assert_error(res, "holds an int,", out=out)


@pytest.mark.parametrize("suffix, command", [(".onnx", "inspect"), (".pt", "export"), (".net", "export"),
                                             (".nir", "export")])
def test_model_and_graph_special_files_are_named(suffix, command, tmp_path):
    os.mkfifo(tmp_path / f"fifo{suffix}")
    extra = ["--input-shape", "2", "--timesteps", "2"] if suffix == ".pt" else []
    assert_error(invoke(command, tmp_path / f"fifo{suffix}", *extra), f"fifo{suffix}", "FIFO")
    (tmp_path / f"a{suffix}").symlink_to(tmp_path / f"b{suffix}")
    (tmp_path / f"b{suffix}").symlink_to(tmp_path / f"a{suffix}")
    assert_error(invoke(command, tmp_path / f"a{suffix}", *extra), f"a{suffix}", "symlink loop")


def test_nir_node_name_with_a_newline_is_refused(nir_file, tmp_path):
    path = _edit_h5(nir_file, tmp_path / "nl.nir", lambda f: f.move("node/nodes/fc", "node/nodes/fc\nerror: x"))
    res, out = export(path, tmp_path)
    assert_error(res, "nl.nir", "control character", out=out)


# -- 20: a note while numba compiles the event kernel on a cold cache -------------------------
@pytest.mark.slow
def test_cold_numba_cache_gives_a_note_and_a_warm_one_none(tmp_path):
    code = ("import numpy as np\nfrom targets.emulator.kernel_cache import cold_cache_note\n"
            "print(cold_cache_note(np.uint8))")
    cold = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)})
    assert cold.stdout.startswith("note: numba is compiling the emulator's event kernel"), cold.stderr
    warm = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert warm.stdout.strip() == "None", "the kernel cache of this checkout is cold: run make install"


def test_functions_a_model_keeps_are_the_real_ones(tmp_path):
    """Norse keeps its step function and a bound ``initial_state``: loaded as themselves."""
    import norse.torch as norse
    from snncompile.frontend.unpickler import load_zip
    model = norse.LICell()
    torch.save(model, tmp_path / "li.pt")
    got = load_zip(tmp_path / "li.pt")
    x = torch.rand(2, 3)
    assert got.activation is model.activation and torch.equal(got(x)[0], model(x)[0])
    assert got.state_fallback.__self__ is got


def test_deflated_pickle_bomb_is_refused_unread(tmp_path):
    """torch.save stores data.pkl uncompressed; a crafted zip may deflate 100 MB into 100 KB."""
    path = tmp_path / "zipbomb.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("m/data.pkl", b"\x80\x02" + b"N" * (100 << 20) + b".")
    assert path.stat().st_size < 1_000_000
    res, out = export(path, tmp_path)
    assert_error(res, "zipbomb.pt", "64 MiB", out=out)
