"""Spikingformer-8-512 at 3x224x224, T = 4 (issue 11 item 7): export time, peak memory, energy.

The model is ``tests/transformer_zoo.spikingformer_8_512()``: the official
``imagenet/model.py`` structure with the official arguments, 29,705,768 parameters (the count
in the official 8-512 energy log; asserted). Each measurement runs in a fresh child process so
its peak RSS (``ru_maxrss``) is its own:

- ``export``: ``snncompile.frontend.from_torch`` on the built model, in its two parts: capture
  (running the model once at its float32 on a batch of 2, conversion to IR) and the passes;
  wall and CPU time (CPU time is less sensitive to a loaded machine). The build is timed apart.
- ``energy``: export, then a recorded reference run of 2 random images and
  ``snncompile.energy.analyze`` on it (the Python API the ``energy`` command uses). The run and
  the energy counts are timed apart; if the energy counts refuse a kind, that is reported.

Usage: .venv/bin/python benchmarks/spikingformer_8_512.py [--write]  (--write appends to RESULTS.md)
"""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARAMS = 29_705_768
INPUT_SHAPE, T = (3, 224, 224), 4


def _model():
    sys.path[:0] = [str(ROOT / "tests")]
    from stubs import timm_helpers
    with timm_helpers.installed():
        import transformer_zoo
        model = transformer_zoo.spikingformer_8_512().eval()
    n = sum(p.numel() for p in model.parameters())
    assert n == PARAMS, f"{n} parameters, expected {PARAMS}"
    return model


def _export(model, out: dict):
    """``from_torch`` in its two parts, timed (wall and this process's CPU time)."""
    from snncompile.frontend import to_raw_graph_from_torch
    from snncompile.passes import canonicalize
    w, c = time.perf_counter(), time.process_time()
    raw = to_raw_graph_from_torch(model, INPUT_SHAPE, T, name="spikingformer_8_512")
    out["capture_s"], out["capture_cpu_s"] = time.perf_counter() - w, time.process_time() - c
    w, c = time.perf_counter(), time.process_time()
    graph = canonicalize(raw)
    out["passes_s"], out["passes_cpu_s"] = time.perf_counter() - w, time.process_time() - c
    return graph


def child(what: str) -> dict:
    import torch
    torch.manual_seed(0)
    out = {}
    t0 = time.perf_counter()
    model = _model()
    out["build_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    graph = _export(model, out)
    out["export_s"] = time.perf_counter() - t0
    out["nodes"] = len(graph)
    out["export_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if what == "energy":
        import numpy as np
        from snncompile.errors import SnnCompileError
        from snncompile.targets import run
        del model
        x = np.random.default_rng(0).random((2,) + INPUT_SHAPE)
        t0 = time.perf_counter()
        result = run(graph, x, record=True)
        out["run_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        try:
            from snncompile.energy import analyze
            report = analyze(graph, result, x=x)
            out["energy_summary"] = {k: v for k, v in report.summary.items() if isinstance(v, (int, float, str))}
        except SnnCompileError as exc:
            out["energy_refused"] = str(exc)
        out["energy_s"] = time.perf_counter() - t0
        out["rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return out


def measure(what: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", what], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")})
    if proc.returncode:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    if "--child" in sys.argv:
        print(json.dumps(child(sys.argv[sys.argv.index("--child") + 1])))
        return
    load = os.getloadavg()[0]
    exp, en = measure("export"), measure("energy")
    energy = (f"{en['energy_s']:.1f} s" if "energy_summary" in en else f"refused: {en['energy_refused']}")
    text = f"""
## Spikingformer-8-512 export and energy ({time.strftime('%Y-%m-%d')}, benchmarks/spikingformer_8_512.py)

Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared with other
engineers' runs (load average {load:.2f} at the start). Model: the official Spikingformer-8-512
structure (tests/transformer_zoo.py), {PARAMS:,} parameters (asserted), input 3x224x224, T = {T}.
Each row is a fresh child process (peak RSS is its own).

| step | time | target | peak RSS | target |
|---|---|---|---|---|
| build the PyTorch model | {exp['build_s']:.1f} s | - | | |
| export ({exp['nodes']} nodes) | {exp['export_s']:.1f} s | < 10 s | {exp['export_rss_gb']:.2f} GB | < 4 GB |
| - of which capture (running the model in float32 at B=2, conversion) | {exp['capture_s']:.1f} s ({exp['capture_cpu_s']:.1f} s CPU) | | | |
| - of which the passes (layouts, folding, checks) | {exp['passes_s']:.1f} s ({exp['passes_cpu_s']:.1f} s CPU) | | | |
| reference run of 2 samples, recorded | {en['run_s']:.1f} s | | | |
| energy counts of that run | {energy} | run + counts < 2 min | {en['rss_gb']:.2f} GB | |
"""
    if "energy_summary" in en:
        text += f"\nEnergy summary (the energy counts as on this branch): {json.dumps(en['energy_summary'])}\n"
    print(text)
    if "--write" in sys.argv:
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
