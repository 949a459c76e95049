"""Time per step and energy per inference of a mapped network, from measured activity.

Model (every constant a field of the chip profile, with its source):

* per core and step: synaptic ops = sum over its input axons of (events arriving on the
  axon) x (weights the axon has on this core); neuron updates = its neurons (every neuron
  is updated every step); spikes = events its neurons send;
* time per step = the slowest core's ``synops x synop_ns + updates x neuron_update_ns``
  + barrier (interpolated linearly between ``barrier_min_ns`` at one tile and
  ``barrier_max_ns`` at a whole chip, by the tiles used) + ``chip_hop_ns`` when spikes
  cross chips;
* energy per inference = T x (synops x synop_pj (dense or conv) + updates x neuron_update_pj
  + spikes x spike_out_pj + messages x (message_pj + tile hops x tile_hop_pj, or
  chip_hop_pj across chips)) + static power x chips x T x time per step.

Activity is the mean per sample of events per element summed over the run: a population's
spike counts (emulator/reference ``layer_counts``), the input's non-zero values per step,
a relay's non-zero steps, or a uniform rate for published networks rebuilt without data.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from snncompile.chip.mapper import ChipMap, core_links
from snncompile.chip.network import GRADED_ROLES, INPUT
from snncompile.errors import SnnCompileError

PJ, NS = 1e-12, 1e-9


@dataclass
class Activity:
    """Events per element per sample (summed over ``timesteps``), by population name / INPUT."""

    timesteps: int
    events: dict
    source: str


def uniform_activity(cmap: ChipMap, rate: float, timesteps: int, input_rate: float | None = None) -> Activity:
    """Every neuron (and input element) fires at ``rate`` per step: for networks without data."""
    events = {p.name: np.full(p.n, rate * timesteps) for p in cmap.network.populations}
    for p in cmap.network.populations:
        if p.role == "readout":
            events[p.name] = np.zeros(p.n)
    n_in = int(np.prod(cmap.network.input_shape))
    events[INPUT] = np.full(n_in, (rate if input_rate is None else input_rate) * timesteps)
    return Activity(timesteps, events, f"uniform firing rate {rate:.3g} per neuron and step"
                    + ("" if input_rate is None else f", input {input_rate:.3g}"))


def activity_from_run(cmap: ChipMap, result, x) -> Activity:
    """Activity of a recorded run (``record=True``) of the mapped graph on input ``x``."""
    T = int(result.outputs.shape[1])
    x = np.asarray(x)
    nz = (x != 0)
    events = {INPUT: (nz.sum(axis=1) if x.ndim == len(cmap.network.input_shape) + 2 else nz * T)
              .reshape(len(x), -1).mean(axis=0).astype(np.float64)}
    pops = cmap.network.by_name()
    for p in cmap.network.populations:
        if p.role == "readout":
            events[p.name] = np.zeros(p.n)
            continue
        if p.role == "products":
            events[p.name] = product_unit_events(p, pops[p.node], events, T, result.layer_counts.get(p.node))
            continue
        rec = result.layer_counts.get(p.name)
        if rec is None:
            raise SnnCompileError(f"the {result.backend} run recorded no counts for node '{p.name}' "
                                  f"({p.role} population): run with record=True on the emulator or reference")
        rec = np.asarray(rec, dtype=np.float64).reshape(len(rec), -1)
        events[p.name] = (rec.mean(axis=0) if p.role not in GRADED_ROLES
                          else (rec != 0).mean(axis=0) * T)   # a graded value is sent when it is not 0
    return Activity(T, events, f"{result.backend} counts ({result.precision}) on {len(x)} sample(s)")


def product_unit_events(units, acc, events, T, acc_rec) -> np.ndarray:
    """Events per sample of a MatMul's product units ``(..., n, k, m)``, which no backend records.

    A unit sends when both its operands are non-zero on the same step: estimated as
    ``T * ra * rb`` from its operands' events per step ``ra``, ``rb`` (independent operands;
    an operand fed by several populations sums them, capped at 1). For spike x spike units the
    recorded accumulator value summed over the run is exactly the number of unit spikes into
    it, so the estimate is rescaled per accumulator to that count (exact per accumulator,
    shared among its ``k`` units in proportion to the estimate, evenly where it is 0)."""
    rate = {"lhs": np.zeros(units.n), "rhs": np.zeros(units.n)}
    for g in units.groups:
        rate[g.operand] += np.asarray(events[g.source], dtype=np.float64)[g.geometry.src] / T
    est = T * np.minimum(rate["lhs"], 1.0) * np.minimum(rate["rhs"], 1.0)
    if acc_rec is None or not units.binary_operands:
        return est
    (link,) = acc.groups                       # accumulator j reads units src[ptr[j]:ptr[j + 1]]
    geo = link.geometry
    acc_of = np.repeat(np.arange(geo.n_targets), np.diff(geo.ptr))
    want = np.asarray(acc_rec, dtype=np.float64).reshape(len(acc_rec), -1).mean(axis=0)
    unit = geo.src
    have = np.bincount(acc_of, weights=est[unit], minlength=geo.n_targets)
    k = np.diff(geo.ptr)
    share = np.where(have[acc_of] > 0, est[unit] / np.where(have[acc_of] > 0, have[acc_of], 1), 1.0 / k[acc_of])
    out = np.zeros(units.n)
    out[unit] = want[acc_of] * share
    return out


def merge_activities(parts) -> Activity:
    """The activity of all samples of several chunks: ``parts`` is [(Activity, n_samples), ...]
    (per-sample event means weighted by the chunks' sample counts)."""
    parts = list(parts)
    total = sum(n for _, n in parts)
    first = parts[0][0]
    events = {k: sum(a.events[k] * n for a, n in parts) / total for k in first.events}
    source = first.source.rsplit(" on ", 1)[0] + f" on {total} sample(s)"
    return Activity(first.timesteps, events, source)


@dataclass
class CoreCost:
    core: int
    layer: str
    synops_per_step: float
    updates_per_step: int
    spikes_per_step: float
    time_ns: float


@dataclass
class ChipCost:
    chip: str
    timesteps: int
    activity: str
    cores: list[CoreCost]
    step_ns: float
    compute_ns: float          # the slowest core
    barrier_ns: float
    chip_hop_ns: float
    energy_j: dict             # part -> joules per inference
    messages_per_step: float
    inter_chip_messages_per_step: float
    chips: int
    notes: list = field(default_factory=list)

    @property
    def energy_per_inference_j(self) -> float:
        return float(sum(self.energy_j.values()))

    @property
    def latency_s(self) -> float:
        return self.timesteps * self.step_ns * NS

    def as_dict(self) -> dict:
        slowest = max(self.cores, key=lambda c: c.time_ns)
        return {"chip": self.chip, "timesteps": self.timesteps, "activity": self.activity,
                "time_per_step_s": self.step_ns * NS, "slowest_core": slowest.core,
                "slowest_core_s": self.compute_ns * NS, "barrier_s": self.barrier_ns * NS,
                "chip_hop_s": self.chip_hop_ns * NS, "latency_per_inference_s": self.latency_s,
                "inferences_per_s": 1.0 / self.latency_s if self.latency_s else None,
                "energy_per_inference_j": self.energy_per_inference_j,
                "energy_breakdown_j": dict(self.energy_j),
                "power_w": self.energy_per_inference_j / self.latency_s if self.latency_s else None,
                "messages_per_step": self.messages_per_step,
                "inter_chip_messages_per_step": self.inter_chip_messages_per_step,
                "cores": [vars(c) for c in self.cores], "notes": list(self.notes)}


def _hops(p, a: int, b: int) -> int:
    ta, tb = (a % p.cores_per_chip) // p.cores_per_tile, (b % p.cores_per_chip) // p.cores_per_tile
    x = int(p.mesh_tiles_x)
    return abs(ta % x - tb % x) + abs(ta // x - tb // x)


def estimate(cmap: ChipMap, activity: Activity) -> ChipCost:
    """Time per step and energy per inference of ``cmap`` under ``activity``."""
    p, T = cmap.profile, activity.timesteps
    pops = cmap.network.by_name()
    per_step = {k: np.asarray(v, dtype=np.float64) / T for k, v in activity.events.items()}
    cores, syn_e = [], 0.0
    for core in cmap.cores:
        pop = pops[core.layer]
        synops = 0.0
        for g in pop.groups:
            c, hw = g.geometry.source_shape
            src = per_step[g.source].reshape(c, hw)
            ops = sum(float(src[e.c0:e.c1].sum(axis=0) @ e.counts) for e in g.geometry.fanin(core.start, core.stop))
            synops += ops
            syn_e += ops * (p.synop_conv_pj if g.geometry.kind == "conv" else p.synop_dense_pj)
        spikes = float(per_step[core.layer][core.start:core.stop].sum())
        t = synops * p.synop_ns + core.neurons * p.neuron_update_ns
        cores.append(CoreCost(core.core, core.layer, synops, core.neurons, spikes, t))
    weights = {k: v for k, v in per_step.items() if k != INPUT}
    links = core_links(cmap, weights)
    msgs = inter = hop_e = 0.0
    for d, srcs in links.items():
        for s, m in srcs.items():
            msgs += m
            if cmap.cores[s].chip != cmap.cores[d].chip:
                inter += m
                hop_e += m * p.chip_hop_pj
            else:
                hop_e += m * _hops(p, s, d) * p.tile_hop_pj
    chips = cmap.chips
    used = min(len(cmap.cores), int(p.cores_per_chip))
    tiles = -(-used // int(p.cores_per_tile))
    span = max(p.tiles_per_chip - 1, 1)
    barrier = p.barrier_min_ns + (p.barrier_max_ns - p.barrier_min_ns) * (tiles - 1) / span
    compute = max(c.time_ns for c in cores)
    hop_ns = p.chip_hop_ns if inter > 0 else 0.0
    step = compute + barrier + hop_ns
    updates = sum(c.updates_per_step for c in cores)
    spikes = sum(c.spikes_per_step for c in cores)
    energy = {"synops": T * syn_e * PJ, "neurons": T * updates * p.neuron_update_pj * PJ,
              "spikes": T * spikes * p.spike_out_pj * PJ,
              "messages": T * (msgs * p.message_pj + hop_e) * PJ,
              "static": p.static_w_per_chip * chips * T * step * NS}
    notes = ["every neuron is charged an active update every step (no idle-neuron discount)",
             "input values arrive from the host on input axons; the host link is not charged"]
    if any(p_.role in GRADED_ROLES for p_ in pops.values()):
        notes.append("a relay, accumulator, scale or graded-product population is charged one message per step "
                     "whenever its value summed over the run is non-zero (an upper bound from the recorded counts)")
    if any(p_.role == "products" for p_ in pops.values()):
        notes.append("a MatMul's product units are not recorded by any backend: each unit's events are "
                     "estimated as T x (lhs rate) x (rhs rate); for spike x spike units they are rescaled to "
                     "the recorded accumulator sums, which count those unit spikes exactly (per accumulator)")
    return ChipCost(p.name, T, activity.source, cores, step, compute, barrier, hop_ns, energy,
                    msgs, inter, chips, notes)
