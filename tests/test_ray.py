"""`--ray ADDRESS`: run and energy sharded over a real local Ray cluster give the
single-process bytes; a killed worker is retried; one that is always killed ends the
command with an error naming the chunk and no output file.

The cluster is started once for the module (``cluster.local_head``: ``ray start --head`` on
127.0.0.1, 2 CPUs, a small object store, its own temp dir and ports) and stopped in a
``finally``: its process group (gcs, raylet, agents) and the raylet's workers, nothing else.
"""
import filecmp
import json
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time

import numpy as np
import pytest

from snncompile.ir import Conv2d, Flatten, Graph, Input, Linear, Neuron, Output, SumPool2d
from snncompile.ir.onnx_format import save_onnx

N, T, CHUNK = 300, 8, 70      # the chunk size does not divide N
TASK_TITLE = "ray::_run_task"  # a Ray worker's process title while it runs a chunk


def _graph() -> Graph:
    """A conv SNN firing ~13 % (lif1) and ~30 % (lif2) on the data below."""
    rng = np.random.default_rng(5)
    g = Graph("raynet", timesteps=T)
    g.add(Input("in", shape=(2, 12, 12)))
    g.add(Conv2d("conv", weight=rng.normal(0.08, 0.3, size=(6, 2, 3, 3)).astype(np.float32), padding=1), ["in"])
    g.add(Neuron("lif1", shape=(6, 12, 12), dv=0.2, threshold=1.0, reset_mode="subtract"), ["conv"])
    g.add(SumPool2d("pool", kernel_size=2, stride=2), ["lif1"])
    g.add(Flatten("flat"), ["pool"])
    g.add(Linear("fc", weight=rng.normal(0.0, 0.12, size=(10, 216)), bias=np.full(10, 0.02)), ["flat"])
    g.add(Neuron("lif2", shape=(10,), dv=0.1, threshold=1.0, reset_mode="zero"), ["fc"])
    g.add(Output("out"), ["lif2"])
    return g


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """Address of a fresh 2-CPU Ray head on 127.0.0.1; stopped, workers included, afterwards."""
    pytest.importorskip("ray")
    from snncompile.cluster import local_head

    with local_head(num_cpus=2) as address:
        yield address


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ray")
    rng = np.random.default_rng(11)
    save_onnx(_graph(), d / "g.onnx")
    np.savez(d / "data.npz", x=rng.random((N, T, 2, 12, 12)) < 0.25, y=rng.integers(0, 10, N))
    return d


def _cli(cwd, *args):
    """The command in this process (a CLI subprocess would import torch again: ~10 s here)."""
    from click.testing import CliRunner

    from snncompile.cli import main

    old = os.getcwd()
    os.chdir(cwd)     # relative paths, as a user types them: the workers must not depend on them
    try:
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    finally:
        os.chdir(old)


def _run(files, out, *extra):
    res = _cli(files, "run", "g.onnx", "-i", "data.npz", "-o", out, "--chunk-size", CHUNK, *extra)
    assert res.exit_code == 0, res.output
    return files / out


def _error_lines(res):
    return [line for line in res.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.slow
def test_run_and_energy_over_ray_are_the_single_process_bytes(cluster, files):
    # (the reference float backend over Ray: the retry test below)
    local = _run(files, "emulator.local.npz", "--backend", "emulator", "--precision", "fixed")
    ray = _run(files, "emulator.ray.npz", "--backend", "emulator", "--precision", "fixed", "--ray", cluster)
    assert filecmp.cmp(local, ray, shallow=False)
    with np.load(ray) as out:
        assert out["spikes"].shape == (N, T, 10)
        assert 0.05 < out["spikes"].mean() < 0.6        # the output really fires
        assert len(np.unique(out["pred"])) > 1
    reports = []
    for name, extra in (("local", ()), ("ray", ("--ray", cluster))):
        res = _cli(files, "energy", "g.onnx", "-i", "data.npz", "-o", f"e.{name}.json", "--backend", "emulator",
                   "--precision", "fixed", "--chunk-size", CHUNK, *extra)
        assert res.exit_code == 0, res.output
        reports.append(files / f"e.{name}.json")
    assert filecmp.cmp(*reports, shallow=False)
    layers = {l["name"]: l for l in json.loads(reports[1].read_text())["layers"]}
    assert 0.05 < layers["lif1"]["firing_rate"] < 0.3 and 0.05 < layers["lif2"]["firing_rate"] < 0.6
    assert layers["fc"]["synops_per_sample"] > 0


class _Killer(threading.Thread):
    """SIGKILLs every process that runs a chunk (``once``: only the first one it sees)."""

    def __init__(self, once: bool):
        super().__init__(daemon=True)
        self.once, self.killed, self.stop = once, [], threading.Event()

    def run(self):
        import psutil
        while not self.stop.is_set():
            for p in psutil.process_iter(["cmdline"]):
                cmd = p.info["cmdline"] or []
                if cmd and cmd[0].startswith(TASK_TITLE):
                    try:
                        os.kill(p.pid, signal.SIGKILL)
                        self.killed.append(p.pid)
                    except ProcessLookupError:
                        continue
                    if self.once:
                        return
            time.sleep(0.01)


def _run_while_killing(cluster, files, out, once):
    killer = _Killer(once)
    killer.start()
    try:   # the reference backend: a few hundred ms per chunk, time enough to be killed
        return _cli(files, "run", "g.onnx", "-i", "data.npz", "-o", out, "--chunk-size", CHUNK,
                    "--ray", cluster), killer.killed
    finally:
        killer.stop.set()
        killer.join()


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_the_output_is_the_same(cluster, files):
    local = _run(files, "reference.local.npz")
    res, killed = _run_while_killing(cluster, files, "retried.npz", once=True)
    assert len(killed) == 1, "no chunk was running when the killer looked"
    assert res.exit_code == 0, res.output
    assert filecmp.cmp(local, files / "retried.npz", shallow=False)
    with np.load(local) as out:
        assert 0.05 < out["spikes"].mean() < 0.6


@pytest.mark.slow
def test_a_worker_killed_every_try_ends_with_an_error_naming_the_chunk(cluster, files):
    res, killed = _run_while_killing(cluster, files, "never.npz", once=False)
    assert len(killed) >= 3
    assert res.exit_code == 1
    (line,) = _error_lines(res)
    assert re.fullmatch(r"error: chunk \d+/5 \(samples \d+\.\.\d+\) of '.*data\.npz' failed on the Ray "
                        r"cluster after 3 tries: \w+: .*", line), line
    assert not (files / "never.npz").exists()
    assert not [p for p in files.iterdir() if p.name.startswith(".never")]   # no temporary left


@pytest.mark.slow
def test_an_error_of_the_job_names_the_chunk_and_is_not_retried(cluster, files):
    x = (np.random.default_rng(2).random((N, T, 2, 12, 12)) < 0.25).astype(np.float64)
    x[200, 1, 0, 3, 3] = np.nan   # found by the worker that reads chunk 3 (samples 140..209)
    np.savez(files / "bad.npz", x=x, y=np.zeros(N))
    res = _cli(files, "run", "g.onnx", "-i", "bad.npz", "-o", "bad.out.npz", "--chunk-size", CHUNK,
               "--ray", cluster)
    assert res.exit_code == 1
    (line,) = _error_lines(res)
    assert line.startswith("error: chunk 3/5 (samples 140..209) of 'bad.npz': input file 'bad.npz': "
                           "input contains NaN or Inf values (first in sample 200)"), line
    assert not (files / "bad.out.npz").exists()


def test_without_ray_the_option_says_how_to_install_it(files, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)   # `import ray` raises ImportError
    res = _cli(files, "run", "g.onnx", "-i", "data.npz", "-o", "noray.npz", "--ray", "127.0.0.1:1")
    assert res.exit_code == 1
    assert res.stderr.strip().splitlines()[-1] == (
        "error: --ray needs Ray, which is not installed here; install it with `pip install 'snncompile[ray]'`")
    assert not (files / "noray.npz").exists()


def test_an_address_where_nothing_listens_fails_fast_with_one_error_line(files):
    pytest.importorskip("ray")
    start = time.perf_counter()
    res = _cli(files, "run", "g.onnx", "-i", "data.npz", "-o", "nohead.npz", "--ray", f"127.0.0.1:{_free_port()}")
    assert res.exit_code == 1 and time.perf_counter() - start < 30
    (line,) = _error_lines(res)
    assert re.fullmatch(r"error: cannot connect to the Ray cluster at '127\.0\.0\.1:\d+': nothing answers at "
                        r"127\.0\.0\.1:\d+ \(Connection refused\); is `ray start --head` running there\?", line)
    assert not (files / "nohead.npz").exists()


@pytest.mark.slow
def test_verify_over_ray_gives_the_same_tables(cluster, files, monkeypatch):
    """Reference and emulator columns sharded (Lava kept out here: it runs on the driver)."""
    import snncompile.targets
    monkeypatch.setitem(sys.modules, "snncompile.targets.lava", None)
    monkeypatch.delattr(snncompile.targets, "lava", raising=False)   # imported by earlier tests
    tables = []
    for extra in ((), ("--ray", cluster)):
        res = _cli(files, "verify", "g.onnx", "-i", "data.npz", "--chunk-size", CHUNK, *extra)
        assert res.exit_code == 3, res.output   # 3: Lava could not run (here: not importable)
        assert "the Lava target cannot be imported" in res.stderr
        lines = res.stdout.splitlines()
        tables.append([line.rsplit(None, 1)[0] if line.startswith(("reference", "emulator")) else line
                       for line in lines])   # the time column differs
    assert tables[0] == tables[1]
    rows = {line.split()[0]: line.split() for line in tables[1] if line.startswith(("lif1", "lif2"))}
    fires = 0.05 * N * T * 6 * 12 * 12
    assert rows["lif1"][1] == "Neuron"   # node, kind, then one total per backend
    assert int(rows["lif1"][2]) > fires and int(rows["lif1"][3]) > fires   # reference, emulator


@pytest.mark.slow
def test_data_a_worker_cannot_read_is_an_error_about_shared_storage(cluster, files):
    from snncompile.cluster import map_chunks
    from snncompile.errors import SnnCompileError
    from snncompile.ir.onnx_format import load_onnx
    from snncompile.streaming import RunJob, open_inputs

    local = files / "local-only.npz"     # as if on one node's own disk: opened here, gone for the workers
    shutil.copy(files / "data.npz", local)
    source = open_inputs(local)
    local.unlink()
    job = RunJob(load_onnx(files / "g.onnx"), "reference", "float", T, str(local))
    with pytest.raises(SnnCompileError) as err:
        list(map_chunks(cluster, job, source, [(0, 70), (70, 140)]))
    assert str(err.value) == (f"chunk 1/2 (samples 0..69) of '{local}': a worker cannot read '{local}' "
                              f"(No such file or directory): DATA must be on storage every node sees, at the same path")
