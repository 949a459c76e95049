"""Partition every population into cores so that no core breaks any limit of the chip profile.

How: populations are cut into contiguous ranges of neurons (flat C-major order), each range
as long as the limits allow (exponential then binary search on its end). Every resource
only grows when a range grows, so this greedy cut uses the fewest contiguous cores, and
never more than nengo-loihi's splitter (``n_split`` equal pieces) whenever those pieces
fit; where an equal piece would break a limit (nengo-loihi's TODO) it simply cuts shorter.

Per core (Loihi 1 accounting as nengo-loihi's ``block.py``):

* neurons: the range length;
* input axons: one per source element feeding the range, summed over synapse groups;
* synapse memory: per input axon, its weights on this core stored in chunks of
  ``synapse_chunk_weights``; a chunk of n costs ``ceil((n * bits + overhead) / unit_bits)``
  units (``bits`` = weight bits, plus index bits for conv weights, stored per axon);
* output axons: one per (neuron, destination core it reaches), plus one per neuron whose
  spikes go to the host.

The spiking-transformer populations (product units, ANDs, accumulators, scales) are counted by
the same rules: their explicit one-weight synapses (``Sparse``) store index bits where a source
feeds several targets (a fan-out), none where each axon carries one weight; a Dense or Conv read
or written through a Permute or Slice (``Mapped``) stores its weights per axon with the conv's
index bits, also on Loihi 2 (no shared kernels across a re-indexing).

Output axons depend on how the destinations are cut, so populations are cut in reverse
graph order (consumers first); a recurrent edge is settled by a repair pass that re-cuts
any core whose output axons grew past the limit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from snncompile.chip.geometry import Conv
from snncompile.chip.network import INPUT, ChipNetwork, Population, build_network
from snncompile.chip.profile import ChipProfile, load_profile
from snncompile.errors import SnnCompileError

#: resource -> (profile limit field, words for an error message)
LIMITS = {
    "neurons": ("neurons_per_core", "neurons"),
    "input_axons": ("input_axons_per_core", "input axons"),
    "output_axons": ("output_axons_per_core", "output axons"),
    "synapse_units": ("synapse_memory_units", "synapse memory units"),
}


@dataclass
class Core:
    chip: int
    core: int                 # global index; core % cores_per_chip is its place on the chip
    layer: str
    start: int
    stop: int
    usage: dict               # resource -> amount
    binding_limit: str = ""   # the resource closest to its limit
    utilisation: float = 0.0  # of that resource

    @property
    def neurons(self) -> int:
        return self.stop - self.start


@dataclass
class LayerMap:
    name: str
    role: str
    label: str
    neurons: int
    cores: list[int]          # global core indices
    binding_limit: str
    chips: list[int]


@dataclass
class ChipMap:
    profile: ChipProfile
    network: ChipNetwork
    cores: list[Core]
    layers: list[LayerMap]
    inter_chip_axons: int = 0
    notes: list = field(default_factory=list)

    @property
    def chips(self) -> int:
        return (max(c.chip for c in self.cores) + 1) if self.cores else 0

    def layer_cores(self, name) -> list[Core]:
        return [self.cores[i] for i in self.layer_map(name).cores]

    def layer_map(self, name) -> LayerMap:
        return next(la for la in self.layers if la.name == name)


class _Resources:
    """Usage of any neuron range of one population, given the chip's accounting rules."""

    def __init__(self, pop: Population, profile: ChipProfile, out_prefix: np.ndarray):
        self.pop, self.p = pop, profile
        self.out_prefix = out_prefix          # (n + 1,) cumulative output axons per neuron
        K, O, U = profile.synapse_chunk_weights, profile.synapse_chunk_overhead_bits, profile.synapse_unit_bits
        self.K, self.O, self.U = int(K), int(O), int(U)
        self.limits = {r: getattr(profile, f) for r, (f, _) in LIMITS.items()}

    def index_bits(self, n_core: int) -> int:
        need = math.ceil(math.log2(n_core)) if n_core > 1 else 0
        for bits in self.p.sparse_index_bits_map:
            if bits >= need:
                return bits
        return self.p.sparse_index_bits_map[-1]

    def chunk_units(self, counts: np.ndarray, bits: int) -> int:
        """Synapse memory of axons storing ``counts`` weights each (nengo-loihi bits_per_axon)."""
        full, rem = np.divmod(counts, self.K)
        per_full = -(-(self.K * bits + self.O) // self.U)
        part = np.where(rem > 0, -(-(rem * bits + self.O) // self.U), 0)
        return int((full * per_full).sum() + part.sum())

    def usage(self, a: int, b: int) -> dict:
        axons = units = 0
        for g in self.pop.groups:
            if is_shared(g, self.p):
                ax, un = self.shared_conv(g.geometry, a, b)
                axons, units = axons + ax, units + un
                continue
            indexed = g.geometry.kind == "conv" or getattr(g.geometry, "indexed", False)
            bits = int(self.p.weight_bits) + (self.index_bits(b - a) if indexed else 0)
            for e in g.geometry.fanin(a, b):
                used = e.counts[e.counts > 0]
                width = e.c1 - e.c0
                axons += width * used.size
                units += width * self.chunk_units(used, bits)
        return {"neurons": b - a, "input_axons": int(axons),
                "output_axons": int(self.out_prefix[b] - self.out_prefix[a]), "synapse_units": int(units)}

    def shared_conv(self, geo, a: int, b: int) -> tuple[int, int]:
        """Shared kernels: one population axon per source channel read, the kernels of the output
        channels present stored once (``ceil(weights * bits / unit_bits)`` units)."""
        hw = geo.out_shape[1] * geo.out_shape[2]
        channels = (b - 1) // hw - a // hw + 1
        weights = channels * (geo.in_shape[0] // geo.groups) * geo.kernel[0] * geo.kernel[1]
        axons = sum(e.c1 - e.c0 for e in geo.fanin(a, b) if e.counts.any())
        return axons, -(-weights * int(self.p.weight_bits) // self.U)

    def broken(self, use: dict):
        """The first limit ``use`` breaks, or None."""
        for r, cap in self.limits.items():
            if use[r] > cap:
                return r
        return None

    def fits(self, a: int, b: int) -> bool:
        if b - a > self.limits["neurons"]:
            return False
        if self.out_prefix[b] - self.out_prefix[a] > self.limits["output_axons"]:
            return False
        return self.broken(self.usage(a, b)) is None


def _cut(pop: Population, res: _Resources, lo: int, hi: int, chip_name: str) -> list[tuple[int, int]]:
    """Greedy longest ranges covering neurons ``[lo, hi)``."""
    ranges, a, guess = [], lo, min(hi - lo, res.limits["neurons"])
    while a < hi:
        if not res.fits(a, a + 1):
            use = res.usage(a, a + 1)
            r = res.broken(use)
            _, words = LIMITS[r]
            raise SnnCompileError(
                f"layer '{pop.name}' ({pop.label}): neuron {a} alone needs {use[r]:,} {words}, more than the "
                f"{res.limits[r]:,} of a {chip_name} core; it cannot be split further")
        good, bad = a + 1, None
        top = min(hi, a + res.limits["neurons"])
        probe = min(top, a + max(guess, 1))
        while bad is None and good < top:
            if res.fits(a, probe):
                good = probe
                probe = min(top, a + 2 * (probe - a))
            else:
                bad = probe
        while bad is not None and bad - good > 1:
            mid = (good + bad) // 2
            if res.fits(a, mid):
                good = mid
            else:
                bad = mid
        ranges.append((a, good))
        guess = good - a
        a = good
    return ranges


def is_shared(group, profile) -> bool:
    """A conv/pool group stored with shared kernels and population axons (Loihi 2); not one read
    or written through a Permute or Slice (``Mapped``): its kernels are stored per axon."""
    return isinstance(group.geometry, Conv) and bool(profile.conv_weight_sharing)


class _OutAxons:
    """Per source population: how many destination cores each of its neurons reaches, and for
    population axons (shared conv) how many destination cores each source channel reaches."""

    def __init__(self, net: ChipNetwork, profile: ChipProfile):
        self.net, self.profile = net, profile
        self.diff = {}            # source -> (C + 1, positions) int32 difference over channels
        self.channels = {}        # source -> (C,) destination cores per source channel (shared conv)

    def add_core(self, pop: Population, a: int, b: int):
        for g in pop.groups:
            if g.source == INPUT:
                continue
            c, hw = g.geometry.source_shape
            if is_shared(g, self.profile):
                per = self.channels.setdefault(g.source, np.zeros(c, dtype=np.int64))
                for e in g.geometry.fanin(a, b):
                    if e.counts.any():
                        per[e.c0:e.c1] += 1
                continue
            d = self.diff.setdefault((g.source, c, hw), np.zeros((c + 1, hw), dtype=np.int32))
            for e in g.geometry.fanin(a, b):
                mask = (e.counts > 0).astype(np.int32)
                d[e.c0] += mask
                d[e.c1] -= mask

    def prefix(self, pop: Population) -> np.ndarray:
        total = np.zeros(pop.n, dtype=np.int64)
        for (src, c, hw), d in self.diff.items():
            if src == pop.name:
                total += np.cumsum(d[:c], axis=0, dtype=np.int64).ravel()
        if self.net.to_host.get(pop.name):
            total += 1
        return np.concatenate([[0], np.cumsum(total)])


def map_network(net: ChipNetwork, profile: ChipProfile) -> ChipMap:
    """Cut every population of ``net`` into cores of ``profile`` (see the module docstring)."""
    cuts: dict[str, list[tuple[int, int]]] = {}
    out = _OutAxons(net, profile)
    for pop in reversed(net.populations):
        res = _Resources(pop, profile, out.prefix(pop))
        cuts[pop.name] = _cut(pop, res, 0, pop.n, profile.name)
        for a, b in cuts[pop.name]:
            out.add_core(pop, a, b)
    for _ in range(10):       # recurrent edges: re-cut cores whose output axons grew
        out = _OutAxons(net, profile)
        for pop in net.populations:
            for a, b in cuts[pop.name]:
                out.add_core(pop, a, b)
        changed = False
        for pop in net.populations:
            res = _Resources(pop, profile, out.prefix(pop))
            new = []
            for a, b in cuts[pop.name]:
                new += [(a, b)] if res.fits(a, b) else _cut(pop, res, a, b, profile.name)
            changed |= new != cuts[pop.name]
            cuts[pop.name] = new
        if not changed:
            break
    else:
        raise SnnCompileError(f"graph '{net.name}': the cut into {profile.name} cores did not settle "
                              f"(recurrent output axons keep growing)")
    return _assemble(net, profile, cuts, out)


def _assemble(net, profile, cuts, out) -> ChipMap:
    cores, layers = [], []
    per_chip = int(profile.cores_per_chip)
    for pop in net.populations:
        res = _Resources(pop, profile, out.prefix(pop))
        ids = []
        per_channel = out.channels.get(pop.name)
        hw = pop.n // pop.shape[0] if per_channel is not None else 1
        for a, b in cuts[pop.name]:
            use = res.usage(a, b)
            if per_channel is not None:       # population axons leave once per source channel
                use["output_axons"] += int(per_channel[a // hw:(b - 1) // hw + 1].sum())
                if use["output_axons"] > res.limits["output_axons"]:
                    raise SnnCompileError(
                        f"layer '{pop.name}' ({pop.label}): neurons {a}-{b} need {use['output_axons']:,} "
                        f"output axons, more than the {res.limits['output_axons']:,} of a {profile.name} core")
            ratios = {r: use[r] / res.limits[r] for r in LIMITS}
            binding = max(ratios, key=ratios.get)
            idx = len(cores)
            cores.append(Core(idx // per_chip, idx, pop.name, a, b, use, binding, ratios[binding]))
            ids.append(idx)
        counts = {}
        for i in ids:
            counts[cores[i].binding_limit] = counts.get(cores[i].binding_limit, 0) + 1
        layers.append(LayerMap(pop.name, pop.role, pop.label, pop.n, ids, max(counts, key=counts.get),
                               sorted({cores[i].chip for i in ids})))
    cmap = ChipMap(profile, net, cores, layers, notes=list(net.notes))
    cmap.inter_chip_axons = int(sum(v for d, links in core_links(cmap).items()
                                    for s, v in links.items() if cores[s].chip != cores[d].chip))
    return cmap


def core_links(cmap: ChipMap, weights: dict | None = None) -> dict[int, dict[int, float]]:
    """dest core -> {source core: axons} (or, with ``weights`` = population -> per-neuron value,
    the sum of those values over the axons: e.g. spikes per step, giving messages).

    Per (destination, source core) pair the sum is a dot product over the source's positions,
    with channel prefix sums for whole channels, so no (targets x sources) array is built."""
    layer_of = {la.name: la for la in cmap.layers}
    pops = cmap.network.by_name()
    prefix: dict = {}
    links: dict[int, dict[int, float]] = {}
    for core in cmap.cores:
        acc: dict[int, float] = {}
        for g in pops[core.layer].groups:
            if g.source == INPUT:
                continue
            c, hw = g.geometry.source_shape
            key = (g.source, c, hw)       # a source read as (C, H*W) by a conv, as (1, n) through a layout
            if key not in prefix:
                w = (np.ones(c * hw) if weights is None else np.asarray(weights[g.source], dtype=np.float64))
                w = w.reshape(c, hw)
                cw = np.zeros((c + 1, hw))
                np.cumsum(w, axis=0, out=cw[1:])
                ids = layer_of[g.source].cores
                starts = np.array([cmap.cores[i].start for i in ids])
                stops = np.array([cmap.cores[i].stop for i in ids])
                prefix[key] = (w, cw, ids, starts, stops)
            w, cw, ids, starts, stops = prefix[key]
            for e in g.geometry.fanin(core.start, core.stop):
                m = (e.counts > 0).astype(np.float64)
                lo, hi = e.c0 * hw, e.c1 * hw
                for k in range(int(np.searchsorted(stops, lo, "right")), int(np.searchsorted(starts, hi, "left"))):
                    val = _range_dot(w, cw, m, max(starts[k], lo), min(stops[k], hi), hw)
                    if val:
                        acc[ids[k]] = acc.get(ids[k], 0.0) + val
        links[core.core] = acc
    return links


def _range_dot(w, cw, m, a: int, b: int, hw: int) -> float:
    """sum of w[i] * m[i % hw] over flat i in [a, b) (w as (C, hw), cw its channel prefix sums)."""
    ca, pa = divmod(int(a), hw)
    cb, pb = divmod(int(b), hw)
    if ca == cb:
        return float(w[ca, pa:pb] @ m[pa:pb])
    total = float(w[ca, pa:] @ m[pa:]) + float((cw[cb] - cw[ca + 1]) @ m)
    return total + (float(w[cb, :pb] @ m[:pb]) if pb else 0.0)


def map_graph(graph, chip) -> ChipMap:
    """Load the profile (name or file), build the chip network of ``graph`` and cut it."""
    profile = load_profile(chip)
    net = build_network(graph, graded_spikes=bool(profile.graded_spikes))
    if not net.populations:
        raise SnnCompileError(f"graph '{graph.name}' has no neuron layer to place on a chip")
    return map_network(net, profile)
