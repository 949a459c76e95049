"""Energy models: picojoules per operation, with their sources, and what each one leaves out.

Why presets with sources: a number of joules means nothing without the constants behind
it, so every report prints the model's constants, source and notes (energy.md).

* ``horowitz45`` (FP32, default), ``horowitz45-fp16``, ``horowitz45-int8``: Horowitz,
  ISSCC 2014, 45 nm. ``E = E_MAC * MACs + E_AC * SOPs``; neurons and spikes cost nothing
  (the convention of the SNN transformer papers).
* ``loihi1``: Davies et al., IEEE Micro 2018, Table 2 (pre-silicon, 0.75 V): 23.6 pJ per
  synaptic op, 81 pJ per (active) neuron update, 1.7 pJ per spike within a tile.
* ``lemaire``: memory-aware, after Lemaire et al. 2022 (arXiv 2210.13107): INT32 add
  0.1 pJ, mult 3.1 pJ, plus SRAM traffic priced per byte by the size of the memory
  (2.5 pJ/B at 8 KB, 5 pJ/B at 32 KB, 25 pJ/B at 1 MB, linear in between).
* a constants file (JSON or TOML) starting from any preset: :func:`load_constants`.

The spiking-transformer op classes have their own constants (``mask_pj``, ``reduce_pj``,
``scale_pj``, one per op): a reduction is an add and an event-driven scale accumulates its
factor (the model's add/AC figure: Horowitz FP32 add 0.9 pJ, FP16 0.4, INT8 0.03; Lemaire
INT32 add 0.1); a mask (AND of spikes) is priced as one add too, which is an assumption: no
published per-operation figure for a spike AND was found. On Loihi 1 an AND unit is a neuron
with two weight-1 synapses and a sum is a Dense of ones, so each of their events is one
synaptic op (23.6 pJ).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Optional

from snncompile.energy.counts import NeuronCounts, SynapseCounts
from snncompile.errors import SnnCompileError

PJ = 1e-12


@dataclass(frozen=True)
class MemoryModel:
    """SRAM traffic after Lemaire et al. 2022: per event read the weight and read+write the
    target membrane; per neuron and step read+write its state; a leak costs a multiply."""

    add_pj: float = 0.1
    mult_pj: float = 3.1
    weight_bytes: float = 4.0
    state_bytes: float = 4.0
    #: (memory size in bytes, pJ per byte) points; linear in between, clamped at the ends.
    sram_pj_per_byte: tuple = ((0.0, 0.0), (8192.0, 2.5), (32768.0, 5.0), (1048576.0, 25.0))

    def per_byte(self, size_bytes: float) -> float:
        pts = self.sram_pj_per_byte
        size = min(max(size_bytes, pts[0][0]), pts[-1][0])
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            if size <= x1:
                return y0 + (y1 - y0) * (size - x0) / (x1 - x0)
        return pts[-1][1]

    def synapse_access_pj(self, s: SynapseCounts, with_input: bool) -> float:
        """SRAM energy of one synaptic operation (or MAC, ``with_input``) of layer ``s``."""
        weights = self.weight_bytes * self.per_byte(max(s.n_weights, 1) * self.weight_bytes)
        membrane = 2 * self.state_bytes * self.per_byte(s.n_outputs * self.state_bytes)
        inputs = self.state_bytes * self.per_byte(s.n_inputs * self.state_bytes) if with_input else 0.0
        return (weights if s.n_weights else 0.0) + membrane + inputs

    def neuron_update_pj(self, n: NeuronCounts) -> float:
        """One neuron update: read+write state, compare with threshold, leak multiply if leaky."""
        state = 2 * self.state_bytes * self.per_byte(n.n_neurons * self.state_bytes)
        return state + self.add_pj + (self.mult_pj if n.leaky else 0.0)


@dataclass(frozen=True)
class EnergyModel:
    name: str
    description: str
    mac_pj: float
    ac_pj: float
    neuron_update_pj: float = 0.0
    spike_pj: float = 0.0
    mask_pj: float = 0.9
    reduce_pj: float = 0.9
    scale_pj: float = 0.9
    memory: Optional[MemoryModel] = None
    source: str = ""
    notes: tuple = ()

    def as_dict(self) -> dict:
        d = asdict(self)
        d["notes"] = list(self.notes)
        if self.memory is not None:
            d["memory"]["sram_pj_per_byte"] = [list(p) for p in self.memory.sram_pj_per_byte]
        return d

    def energy_j(self, macs: float, synops: float) -> float:
        """Compute-only energy of ``macs`` MACs and ``synops`` accumulates (the papers' formula)."""
        return (self.mac_pj * macs + self.ac_pj * synops) * PJ

    def synapse_energy_j(self, s: SynapseCounts, synops: float, macs: float) -> dict[str, float]:
        """Energy per sample of one synapse layer, split into synops / macs / memory."""
        out = {"synops": self.ac_pj * synops * PJ, "macs": self.mac_pj * macs * PJ, "memory": 0.0}
        if self.memory is not None:
            out["memory"] = (synops * self.memory.synapse_access_pj(s, with_input=False)
                             + macs * self.memory.synapse_access_pj(s, with_input=True)) * PJ
        return out

    def operation_energy_j(self, synops: float, macs: float, ops: float,
                           op_class: Optional[str]) -> dict[str, float]:
        """Energy per sample of one MatMul / Mul / ReduceSum / Scale row (no memory traffic:
        the memory model covers synapses and neurons only)."""
        out = {"synops": self.ac_pj * synops * PJ, "macs": self.mac_pj * macs * PJ}
        if op_class is not None:
            out[OP_PARTS[op_class]] = getattr(self, f"{op_class}_pj") * ops * PJ
        return out

    def neuron_energy_j(self, n: NeuronCounts, timesteps: int) -> dict[str, float]:
        """Energy per sample of one neuron population: updates, spikes, memory."""
        updates = n.n_neurons * timesteps
        out = {"neurons": self.neuron_update_pj * updates * PJ, "spikes": self.spike_pj * n.spikes * PJ,
               "memory": 0.0}
        if self.memory is not None:
            out["memory"] = updates * self.memory.neuron_update_pj(n) * PJ
        return out

    def ann_energy_j(self, s: SynapseCounts, ann_macs: float, ann_acs: float) -> float:
        """The ANN baseline of one layer: dense MACs (weights) and ACs (pooling windows)."""
        e = self.mac_pj * ann_macs + self.ac_pj * ann_acs
        if self.memory is not None:
            e += (ann_macs + ann_acs) * self.memory.synapse_access_pj(s, with_input=True)
        return e * PJ


#: op class -> its part of the energy breakdown
OP_PARTS = {"mask": "masks", "reduce": "reductions", "scale": "scales"}

_HOROWITZ = "Horowitz, 'Computing's energy problem', ISSCC 2014, 45 nm"
_PAPER_NOTE = "neuron updates, spikes and memory traffic are not charged (the SNN papers' convention)"

MODELS: dict[str, EnergyModel] = {
    m.name: m for m in (
        EnergyModel("horowitz45", "45 nm FP32: MAC 4.6 pJ (3.7 mult + 0.9 add), AC 0.9 pJ",
                    mac_pj=4.6, ac_pj=0.9, source=_HOROWITZ, notes=(_PAPER_NOTE,)),
        EnergyModel("horowitz45-fp16", "45 nm FP16: MAC 1.5 pJ, AC 0.4 pJ",
                    mac_pj=1.5, ac_pj=0.4, mask_pj=0.4, reduce_pj=0.4, scale_pj=0.4, source=_HOROWITZ,
                    notes=(_PAPER_NOTE,)),
        EnergyModel("horowitz45-int8", "45 nm INT8: MAC 0.23 pJ, AC 0.03 pJ",
                    mac_pj=0.23, ac_pj=0.03, mask_pj=0.03, reduce_pj=0.03, scale_pj=0.03, source=_HOROWITZ,
                    notes=(_PAPER_NOTE,)),
        EnergyModel(
            "loihi1", "Loihi 1 per-op figures: synaptic op 23.6 pJ, neuron update 81 pJ, spike 1.7 pJ",
            mac_pj=4.6, ac_pj=23.6, neuron_update_pj=81.0, spike_pj=1.7,
            mask_pj=23.6, reduce_pj=23.6, scale_pj=23.6,
            source="Davies et al., 'Loihi', IEEE Micro 2018, Table 2 (pre-silicon, 0.75 V)",
            notes=("every neuron update is charged as active (81 pJ); the 52 pJ inactive figure is "
                   "not applied because per-neuron activity per step is not recorded: an upper bound",
                   "spikes are charged as within-tile (1.7 pJ); tile hops (3.0/4.0 pJ) are not modelled",
                   "Loihi has no MAC: real-valued layers and the ANN baseline use Horowitz 45 nm "
                   "FP32 MAC 4.6 pJ (an off-chip host)",
                   "Loihi 2 has no public per-operation figures")),
        EnergyModel(
            "lemaire", "memory-aware: INT32 add 0.1 pJ, mult 3.1 pJ, SRAM 2.5/5/25 pJ per byte "
            "at 8 KB/32 KB/1 MB, 4-byte weights and states",
            mac_pj=3.2, ac_pj=0.1, mask_pj=0.1, reduce_pj=0.1, scale_pj=0.1, memory=MemoryModel(),
            source="after Lemaire et al. 2022, arXiv 2210.13107 (simplified: one SRAM per layer "
                   "for weights, one for states)",
            notes=("per synaptic event: read the weight, read+write the target membrane",
                   "per MAC: also read the input",
                   "per neuron and step: read+write its state, compare (add), leak multiply if leaky")),
    )
}


def get_model(name: str) -> EnergyModel:
    if name not in MODELS:
        raise SnnCompileError(f"unknown energy model '{name}'; choose one of {', '.join(MODELS)} "
                              f"or give a constants file")
    return MODELS[name]


_NUMBER_KEYS = ("mac_pj", "ac_pj", "neuron_update_pj", "spike_pj", "mask_pj", "reduce_pj", "scale_pj")
_MEMORY_NUMBERS = ("add_pj", "mult_pj", "weight_bytes", "state_bytes")


def _number(path, key, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise SnnCompileError(f"constants file '{path}': '{key}' must be a non-negative number, got {value!r}")
    return float(value)


def load_constants(path, base: Optional[str] = None) -> EnergyModel:
    """An energy model from a JSON or TOML file: ``base`` (a preset to start from, default
    horowitz45), ``name``, ``description``, ``mac_pj``, ``ac_pj``, ``neuron_update_pj``,
    ``spike_pj``, ``mask_pj``, ``reduce_pj``, ``scale_pj``, and an optional ``memory`` table
    (``add_pj``, ``mult_pj``, ``weight_bytes``, ``state_bytes``, ``sram_pj_per_byte``: a list
    of [bytes, pJ/B] pairs), or ``memory = false``."""
    path = Path(path)
    if not path.exists():
        raise SnnCompileError(f"constants file '{path}' does not exist")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        if path.suffix.lower() == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                raise SnnCompileError(f"constants file '{path}': TOML needs Python 3.11+; "
                                      f"write it as JSON") from None
            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # JSONDecodeError, TOMLDecodeError
        raise SnnCompileError(f"constants file '{path}' is not valid "
                              f"{'TOML' if path.suffix.lower() == '.toml' else 'JSON'}: {exc}") from None
    if not isinstance(data, dict):
        raise SnnCompileError(f"constants file '{path}' must hold a table/object of constants")
    allowed = {"base", "name", "description", "memory", "source", *_NUMBER_KEYS}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise SnnCompileError(f"constants file '{path}': unknown key(s) {', '.join(unknown)}; "
                              f"allowed: {', '.join(sorted(allowed))}")
    try:
        model = get_model(str(data.get("base", base or "horowitz45")))
    except SnnCompileError as exc:
        raise SnnCompileError(f"constants file '{path}': 'base': {exc}") from None
    changes: dict = {k: _number(path, k, data[k]) for k in _NUMBER_KEYS if k in data}
    changes["name"] = str(data.get("name", f"{model.name}+{path.name}"))
    changes["description"] = str(data.get("description", f"{model.description}, overridden by {path.name}"))
    changes["source"] = str(data.get("source", f"user constants file {path.name}"))
    if "memory" in data:
        changes["memory"] = _memory(path, data["memory"], model.memory)
    return replace(model, **changes)


def _memory(path, spec, current: Optional[MemoryModel]) -> Optional[MemoryModel]:
    if spec is False or spec is None:
        return None
    if not isinstance(spec, dict):
        raise SnnCompileError(f"constants file '{path}': 'memory' must be a table or false")
    known = {f.name for f in fields(MemoryModel)}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise SnnCompileError(f"constants file '{path}': unknown memory key(s) {', '.join(unknown)}")
    mem = current or MemoryModel()
    changes = {k: _number(path, f"memory.{k}", spec[k]) for k in _MEMORY_NUMBERS if k in spec}
    if "sram_pj_per_byte" in spec:
        pts = spec["sram_pj_per_byte"]
        ok = isinstance(pts, list) and len(pts) >= 2 and all(isinstance(p, list) and len(p) == 2 for p in pts)
        if not ok:
            raise SnnCompileError(f"constants file '{path}': 'memory.sram_pj_per_byte' must be a list "
                                  f"of at least two [bytes, pJ per byte] pairs")
        pts = tuple((_number(path, "memory.sram_pj_per_byte", a), _number(path, "memory.sram_pj_per_byte", b))
                    for a, b in pts)
        if any(b[0] <= a[0] for a, b in zip(pts, pts[1:])):
            raise SnnCompileError(f"constants file '{path}': 'memory.sram_pj_per_byte' sizes must increase")
        changes["sram_pj_per_byte"] = pts
    return replace(mem, **changes)
