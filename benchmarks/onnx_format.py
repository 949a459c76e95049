"""ONNX format and CLI: save/load time and file size against the raw parameter bytes.

Run: ``.venv/bin/python benchmarks/onnx_format.py`` (writes its section of benchmarks/RESULTS.md).
Graphs: a 784-1000-1000-10 float32 MLP (~1.8 M weights), a CIFAR-size conv net with
per-channel neurons and pooling, and a recurrent 1000-neuron layer.
"""
from __future__ import annotations

import datetime
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from snncompile.ir import AvgPool2d, Add, Conv2d, Flatten, Graph, Input, Linear, Neuron, Output, SumPool2d
from snncompile.ir.graph import graph_differences
from snncompile.ir.onnx_format import load_onnx, save_onnx
from snncompile.ir.summary import summarize

SECTION = "## ONNX format and `inspect` (engineer O)"
RNG = np.random.default_rng(0)


def mlp() -> Graph:
    g = Graph("mlp_784_1000_1000_10", timesteps=25)
    g.add(Input("in", shape=(784,)))
    prev, sizes = "in", [784, 1000, 1000, 10]
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        g.add(Linear(f"fc{i}", weight=RNG.normal(size=(b, a)).astype(np.float32),
                     bias=RNG.normal(size=b).astype(np.float32)), [prev])
        prev = g.add(Neuron(f"lif{i}", shape=(b,), dv=0.1), [f"fc{i}"])
    g.add(Output("out"), [prev])
    return g


def convnet() -> Graph:
    g = Graph("convnet_cifar", timesteps=8)
    g.add(Input("in", shape=(3, 32, 32)))
    prev, c_in = "in", 3
    for i, c in enumerate((64, 128, 256)):
        g.add(Conv2d(f"conv{i}", weight=RNG.normal(size=(c, c_in, 3, 3)).astype(np.float32), padding=1), [prev])
        g.add(Neuron(f"lif{i}", shape=(c, 32 >> i, 32 >> i), threshold=RNG.random((c, 1, 1)) + 0.5,
                     reset_mode="subtract"), [f"conv{i}"])
        pool = SumPool2d if i % 2 else AvgPool2d
        prev = g.add(pool(f"pool{i}", kernel_size=2, stride=2), [f"lif{i}"])
        c_in = c
    g.add(Flatten("flat"), [prev])
    g.add(Linear("fc", weight=RNG.normal(size=(10, 256 * 16)).astype(np.float32)), ["flat"])
    g.add(Output("out", mode="potential"), ["fc"])
    return g


def recurrent() -> Graph:
    g = Graph("recurrent_1000", timesteps=50)
    g.add(Input("in", shape=(100,)))
    g.add(Linear("fc", weight=RNG.normal(size=(1000, 100))), ["in"])
    g.add(Add("join"), ["fc"])
    g.add(Neuron("lif", shape=(1000,), du=0.2, dv=0.1), ["join"])
    g.add(Linear("rec", weight=RNG.normal(size=(1000, 1000))), ["lif"])
    g.add_edge("rec", "join", delay=1)
    g.add(Output("out"), ["lif"])
    return g


def measure(g: Graph, folder: Path) -> dict:
    path = folder / f"{g.name}.onnx"
    raw = sum(a.nbytes for n in g for a in n.arrays().values())
    t0 = time.perf_counter()
    save_onnx(g, path)
    t1 = time.perf_counter()
    back = load_onnx(path)
    t2 = time.perf_counter()
    summarize(back)
    t3 = time.perf_counter()
    assert graph_differences(back, g) == []
    return {"graph": g.name, "nodes": len(g), "raw_mb": raw / 1e6, "file_mb": path.stat().st_size / 1e6,
            "save_s": t1 - t0, "load_s": t2 - t1, "inspect_s": t3 - t2}


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        rows = [measure(make(), Path(d)) for make in (mlp, convnet, recurrent)]
    lines = [SECTION, "",
             f"Measured {datetime.date.today()} on {platform.machine()} ({sys.platform}), 2 shared CPU cores, "
             f"by `benchmarks/onnx_format.py`. save = IR -> ONNX + full checker + atomic write; load = read + "
             f"full checker + IR rebuild; inspect = summary of the loaded graph. Round trips bit-identical.", "",
             "| graph | nodes | parameters (MB) | file (MB) | save (s) | load (s) | inspect (s) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['graph']} | {r['nodes']} | {r['raw_mb']:.2f} | {r['file_mb']:.2f} | "
                     f"{r['save_s']:.3f} | {r['load_s']:.3f} | {r['inspect_s']:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    results = Path(__file__).with_name("RESULTS.md")
    old = results.read_text() if results.exists() else "# Benchmark results\n"
    if SECTION in old:  # replace our own section only, up to the next section heading
        head, rest = old.split(SECTION, 1)
        tail = rest[rest.find("\n## "):] if "\n## " in rest else ""
        new = head + text + ("\n" + tail.lstrip("\n") if tail else "")
    else:
        new = old.rstrip("\n") + "\n\n" + text
    results.write_text(new)


if __name__ == "__main__":
    main()
