"""Interop timings: NIR write/read of IR graphs and netx HDF5 import, on this machine.

Appends (or replaces) the "## Interop" section of benchmarks/RESULTS.md.
Run: .venv/bin/python benchmarks/bench_interop.py
"""
from __future__ import annotations

import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from snncompile.interop.netx import read_netx  # noqa: E402
from snncompile.interop.nir import read_nir, write_nir  # noqa: E402
from snncompile.ir import Add, Conv2d, Flatten, Graph, Input, Linear, Neuron, Output, SumPool2d  # noqa: E402
from snncompile.targets import run  # noqa: E402

SECTION = "## Interop: NIR and netx import/export (engineer I)"


def mlp(rng) -> Graph:
    g = Graph("mlp_784_1000_1000_10", timesteps=10)
    g.add(Input("in", shape=(784,)))
    prev = "in"
    for i, (n_in, n_out) in enumerate([(784, 1000), (1000, 1000), (1000, 10)]):
        g.add(Linear(f"fc{i}", weight=rng.normal(0, 0.05, (n_out, n_in))), [prev])
        g.add(Neuron(f"lif{i}", shape=(n_out,), dv=0.1, threshold=1.0), [f"fc{i}"])
        prev = f"lif{i}"
    g.add(Output("out"), [prev])
    return g


def convnet(rng) -> Graph:
    g = Graph("convnet_cifar", timesteps=10)
    g.add(Input("in", shape=(3, 32, 32)))
    g.add(Conv2d("c1", weight=rng.normal(0, .2, (32, 3, 3, 3)), padding=1), ["in"])
    g.add(Neuron("n1", shape=(32, 32, 32), dv=0.2), ["c1"])
    g.add(SumPool2d("p1", kernel_size=2, stride=2), ["n1"])
    g.add(Conv2d("c2", weight=rng.normal(0, .1, (64, 32, 3, 3)), padding=1), ["p1"])
    g.add(Neuron("n2", shape=(64, 16, 16), dv=0.2), ["c2"])
    g.add(SumPool2d("p2", kernel_size=2, stride=2), ["n2"])
    g.add(Flatten("f"), ["p2"])
    g.add(Linear("fc", weight=rng.normal(0, .02, (10, 4096))), ["f"])
    g.add(Output("out", mode="potential"), ["fc"])
    return g


def recurrent(rng) -> Graph:
    g = Graph("recurrent_1000", timesteps=10)
    g.add(Input("in", shape=(100,)))
    g.add(Linear("fc", weight=rng.normal(0, .1, (1000, 100))), ["in"])
    g.add(Add("sum"), ["fc"])
    g.add(Neuron("lif", shape=(1000,), du=0.5, dv=0.1), ["sum"])
    g.add(Linear("rec", weight=rng.normal(0, .03, (1000, 1000))), ["lif"])
    g.add_edge("rec", "sum", delay=1)
    g.add(Output("out"), ["lif"])
    return g


def netx_file(path: Path, rng) -> Path:
    cuba = {"type": b"CUBA", "iDecay": 1024, "vDecay": 128, "vThMant": 1500, "refDelay": 1, "gradedSpike": False}
    layers = [{"type": b"input", "shape": np.array([2, 34, 34])},
              {"type": b"conv", "shape": np.array([16, 32, 32]), "weight": rng.integers(-60, 100, (16, 2, 3, 3, 1)),
               "stride": 1, "padding": 0, "dilation": 1, "groups": 1, "neuron": cuba},
              {"type": b"conv", "shape": np.array([32, 30, 30]), "weight": rng.integers(-60, 100, (32, 16, 3, 3, 1)),
               "stride": 1, "padding": 0, "dilation": 1, "groups": 1, "neuron": cuba},
              {"type": b"flatten"},
              {"type": b"dense", "shape": np.array([512]), "weight": rng.integers(-30, 60, (512, 28800)), "neuron": cuba},
              {"type": b"dense", "shape": np.array([10]), "weight": rng.integers(-30, 60, (10, 512)), "neuron": cuba}]
    with h5py.File(path, "w") as f:
        root = f.create_group("layer")
        for i, spec in enumerate(layers):
            grp = root.create_group(str(i))
            for key, value in spec.items():
                if isinstance(value, dict):
                    sub = grp.create_group(key)
                    for k, v in value.items():
                        sub.create_dataset(k, data=v)
                else:
                    grp.create_dataset(key, data=value)
    return path


def timed(fn, repeat=3):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for graph in (mlp(rng), convnet(rng), recurrent(rng)):
            path = Path(tmp) / f"{graph.name}.nir"
            t_write, _ = timed(lambda: write_nir(graph, path))
            t_read, back = timed(lambda: read_nir(path))
            x = (rng.random((4,) + tuple(graph.input.shape)) < 0.3).astype(float)
            same = np.array_equal(run(graph, x).outputs, run(back, x).outputs)
            rows.append(f"| {graph.name} | {len(graph)} | {path.stat().st_size / 1e6:.2f} | {t_write:.3f} | "
                        f"{t_read:.3f} | {'yes' if same else 'NO'} |")
        net = netx_file(Path(tmp) / "dvs_like.net", rng)
        t_netx, g = timed(lambda: read_netx(net))
        size = net.stat().st_size / 1e6
    body = [
        SECTION, "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()} ({sys.platform}), 2 shared CPU cores, "
        f"by `benchmarks/bench_interop.py` (best of 3). write = IR -> NIR file (`write_nir`); "
        f"read = NIR file -> validated IR (`read_nir`); same = identical outputs on the reference target.",
        "", "| graph | nodes | NIR file (MB) | write (s) | read (s) | same outputs |", "|---|---|---|---|---|---|",
        *rows, "",
        f"netx import (`read_netx`) of a 2x34x34 -> conv16 -> conv32 -> 512 -> 10 CUBA network "
        f"({size:.1f} MB HDF5, {len(g)} IR nodes, fixed point attached): {t_netx:.3f} s.", "",
    ]
    results = ROOT / "benchmarks" / "RESULTS.md"
    text = results.read_text() if results.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    section = "\n".join(body) + "\n"
    text = pattern.sub(section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    results.write_text(text)
    print(section)


if __name__ == "__main__":
    main()
