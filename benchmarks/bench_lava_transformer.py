"""Spiking transformers on Lava (issue 12).

1. ex5 (examples/ex5_spikformer.py, the trained tiny MNIST Spikformer): its 8-bit graph
   ``examples/out/ex5_spikformer/mnist_spikformer.q.onnx`` (written by the example; run it first)
   on the first ``--digits`` held-out digits through the commands a user runs:
   ``snncompile run --backend lava --precision fixed`` and ``--backend emulator``, outputs and
   per-layer counts compared exactly; the per-digit Lava time from the same graph on 1 digit and
   on all of them (API, side by side: marginal = (t_N - t_1) / (N - 1)); the mapping's size from
   ``snncompile inspect --target lava --json``.
2. The seven zoo families (tests/transformer_zoo.py): Lava processes of a build (float and fixed),
   neurons and product units, synapses, pipeline latency (nothing is run).

Usage: .venv/bin/python benchmarks/bench_lava_transformer.py [--digits 50] [--only ex5,zoo] [--write]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EX5 = ROOT / "examples/out/ex5_spikformer/mnist_spikformer.q.onnx"
CLI = [sys.executable, "-m", "snncompile.cli"]


def _cli(*args) -> float:
    t = time.perf_counter()
    subprocess.run(CLI + [str(a) for a in args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def ex5_section(lines, digits: int) -> None:
    from snncompile.ir import nodes as ir
    from snncompile.ir.onnx_format import load_onnx
    from snncompile.mnist import load_mnist
    from snncompile.targets import emulator, lava
    from snncompile.targets.lava import runner

    if not EX5.is_file():
        raise SystemExit(f"{EX5} is missing: run examples/ex5_spikformer.py first")
    data = load_mnist()
    x, y = data.x_test[:digits], data.y_test[:digits]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "digits.npz", x=x, y=y)
        t_lava_cli = _cli("run", EX5, "-i", tmp / "digits.npz", "--backend", "lava", "--precision", "fixed",
                          "-o", tmp / "lava.npz")
        t_emu_cli = _cli("run", EX5, "-i", tmp / "digits.npz", "--backend", "emulator", "--precision", "fixed",
                         "-o", tmp / "emu.npz")
        with np.load(tmp / "lava.npz") as a, np.load(tmp / "emu.npz") as b:
            cli_keys = sorted(k for k in a.files if k in b.files and k != "backend")
            cli_same = all(np.array_equal(a[k], b[k]) for k in cli_keys)
        inspect = json.loads(subprocess.run(CLI + ["inspect", str(EX5), "--target", "lava", "--precision", "fixed",
                                                   "--json"], check=True, capture_output=True, text=True).stdout)
    lv_size = inspect["lava"]
    graph = load_onnx(EX5)
    neurons = [n.name for n in graph if isinstance(n, ir.Neuron)]
    em = emulator.run(graph, x, precision="fixed", record=True)
    t = time.perf_counter()
    one = lava.run(graph, x[:1], precision="fixed")
    t1 = time.perf_counter() - t
    t = time.perf_counter()
    lv = lava.run(graph, x, precision="fixed", record=neurons)
    tn = time.perf_counter() - t
    timings = runner.last_timings
    same_out = np.array_equal(lv.outputs, em.outputs) and np.array_equal(one.outputs, em.outputs[:1])
    mism = sum(int(np.sum(lv.layer_counts[n] != em.layer_counts[n])) for n in neurons)
    rates = [em.layer_counts[n].mean() / graph.timesteps for n in neurons]
    acc = float(np.mean(lv.pred == y))
    marginal = (tn - t1) / (digits - 1)
    print(f"ex5: outputs equal {same_out}, spike-count mismatches {mism}, CLI files equal {cli_same}")
    lines += [
        f"### ex5 tiny MNIST Spikformer on Lava fixed_pt ({digits} digits; "
        f"`benchmarks/bench_lava_transformer.py`)",
        "",
        f"- Machine: {platform.machine()}, {os.cpu_count()} cores (shared, load {os.getloadavg()[0]:.1f}), "
        f"Python {platform.python_version()}, lava-nc 0.10.0, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        f"- Identical to the emulator (fixed point): outputs {'equal' if same_out else 'DIFFER'} "
        f"({lv.outputs.size:,} readout integers), {mism} spike-count mismatches over {len(neurons)} neuron "
        f"layers x {digits} digits (firing {100 * min(rates):.1f}-{100 * max(rates):.1f} % per layer); "
        f"through the CLI (`snncompile run --backend lava|emulator --precision fixed`) the result files' "
        f"{', '.join(cli_keys)} are {'identical' if cli_same else 'DIFFERENT'}. Lava accuracy on these "
        f"digits {100 * acc:.1f} %.",
        f"- Lava time: {tn:.1f} s for {digits} digits in one run ({timings.steps} Lava steps, "
        f"{timings.processes} processes with the neuron recorders), {t1:.1f} s for 1 digit: "
        f"**{1e3 * marginal:.0f} ms per digit** marginal (4 model steps), start-up (compile + spawn) "
        f"about {t1 - marginal:.1f} s. CLI: {t_lava_cli:.1f} s (Lava) vs {t_emu_cli:.1f} s (emulator) "
        f"for the whole command.",
        f"- Mapping (`snncompile inspect --target lava --precision fixed`): {lv_size['processes']['total']} Lava "
        f"processes ({', '.join(f'{k} {v}' for k, v in lv_size['processes'].items() if k != 'total')}), "
        f"{lv_size['units']:,} neurons and product units of which {lv_size['product_units']:,} product "
        f"units, {lv_size['synapses']:,} synapses, {lv_size['latency_steps']} steps of pipeline latency.",
        "",
    ]


def zoo_section(lines) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    import torch
    from stubs import timm_helpers

    from snncompile.frontend import from_torch
    from snncompile.quantize import quantize
    from snncompile.targets.lava import builder, size

    torch.set_num_threads(1)
    lines += ["### Zoo families as Lava processes (build only; tests/test_lava_transformer.py runs them)", "",
              "| family | processes float / fixed | neurons + product units | product units | synapses | "
              "latency (steps) |", "|---|---|---|---|---|---|"]
    with timm_helpers.installed():
        import transformer_zoo
        for name, zm in sorted(transformer_zoo.MODELS.items()):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                g = from_torch(zm.build().double(), zm.input_shape, zm.timesteps, name=name)
                qg, _ = quantize(g, calib=zm.inputs(8, seed=0))
            counts = []
            for graph, precision in ((g, "float"), (qg, "fixed")):
                with tempfile.TemporaryDirectory() as folder:
                    net = builder.build(graph, zm.inputs(1), True, zm.timesteps, folder, precision=precision)
                counts.append(net.process_count)
            s = size.graph_size(qg)
            lines.append(f"| {name} | {counts[0]} / {counts[1]} | {s.units:,} | {s.product_units:,} | "
                         f"{s.synapses:,} | {net.num_steps - zm.timesteps} |")
            print(lines[-1])
    lines.append("")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--digits", type=int, default=50)
    ap.add_argument("--only", default="ex5,zoo")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    lines = ["", "## Spiking transformers on Lava (issue 12)", ""]
    only = args.only.split(",")
    if "ex5" in only:
        ex5_section(lines, args.digits)
    if "zoo" in only:
        zoo_section(lines)
    text = "\n".join(lines)
    print(text)
    if args.write:
        with open(ROOT / "benchmarks/RESULTS.md", "a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
