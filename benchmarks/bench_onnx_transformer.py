"""ONNX write/read of the spiking-transformer graphs: the seven zoo families and Spikingformer-8-512.

Run: ``.venv/bin/python benchmarks/bench_onnx_transformer.py`` (appends a section to
benchmarks/RESULTS.md). Per graph: nodes, file size, ``save_onnx`` time (writer + full ONNX
checker + digest + atomic write) and ``load_onnx`` time (digest + full checker + reader + shape
and operand checks), and that the read graph is bit-identical. The capture itself (frontend) is
timed too for Spikingformer-8-512 at 3x224x224, T=4, whose export target is < 10 s and < 4 GB;
peak RSS is the process maximum after each step.
"""
from __future__ import annotations

import datetime
import os
import platform
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402

from snncompile.frontend import MappingWarning, from_torch  # noqa: E402
from snncompile.ir.graph import graph_differences  # noqa: E402
from snncompile.ir.onnx_format import load_onnx, save_onnx  # noqa: E402
from stubs import timm_helpers  # noqa: E402

SECTION = "## ONNX write/read of the spiking-transformer graphs (engineer onnx, issue 11)"


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _capture(model, shape, timesteps, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MappingWarning)
        return from_torch(model, shape, timesteps, name=name)


def _round_trip(graph, folder: Path) -> dict:
    path = folder / f"{graph.name}.onnx"
    t0 = time.perf_counter()
    save_onnx(graph, path)
    t1 = time.perf_counter()
    back = load_onnx(path)
    t2 = time.perf_counter()
    assert graph_differences(back, graph) == [], graph.name
    return {"nodes": len(list(graph)), "mb": path.stat().st_size / 1e6, "save": t1 - t0, "load": t2 - t1}


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    with timm_helpers.installed(), tempfile.TemporaryDirectory() as tmp:
        import transformer_zoo as tz

        for name, zm in tz.MODELS.items():
            graph = _capture(zm.build(), zm.input_shape, zm.timesteps, name)
            rows.append((f"{name} ({'x'.join(map(str, zm.input_shape))}, T={zm.timesteps})",
                         _round_trip(graph, Path(tmp)), None))
        model = tz.spikingformer_8_512().eval()
        t0 = time.perf_counter()
        graph = _capture(model, (3, 224, 224), 4, "spikingformer_8_512")
        capture = time.perf_counter() - t0
        del model
        r = _round_trip(graph, Path(tmp))
        rows.append(("Spikingformer-8-512 (3x224x224, T=4)", r, capture))
    load = os.getloadavg()
    lines = [
        "", SECTION, "",
        f"{datetime.date.today()}, {platform.machine()} {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load average {load[0]:.1f} / {load[1]:.1f} (a shared machine: "
        f"other engineers' tests ran beside it, so times are upper bounds). Every graph read back "
        f"bit-identical (`graph_differences == []`).", "",
        "| graph | nodes | file MB | capture s | save_onnx s | load_onnx s |",
        "|---|---|---|---|---|---|",
    ]
    for label, r, capture in rows:
        cap = f"{capture:.1f}" if capture is not None else "-"
        lines.append(f"| {label} | {r['nodes']} | {r['mb']:.1f} | {cap} | {r['save']:.2f} | {r['load']:.2f} |")
    lines += ["", f"Peak RSS of the whole run (8-512 capture, write and read included): {_peak_gb():.2f} GB.", ""]
    text = "\n".join(lines)
    print(text)
    with open(ROOT / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
