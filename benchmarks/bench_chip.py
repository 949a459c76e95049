"""Chip mapper and cost model on real and published networks (issue 15).

1. The shipped MNIST model (export -> quantize, 200 calibration digits), activity from the
   emulator (fixed point) on 200 held-out digits: cores, chips, binding limit per layer, time
   per step and energy per inference on loihi1, loihi1-sanafe, loihi2.
2. SEW-ResNet-18 at 3x224x224 (built as benchmarks/bench_export.py does; 2.7 M neurons), with
   a uniform firing rate (no ImageNet data here): the map time is the "1 M+ neurons" figure.
3. Published Loihi 2 networks rebuilt from their layer shapes with random weights and a uniform
   firing rate of 10 % (not tuned): the lava-dl MNIST dense 784-128-64-10 (5 cores in Intel's
   compiler) and PilotNet SNN (74 cores; 1.66 mJ per inference at 16 steps, 0.679 W, 408.9 fps;
   lava-dl pilotnet_snn/benchmark.ipynb layer table). Ours beside theirs, with the ratio.

4. The ex5 transformer (examples/ex5_spikformer.py, the trained tiny MNIST Spikformer): its
   8-bit graph ``examples/out/ex5_spikformer/mnist_spikformer.q.onnx`` (written by the example;
   run it first, or pass ``--ex5-train`` to run it here, 6-8 minutes) mapped by the real commands
   ``snncompile map --chip`` and ``snncompile energy --chip`` (emulator, fixed point, on the first
   ``--ex5-digits`` held-out digits) on loihi1 and loihi2: cores, chips, the binding limit per
   layer, time per step, energy per inference.

Usage: .venv/bin/python benchmarks/bench_chip.py [--only mnist,sew,published,ex5] [--write]
(--write appends to RESULTS.md)
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
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

RATE = 0.10          # representative firing rate of the rebuilt networks (a choice, stated)


def fmt_j(j):
    from snncompile.energy.render import fmt_energy
    return fmt_energy(j)


def fmt_s(s):
    from snncompile.chip.report import _fmt_s
    return _fmt_s(s)


def bindings(cmap) -> str:
    from snncompile.chip.report import LIMIT_NAMES
    return "; ".join(f"{la.name}: {len(la.cores)} x {LIMIT_NAMES[la.binding_limit]}" for la in cmap.layers)


def cost_row(name, chip, cmap, cost, map_s):
    c = cost.as_dict()
    return (f"| {name} | {chip} | {len(cmap.cores):,} | {cmap.chips} | {fmt_s(c['time_per_step_s'])} | "
            f"{fmt_s(c['latency_per_inference_s'])} ({c['timesteps']} steps) | {fmt_j(c['energy_per_inference_j'])} | "
            f"{fmt_j(c['energy_breakdown_j']['static'])} | {map_s:.2f} s |")


HEADER = ["| network | chip | cores | chips | time / step | latency / inference | energy / inference | "
          "of which static | map time |", "|---|---|---|---|---|---|---|---|---|"]


def mnist_section(lines, detail):
    from snncompile.chip.cost import activity_from_run, estimate
    from snncompile.chip.mapper import map_graph
    from snncompile.frontend import from_torch, load_model
    from snncompile.mnist import load_mnist
    from snncompile.quantize import quantize
    from snncompile.targets import emulator

    meta = json.loads((ROOT / "snncompile/data/mnist_convsnn.json").read_text())
    data = load_mnist()
    graph = from_torch(load_model(ROOT / "snncompile/data/mnist_convsnn.pt"), tuple(meta["input_shape"]),
                       meta["timesteps"], name="mnist_convsnn")
    qgraph, _ = quantize(graph, calib=data.x_train[:200])
    x = data.x_test[:200]
    result = emulator.run(qgraph, x, precision="fixed", record=True)
    for chip in ("loihi1", "loihi1-sanafe", "loihi2"):
        t = time.perf_counter()
        cmap = map_graph(qgraph, chip)
        map_s = time.perf_counter() - t
        cost = estimate(cmap, activity_from_run(cmap, result, x))
        lines.append(cost_row("shipped MNIST conv SNN (emulator counts, 200 digits)", chip, cmap, cost, map_s))
        detail.append(f"- MNIST on {chip}: {bindings(cmap)}")


def sew_section(lines, detail):
    import torch
    from bench_export import INPUT_SHAPE, T, SEWResNet18
    from snncompile.chip.cost import estimate, uniform_activity
    from snncompile.chip.mapper import map_graph
    from snncompile.errors import SnnCompileError
    from snncompile.frontend import from_torch

    torch.manual_seed(0)
    graph = from_torch(SEWResNet18().eval(), INPUT_SHAPE, T, name="sew_resnet18")
    with tempfile.TemporaryDirectory() as tmp:          # the real command, start-up and ONNX load included
        from snncompile.ir.onnx_format import save_onnx
        save_onnx(graph, Path(tmp) / "sew.onnx")
        t = time.perf_counter()
        proc = subprocess.run([str(ROOT / ".venv/bin/snncompile"), "map", str(Path(tmp) / "sew.onnx"),
                               "--chip", "loihi2", "-o", str(Path(tmp) / "sew.html")],
                              capture_output=True, text=True)
        wall = time.perf_counter() - t
        last = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
        detail.append(f"- `snncompile map sew.onnx --chip loihi2 -o sew.html` (2.69 M neurons, 93 MB ONNX): "
                      f"{wall:.1f} s wall, exit {proc.returncode}; it printed: {last}")
    for chip in ("loihi1", "loihi2"):
        t = time.perf_counter()
        try:
            cmap = map_graph(graph, chip)
        except SnnCompileError as exc:
            lines.append(f"| SEW-ResNet-18 3x224x224 | {chip} | refused: {exc} | | | | | | "
                         f"{time.perf_counter() - t:.2f} s |")
            continue
        map_s = time.perf_counter() - t
        neurons = sum(la.neurons for la in cmap.layers)
        cost = estimate(cmap, uniform_activity(cmap, RATE, T, input_rate=1.0))
        lines.append(cost_row(f"SEW-ResNet-18 3x224x224 ({neurons:,} neurons, uniform {RATE:.0%}, input graded "
                              f"every step)", chip, cmap, cost, map_s))
        detail.append(f"- SEW-ResNet-18 on {chip}: {bindings(cmap)}")


def dense_graph(sizes, name, rng):
    from snncompile.ir import nodes as ir
    from snncompile.ir.graph import Graph
    g = Graph(name, timesteps=None)
    prev = g.add(ir.Input("input", shape=(sizes[0],)))
    for i, n in enumerate(sizes[1:]):
        g.add(ir.Linear(f"fc{i}", weight=rng.normal(size=(n, sizes[i]))), [prev])
        prev = g.add(ir.Neuron(f"lif{i}", shape=(n,)), [f"fc{i}"])
    g.add(ir.Output("output"), [prev])
    return g


def pilotnet_graph(rng):
    """lava-dl PilotNet SNN layer table (W, H, C as netx prints them; here C, H, W)."""
    from snncompile.ir import nodes as ir
    from snncompile.ir.graph import Graph
    g = Graph("pilotnet_snn")
    prev = g.add(ir.Input("input", shape=(3, 66, 200)))
    convs = [(24, (2, 2), (0, 0)), (36, (2, 2), (0, 0)), (48, (2, 2), (0, 0)), (64, (2, 1), (1, 0)),
             (64, (1, 1), (0, 0))]
    c_in = 3
    for i, (c, stride, pad) in enumerate(convs):
        g.add(ir.Conv2d(f"conv{i}", weight=rng.normal(size=(c, c_in, 3, 3)), stride=stride, padding=pad), [prev])
        prev = g.add(ir.Neuron(f"lif_c{i}", shape=g.shape(f"conv{i}")), [f"conv{i}"])
        c_in = c
    prev = g.add(ir.Flatten("flat"), [prev])
    n_in = int(np.prod(g.shape(prev)))
    for i, n in enumerate((100, 50, 10, 1)):
        g.add(ir.Linear(f"fc{i}", weight=rng.normal(size=(n, n_in))), [prev])
        prev = g.add(ir.Neuron(f"lif_f{i}", shape=(n,)), [f"fc{i}"])
        n_in = n
    g.add(ir.Output("output"), [prev])
    assert g.shape("lif_c4") == (64, 2, 20)
    return g


def published_section(lines, detail):
    from snncompile.chip.cost import estimate, uniform_activity
    from snncompile.chip.mapper import map_graph

    rng = np.random.default_rng(0)
    mnist = map_graph(dense_graph([784, 128, 64, 10], "lava_dl_mnist", rng), "loihi2")
    pilot_graph = pilotnet_graph(rng)
    pilot = map_graph(pilot_graph, "loihi2")
    cost = estimate(pilot, uniform_activity(pilot, RATE, 16)).as_dict()
    intel_in_cores = 13            # Intel's table places the 3x66x200 input layer on 13 cores
    lines += ["", "| network (Loihi 2) | quantity | Intel (published) | ours | ours / Intel |", "|---|---|---|---|---|"]
    lines.append(f"| lava-dl MNIST dense 784-128-64-10 | cores | 5 | {len(mnist.cores)} | "
                 f"{len(mnist.cores) / 5:.2f} |")
    ours_pl = len(pilot.cores)
    lines.append(f"| PilotNet SNN | cores | 74 (61 without the 13 input-layer cores) | {ours_pl} (input off-chip) | "
                 f"{ours_pl / 74:.2f} ({ours_pl / (74 - intel_in_cores):.2f} of 61) |")
    e = cost["energy_per_inference_j"]
    lines.append(f"| PilotNet SNN | energy / inference (16 steps) | 1.66 mJ | {fmt_j(e)} | {e / 1.66e-3:.3g} |")
    p = cost["power_w"]
    lines.append(f"| PilotNet SNN | power | 0.679 W (0.232 static) | {p:.3g} W | {p / 0.679:.3g} |")
    fps = cost["inferences_per_s"]
    lines.append(f"| PilotNet SNN | inferences / s | 408.9 | {fps:,.0f} | {fps / 408.9:.3g} |")
    detail.append(f"- lava-dl MNIST on loihi2: {bindings(mnist)}")
    detail.append(f"- PilotNet SNN on loihi2: {bindings(pilot)}; Intel's per-layer cores: input 13, conv 25, 13, 3, "
                  f"3, 2, dense 12, 1, 1, 1")


EX5_DIR = ROOT / "examples/out/ex5_spikformer"


def ex5_section(lines, detail, digits=200, train=False):
    """The ex5 Spikformer through ``snncompile map`` and ``snncompile energy --chip`` (subprocesses:
    start-up, ONNX load and the emulator run included in the times)."""
    from snncompile.mnist import load_mnist

    graph = EX5_DIR / "mnist_spikformer.q.onnx"
    if not graph.exists():
        if not train:
            raise SystemExit(f"{graph} is missing: run examples/ex5_spikformer.py first (or --ex5-train)")
        env = dict(os.environ, OMP_NUM_THREADS="1")
        subprocess.run([sys.executable, str(ROOT / "examples/ex5_spikformer.py")], check=True, env=env)
    summary = EX5_DIR / "mnist_spikformer.summary.json"
    if summary.exists():
        sm = json.loads(summary.read_text())
        detail.append(f"- ex5 graph: the example's own export of its trained model (`{graph.relative_to(ROOT)}`; "
                      f"its deploy: {100 * sm['float_accuracy']:.1f} % float, {100 * sm['fixed_accuracy']:.1f} % "
                      f"8-bit fixed on {sm['n_test']} digits)")
    cli = str(ROOT / ".venv/bin/snncompile")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "digits.npz"
        np.savez(data, x=load_mnist().x_test[:digits])
        for chip in ("loihi1", "loihi2"):
            t = time.perf_counter()
            proc = subprocess.run([cli, "map", str(graph), "--chip", chip, "--json"], capture_output=True, text=True)
            map_s = time.perf_counter() - t
            if proc.returncode:
                lines.append(f"| ex5 Spikformer (8-bit) | {chip} | refused: {proc.stderr.strip()} | | | | | | "
                             f"{map_s:.2f} s |")
                continue
            m = json.loads(proc.stdout)
            out = Path(tmp) / f"energy_{chip}.json"
            t = time.perf_counter()
            proc = subprocess.run([cli, "energy", str(graph), "-i", str(data), "--backend", "emulator",
                                   "--precision", "fixed", "--chip", chip, "-o", str(out)],
                                  capture_output=True, text=True)
            energy_s = time.perf_counter() - t
            if proc.returncode:
                raise SystemExit(f"snncompile energy --chip {chip} failed: {proc.stderr.strip()}")
            rep = json.loads(out.read_text())["chip"]
            c = rep["cost"]
            neurons = sum(la["neurons"] for la in m["layers"])
            lines.append(f"| ex5 Spikformer 8-bit ({neurons:,} units; emulator fixed counts, {digits} digits) | "
                         f"{chip} | {m['cores']:,} | {m['chips']} | {fmt_s(c['time_per_step_s'])} | "
                         f"{fmt_s(c['latency_per_inference_s'])} ({c['timesteps']} steps) | "
                         f"{fmt_j(c['energy_per_inference_j'])} | {fmt_j(c['energy_breakdown_j']['static'])} | "
                         f"{map_s:.2f} s (command) |")
            from snncompile.chip.report import LIMIT_NAMES
            binding = "; ".join(f"{la['name']}: {la['cores']} x {LIMIT_NAMES[la['binding_limit']]}" for la in m["layers"])
            detail.append(f"- ex5 on {chip} (`snncompile map` {map_s:.1f} s, `snncompile energy --backend emulator "
                          f"--precision fixed --chip {chip}` {energy_s:.1f} s on {digits} digits; energy "
                          + ", ".join(f"{k} {fmt_j(v)}" for k, v in c["energy_breakdown_j"].items())
                          + f"): {binding}")
            notes = list(dict.fromkeys(rep.get("notes", []) + c.get("notes", [])))
            if notes:
                detail.append(f"  - notes on {chip}: " + " | ".join(notes))


SECTIONS = {"mnist": mnist_section, "sew": sew_section, "published": published_section, "ex5": ex5_section}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections: " + ", ".join(SECTIONS))
    ap.add_argument("--ex5-digits", type=int, default=200)
    ap.add_argument("--ex5-train", action="store_true", help="run examples/ex5_spikformer.py if its graph is missing")
    args = ap.parse_args(argv)
    lines, detail = list(HEADER), []
    for key in args.only.split(","):
        section = SECTIONS[key]
        t = time.perf_counter()
        if key == "ex5":
            section(lines, detail, args.ex5_digits, args.ex5_train)
        else:
            section(lines, detail)
        print(f"{section.__name__}: {time.perf_counter() - t:.1f} s", file=sys.stderr)
    load = os.getloadavg()[0]
    title = "## Chip mapper and cost model (issue 15)"
    if args.only != ",".join(SECTIONS):
        title += f": {args.only.replace(',', ', ')}"
    head = [title, "",
            f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()} ({platform.system().lower()}), "
            f"{os.cpu_count()} shared CPU cores (load average {load:.1f}: the machine is shared, times are "
            f"upper bounds), by `benchmarks/bench_chip.py`. Profiles: `snncompile/chip/profiles/*.json`; "
            f"every limit and cost with its source and confidence. Time per step = slowest core "
            f"(synops x synop_ns + neurons x neuron_update_ns) + barrier (+ inter-chip hop); energy = "
            f"dynamic per-op energies + static power x chips x latency.", ""]
    if "ex5" in args.only:
        head += [f"ex5: spiking-transformer layers on cores as `snncompile/chip/network.py` lays them out "
                     f"(MatMul = batch*n*k*m two-input product units + batch*n*m accumulators, the counts of "
                     f"targets/lava/size.py); product-unit events estimated from operand rates and rescaled to "
                     f"the recorded accumulator sums (spike x spike); graded values sent by accumulators and "
                     f"scales need graded spikes (Loihi 2), noted on Loihi 1. Graph: "
                     f"`examples/out/ex5_spikformer/mnist_spikformer.q.onnx`.", ""]
    text = "\n".join(head + lines + [""] + detail) + "\n"
    print(text)
    if args.write:
        with open(ROOT / "benchmarks/RESULTS.md", "a", encoding="utf-8") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
