"""The per-layer quantization report, and the diagnostic run that fills its data columns.

With calibration data the float reference and the integer emulator are stepped side by
side on the same samples: per layer the SQNR of the fixed-point value (converted back by
its scale) against the float value, the u-wrap / v-saturation / synapse-wrap events, and
spike-count agreement.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np
import torch

from snncompile.ir import nodes as ir
from snncompile.targets.base import prepare_inputs
from snncompile.targets.emulator.integer import IntegerSimulator
from snncompile.targets.reference import Simulator

from .calibrate import GAINS, biases_kept, constant_parts
from .scales import LayerQuant


@dataclass
class LayerReport(LayerQuant):
    """One row of the report: the pass's decisions plus what calibration showed."""

    events: dict = field(default_factory=dict)       # u_wrap, v_saturate, wrap counts
    sqnr_db: Optional[float] = None                  # fixed vs float value over calibration
    spikes_float: Optional[int] = None
    spikes_fixed: Optional[int] = None


@dataclass
class QuantReport:
    layers: list[LayerReport]
    settings: dict
    calibrated: bool = False
    n_calib: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        def clean(v):
            if isinstance(v, float) and (math.isinf(v) or math.isnan(v)):
                return str(v)
            return v
        rows = [{k: clean(v) for k, v in asdict(r).items()} for r in self.layers]
        return json.dumps({"settings": self.settings, "calibrated": self.calibrated,
                           "n_calib": self.n_calib, "layers": rows, "warnings": self.warnings}, indent=2)

    def to_text(self) -> str:
        def f(v, fmt="{:.1f}"):
            if v is None:
                return "-"
            if isinstance(v, float) and math.isinf(v):
                return "inf"
            return fmt.format(v)
        head = ("layer", "kind", "scale", "w_exp", "vth", "sat.w", "bias.sat", "wraps", "v.sat",
                "SQNR dB", "w.SQNR", "spikes f/q")
        rows = [head]
        for r in self.layers:
            ev = r.events or {}
            wraps = ev.get("u_wrap", ev.get("wrap"))
            rows.append((r.name, r.kind, f"{r.scale:.4g}", f(r.weight_exp, "{}"), f(r.vth, "{}"),
                         f"{r.saturated_weights}/{r.n_weights}" if r.n_weights else "-",
                         str(r.bias_saturated) if r.kind == "Neuron" else "-",
                         f(wraps, "{}"), f(ev.get("v_saturate"), "{}"), f(r.sqnr_db), f(r.weight_sqnr_db),
                         f"{r.spikes_float}/{r.spikes_fixed}" if r.spikes_float is not None else "-"))
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        src = f"calibrated on {self.n_calib} samples" if self.calibrated else "no calibration data (defaults)"
        out = [f"Loihi fixed point, {self.settings.get('weight_bits')}-bit weights, {src}", *lines]
        for r in self.layers:
            if r.note:
                out.append(f"note: {r.name}: {r.note}")
        out += [f"warning: {w}" for w in self.warnings]
        return "\n".join(out)


class _Tap:
    """Mixin: keep each node's value of the current step in ``self.last``."""

    def _apply(self, node, ins, x_t):
        val = super()._apply(node, ins, x_t)
        self.last[node.name] = val
        return val


class _FloatTap(_Tap, Simulator):
    last: dict = None


class _FixedTap(_Tap, IntegerSimulator):
    last: dict = None


def diagnose(qgraph, x, layers: dict[str, LayerQuant], steps=None, batch_size: int = 256
             ) -> list[LayerReport]:
    """Step float and fixed side by side over ``x``; fill events, SQNR and spike counts."""
    xs, T = prepare_inputs(qgraph, x, steps)
    names = [n for n in qgraph.order() if n in layers]
    sig2 = {n: 0.0 for n in names}
    err2 = {n: 0.0 for n in names}
    spikes_f = {n: 0 for n in names}
    spikes_q = {n: 0 for n in names}
    events = {n: {} for n in names}
    # Fixed-point synapses carry no bias (it moved into the neuron / readout): compare the
    # float value without its constant part.
    const = {n: torch.from_numpy(np.asarray(c, dtype=np.float64)) for n, c in constant_parts(qgraph).items()}
    kept = biases_kept(qgraph)      # these keep their bias in fixed point too
    with torch.no_grad():
        for lo in range(0, xs.shape[0], batch_size):
            chunk = torch.from_numpy(xs[lo:lo + batch_size])
            fs, qs = _FloatTap(qgraph, chunk.shape[0]), _FixedTap(qgraph, chunk.shape[0])
            fs.last, qs.last = {}, {}
            for n, st in qs.neurons.items():
                st.events = {"u_wrap": 0, "v_saturate": 0}
            for n, syn in {**qs.synapses, **qs.products}.items():
                syn.events = {"wrap": 0}
            for t in range(T):
                fs.step(chunk[:, t])
                qs.step(chunk[:, t])
                for n in names:
                    node = qgraph.node(n)
                    fv, qv = fs.last[n], qs.last[n].to(torch.float64)
                    if isinstance(node, ir.Neuron):
                        spikes_f[n] += int(fv.sum())
                        spikes_q[n] += int(qv.sum())
                        fv = fs.neurons[n].v
                        qv = qs.neurons[n].v.to(torch.float64)
                    elif isinstance(node, GAINS) and n not in kept:
                        fv = fv - const[n]
                    qv = qv / layers[n].scale
                    sig2[n] += float((fv ** 2).sum())
                    err2[n] += float(((fv - qv) ** 2).sum())
            for n in names:
                src = qs.neurons.get(n) or qs.synapses.get(n) or qs.products.get(n)
                for k, v in (getattr(src, "events", None) or {}).items():
                    events[n][k] = events[n].get(k, 0) + v
    out = []
    for n in names:
        base = asdict(layers[n])
        rep = LayerReport(**base, events=events[n])
        if sig2[n] > 0:
            rep.sqnr_db = float("inf") if err2[n] == 0 else 10 * math.log10(sig2[n] / err2[n])
        if isinstance(qgraph.node(n), ir.Neuron):
            rep.spikes_float, rep.spikes_fixed = spikes_f[n], spikes_q[n]
        out.append(rep)
    return out
