"""The whole deployment story in one call: model -> ONNX -> fixed point -> emulator -> Lava -> energy.

``deploy`` is what ``snncompile demo`` and every script in ``examples/`` run after training.
It only calls the public APIs of the other parts (frontend, ONNX, quantize, targets, energy),
in the order a user would, and collects the figures a user asks about first: accuracy in
float, in fixed point and on Lava, how well Lava's spikes agree with the emulator's, and
synaptic operations and energy per sample against the equivalent ANN.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm.auto import tqdm

from snncompile.ir import nodes as ir

#: Samples per Lava run: each run pays Lava's compile + spawn start-up once, and the
#: progress bar moves once per chunk.
LAVA_CHUNK = 100


@dataclass
class DeployResult:
    """The figures of one deployment, all on the same held-out test samples."""

    name: str
    n_test: int
    n_lava: int
    timesteps: int
    torch_accuracy: Optional[float] = None
    float_accuracy: Optional[float] = None           # emulator, float (the graph's meaning)
    fixed_accuracy: Optional[float] = None           # emulator, Loihi fixed point
    lava_precision: str = ""                         # "fixed" (bit-accurate) or "float"
    emulator_accuracy_lava_subset: Optional[float] = None  # emulator, same precision, first n_lava
    lava_accuracy: Optional[float] = None            # Lava, on the first n_lava samples
    lava_output_agreement: Optional[float] = None    # fraction of readout values equal to the emulator's
    lava_spike_agreement: Optional[float] = None     # fraction of (sample, neuron) spike counts equal
    lava_prediction_agreement: Optional[float] = None
    synops_per_sample: Optional[float] = None
    macs_per_sample: Optional[float] = None
    energy_per_sample_j: Optional[float] = None
    ann_energy_per_sample_j: Optional[float] = None
    snn_ann_energy_ratio: Optional[float] = None
    energy_model: str = ""
    convention: str = ""
    files: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    missing: dict = field(default_factory=dict)      # stage -> why it could not run

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def table(self) -> str:
        """The summary a user reads first (plain text, fixed width)."""
        pct = lambda v: "n/a" if v is None else f"{100 * v:.1f} %"  # noqa: E731
        num = lambda v, unit="": "n/a" if v is None else f"{v:,.0f}{unit}"  # noqa: E731
        joule = lambda v: "n/a" if v is None else _si(v, "J")  # noqa: E731
        lp = self.lava_precision or "-"
        rows = [
            ("test samples", f"{self.n_test} (Lava: first {self.n_lava})"),
            ("time steps", str(self.timesteps)),
            ("accuracy PyTorch", pct(self.torch_accuracy)),
            ("accuracy float (emulator)", pct(self.float_accuracy)),
            ("accuracy fixed (emulator)", pct(self.fixed_accuracy)),
            (f"accuracy emulator {lp}, first {self.n_lava}", pct(self.emulator_accuracy_lava_subset)),
            (f"accuracy Lava {lp}, first {self.n_lava}", pct(self.lava_accuracy)),
            ("spike agreement emulator/Lava", pct(self.lava_spike_agreement)),
            ("readout agreement emulator/Lava", pct(self.lava_output_agreement)),
            ("counts from", f"emulator, fixed point, {self.n_test} samples"),
            ("SOPs per sample", num(self.synops_per_sample)),
            ("MACs per sample (input layer)", num(self.macs_per_sample)),
            ("energy per sample, SNN", joule(self.energy_per_sample_j)),
            ("energy per sample, ANN", joule(self.ann_energy_per_sample_j)),
            ("SNN / ANN energy", "n/a" if self.snn_ann_energy_ratio is None
             else f"{self.snn_ann_energy_ratio:.3f}"),
        ]
        width = max(len(k) for k, _ in rows)
        lines = [f"== {self.name} ==" + (f"  ({self.energy_model}, {self.convention})"
                                         if self.energy_model else "")]
        lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
        for stage, why in self.missing.items():
            lines.append(f"  ! {stage} not run: {why}")
        for what, path in self.files.items():
            lines.append(f"  {what}: {path}")
        return "\n".join(lines)


def _si(value: float, unit: str) -> str:
    for scale, prefix in ((1e-3, "m"), (1e-6, "u"), (1e-9, "n"), (1e-12, "p")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.mean(a == b)) if a.size else 1.0


def spike_agreement(graph, res_a, res_b) -> Optional[float]:
    """Fraction of (sample, neuron) spike counts equal in two recorded runs, over all
    Neuron populations (None when a run recorded no layers)."""
    names = [n.name for n in graph if isinstance(n, ir.Neuron)]
    equal = total = 0
    for name in names:
        if name not in res_a.layer_counts or name not in res_b.layer_counts:
            return None
        a, b = res_a.layer_counts[name], res_b.layer_counts[name]
        equal += int(np.sum(a == b))
        total += a.size
    return equal / total if total else None


def _run_chunked(run, graph, x, chunk: int, desc: str, **kw):
    """Run a target on ``x`` in chunks (progress bar), merging the RunResults."""
    from snncompile.targets.base import RunResult

    parts = []
    for i in tqdm(range(0, len(x), chunk), desc=desc, file=sys.stdout, dynamic_ncols=True, leave=False):
        parts.append(run(graph, x[i:i + chunk], **kw))
    first = parts[0]
    return RunResult(
        outputs=np.concatenate([p.outputs for p in parts]), readout=first.readout,
        backend=first.backend, precision=first.precision,
        layer_counts={k: np.concatenate([p.layer_counts[k] for p in parts]) for k in first.layer_counts},
        layer_steps={k: np.concatenate([p.layer_steps[k] for p in parts]) for k in first.layer_steps})


def deploy(model, name: str, input_shape, timesteps: int, x_test: np.ndarray, y_test: np.ndarray,
           out_dir, *, x_calib: Optional[np.ndarray] = None, n_lava: int = 100,
           torch_accuracy: Optional[float] = None, energy_model: str = "horowitz45",
           graph=None, log=print) -> DeployResult:
    """Export ``model`` (or take ``graph``), quantize, run and report; write files to ``out_dir``.

    ``x_test`` are static images (N, *input_shape) or trains (N, T, *input_shape);
    ``x_calib`` (training inputs, never test inputs; default: none, the quantizer's data-free
    scales) calibrates the quantizer; Lava runs
    the first ``n_lava`` test inputs (0 skips Lava), in bit-accurate fixed point, or in
    float where the Lava target refuses fixed point; what Lava refused is recorded in
    ``missing`` (and shown in the table) and the other figures still stand.
    """
    from snncompile.energy import analyze
    from snncompile.ir.onnx_format import save_onnx
    from snncompile.quantize import quantize
    from snncompile.targets import emulator

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_lava = min(int(n_lava), len(x_test))
    result = DeployResult(name=name, n_test=len(x_test), n_lava=n_lava, timesteps=int(timesteps),
                          torch_accuracy=torch_accuracy)
    clock = time.perf_counter

    def stage(label):
        log(f"[{name}] {label} ...")
        return clock()

    if n_lava:  # Lava's runtime before torch.fx/training can fix another start method
        from snncompile import lava_compat
        lava_compat.install()
    t = stage("export to IR and ONNX")
    if graph is None:
        from snncompile.frontend import from_torch
        graph = from_torch(model, input_shape, timesteps, name=name)
    save_onnx(graph, out / f"{name}.onnx")
    result.files["graph"] = str(out / f"{name}.onnx")
    result.seconds["export"] = clock() - t

    t = stage("quantize to Loihi fixed point (8-bit weights)")
    qgraph, _qreport = quantize(graph, calib=x_calib, weight_bits=8)
    save_onnx(qgraph, out / f"{name}.q.onnx")
    result.files["fixed-point graph"] = str(out / f"{name}.q.onnx")
    result.seconds["quantize"] = clock() - t

    t = stage(f"emulator, float, {len(x_test)} samples")
    res_float = _run_chunked(emulator.run, graph, x_test, 250, "emulator float", precision="float",
                             record=bool(n_lava))
    result.float_accuracy = res_float.accuracy(y_test)
    result.seconds["emulator_float"] = clock() - t

    t = stage(f"emulator, fixed point, {len(x_test)} samples")
    res_fixed = _run_chunked(emulator.run, qgraph, x_test, 250, "emulator fixed",
                             precision="fixed", record=True)
    result.fixed_accuracy = res_fixed.accuracy(y_test)
    result.seconds["emulator_fixed"] = clock() - t

    if n_lava:
        t = stage(f"Lava CPU simulator, first {n_lava} samples")
        _run_lava(result, graph, qgraph, res_float, res_fixed, x_test[:n_lava], y_test[:n_lava])
        result.seconds["lava"] = clock() - t

    t = stage("energy report")
    report = analyze(qgraph, res_fixed, convention="exact", energy_model=energy_model, x=x_test)
    summary = report.summary
    result.synops_per_sample = summary["synops_per_sample"]
    result.macs_per_sample = summary["macs_per_sample"]
    result.energy_per_sample_j = summary["energy_per_sample_j"]
    result.ann_energy_per_sample_j = summary["ann_energy_per_sample_j"]
    result.snn_ann_energy_ratio = summary["snn_ann_energy_ratio"]
    result.energy_model, result.convention = summary["energy_model"], summary["convention"]
    (out / f"{name}.energy.html").write_text(report.to_html())
    (out / f"{name}.energy.json").write_text(report.to_json())
    result.files["energy report"] = str(out / f"{name}.energy.html")
    result.seconds["energy"] = clock() - t

    (out / f"{name}.summary.json").write_text(result.to_json())
    return result


def _run_lava(result: DeployResult, graph, qgraph, res_float, res_fixed, x, y) -> None:
    """Lava in bit-accurate fixed point against the fixed emulator; if the Lava target has no
    fixed point (yet), Lava in float against the float emulator, saying so."""
    from snncompile.errors import SnnCompileError

    try:
        from snncompile.targets import lava
    except Exception as exc:  # noqa: BLE001 - Lava is optional at run time
        result.missing["lava"] = f"{type(exc).__name__}: {exc}"
        return
    attempts = [("fixed", qgraph, res_fixed), ("float", graph, res_float)]
    for precision, g, reference in attempts:
        try:
            res = _run_chunked(lava.run, g, x, LAVA_CHUNK, f"Lava {precision}", precision=precision,
                               record=True)
        except SnnCompileError as exc:
            result.missing[f"lava {precision}"] = str(exc)
            continue
        n = len(x)
        ref = _subset_result(reference, n)
        result.lava_precision = precision
        result.lava_accuracy = res.accuracy(y)
        result.emulator_accuracy_lava_subset = float(np.mean(ref.pred == y))
        result.lava_output_agreement = _agreement(res.outputs, ref.outputs)
        result.lava_prediction_agreement = _agreement(res.pred, ref.pred)
        result.lava_spike_agreement = spike_agreement(g, ref, res)
        return


def _subset_result(res, n: int):
    """The first ``n`` samples of a RunResult."""
    from snncompile.targets.base import RunResult

    return RunResult(outputs=res.outputs[:n], readout=res.readout, backend=res.backend,
                     precision=res.precision,
                     layer_counts={k: v[:n] for k, v in res.layer_counts.items()},
                     layer_steps={k: v[:n] for k, v in res.layer_steps.items()})
