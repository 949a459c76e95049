"""The quantization pass: choose per-layer scales and fill ``node.fixed`` (see ``ir.fixed``).

Every value on an edge gets a scale ``sigma`` (integer = float * sigma): the Input's
messages, spikes (sigma 1), synapse outputs. A neuron gets a state scale ``S``
(``v_int = v * S``), and the synapses feeding it (directly or through an Add) must then
deliver ``a_int = a * S / 64`` (Lava shifts the input by 6 bits), i.e. a gain
``S / (64 * sigma_in)`` = mantissa * 2**weight_exp. ``S`` is the largest value that

* keeps every feeding synapse's mantissas within 8 bits (Conv/pooling: Lava ignores
  ``weight_exp``, so the whole gain sits in the mantissa; Dense: the exponent takes
  powers of two, ``weight_exp`` in [-8, 7]),
* keeps ``u`` and ``v`` 2**22 below the 24-bit limits for the largest values seen in
  calibration (without data: the threshold, reset/initial values and the largest
  possible input current), and then
* makes the threshold mantissa exact when the population has one threshold.

Synapses that feed another synapse or a potential readout (e.g. Conv -> Conv, pooling
before a Linear) get a gain that uses their full mantissa range while their output
stays below 2**22 (Lava Conv wraps at 24 bits). Synapse biases do not exist on Loihi:
their constant currents (computed exactly by ``calibrate.constant_parts``) become the
neuron's bias (exact when ``du == 1``; for a leaky current ``du < 1`` the steady state
``c / du`` is used and the report says so) or the readout's bias.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from snncompile.errors import SnnCompileError
from snncompile.ir import fixed as fx
from snncompile.ir import nodes as ir
from snncompile.ir.kinds import StageTable

from snncompile.passes.operands import value_domains

from .calibrate import GAINS, THROUGH, TRANSFORMER_KINDS, Ranges, biases_kept, constant_parts
from .realign import producer, readers
from .products import exact_threshold_units, identity_scales_for_counts, product_note, value_bounds

VALUE_LIMIT = 2.0 ** 22        # largest |integer| we let a state or message reach
#: Messages of a synapse that feeds a product may be this much wider than ``input_bits``: the
#: product only selects and sums them (no multiplier), so its weights keep their 8 bits
#: (SpikingResformer's patch conv: 26 -> 44 dB weight SQNR, 96 -> 98 % spike agreement).
#: The same for the members of a shortcut group (SDT v1 zoo: largest per-layer spike-total
#: difference 37 % -> 14 %).
PRODUCT_EXTRA_BITS = 4
#: Message ranges around a realigning Scale (``realign``; Lava's weight_exp >= -8): a synapse
#: read only by such Scales sends 2**18 (8-bit weights on 8-bit images: their full mantissa),
#: the Scales 2**16 into their Add (read by exponent Scales again: mantissa * 2**-8 brings a
#: 2**16 message to a neuron current near 2**16 before Lava's 6-bit shift); each step keeps
#: >= 6 bits of mantissa where a single 8-bit scale kept 0-2 (measured on the zoo).
REALIGNED_LIMIT = 2.0 ** 18
REALIGN_LIMIT = 2.0 ** 16
#: Largest message of a Scale into a Dense (its acc: 2**14 * 255 * fan-in stays in int32).
SCALE_INTO_DENSE_LIMIT = 2.0 ** 14


@dataclass
class QuantSettings:
    weight_bits: int = 8
    input_bits: int = 8
    #: Assumed largest |input| without calibration data.
    default_input_max: float = 1.0


def mantissa_grid(weight_bits: int, mixed: bool) -> tuple[int, int, int]:
    """(step, lo, hi) of the mantissas Lava's Dense keeps unchanged (clip + LSB truncation)."""
    step = 2 ** (8 - weight_bits + int(mixed))
    return step, (-256 if mixed else -255), 256 - step


def quantize_mantissa(w_scaled: np.ndarray, weight_bits: int) -> tuple[np.ndarray, int]:
    """Round scaled weights onto Lava's mantissa grid; returns (mantissas, saturated count)."""
    mixed = bool(np.any(w_scaled < -0.5) and np.any(w_scaled > 0.5))
    step, lo, hi = mantissa_grid(weight_bits, mixed)
    q = np.rint(w_scaled / step) * step
    saturated = int(np.count_nonzero((q < lo) | (q > hi)))
    return np.clip(q, lo, hi).astype(np.int64), saturated


def _amax(a) -> float:
    a = np.asarray(a, dtype=np.float64)
    return float(np.abs(a).max()) if a.size else 0.0


def _pool_weight(node) -> float:
    kh, kw = node.kernel_size
    return 1.0 / (kh * kw) if isinstance(node, ir.AvgPool2d) else 1.0


def _row_l1(node) -> float:
    if isinstance(node, ir.Scale):       # one-to-one
        return _amax(node.weight)
    if isinstance(node, (ir.Linear, ir.Conv2d)):
        w = np.abs(node.weight).reshape(node.weight.shape[0], -1)
        return float(w.sum(1).max()) if w.size else 0.0
    kh, kw = node.kernel_size
    return kh * kw * _pool_weight(node)


def _max_w(node) -> float:
    return _amax(node.weight) if isinstance(node, (ir.Linear, ir.Conv2d, ir.Scale)) else _pool_weight(node)


@dataclass
class LayerQuant:
    """What the pass decided for one node (collected into the report)."""

    name: str
    kind: str
    scale: float
    weight_exp: Optional[int] = None
    saturated_weights: int = 0
    n_weights: int = 0
    weight_sqnr_db: Optional[float] = None
    max_mantissa: Optional[int] = None
    vth: Optional[int] = None
    bias_saturated: int = 0
    note: str = ""


def _sqnr(ref: np.ndarray, approx: np.ndarray) -> Optional[float]:
    ref, approx = np.asarray(ref, np.float64), np.asarray(approx, np.float64)
    noise = float(np.sum((ref - approx) ** 2))
    signal = float(np.sum(ref ** 2))
    if signal == 0:
        return None
    return float("inf") if noise == 0 else 10 * math.log10(signal / noise)


class _Pass:
    def __init__(self, graph, ranges: Optional[Ranges], settings: QuantSettings, realign=frozenset()):
        self.g = graph
        #: Scales that realign a shortcut stream (``realign``): they have a weight exponent.
        self.realign = frozenset(realign)
        #: ... and the synapses whose stream only they read: messages up to REALIGNED_LIMIT
        #: (the Scale's exponent brings them down)
        self.realigned = {n.name for n in graph if isinstance(n, GAINS) and n.name not in self.realign
                          and readers(graph, n.name) <= self.realign}
        self.r = ranges
        self.s = settings
        self.const = constant_parts(graph)
        self.kept = biases_kept(graph)
        self.into_products = biases_kept(graph, through_maxpool=False)
        #: Transformer graph: a max pool of currents passes scales on (a positive gain commutes
        #: with max; the synapses before it keep their bias, ``biases_kept``).
        self.pools = any(isinstance(n, TRANSFORMER_KINDS) for n in graph)
        self.dom = value_domains(graph)
        xmax = (ranges.input_max if ranges is not None else settings.default_input_max) or 1.0
        #: Data-free float bound of every node's |value| (neuron inputs through products).
        self.bound = value_bounds(graph, self.const, xmax)
        self.sigma: dict[str, float] = {}
        self.amax: dict[str, float] = {}      # float bound of each node's |value|
        self.layers: dict[str, LayerQuant] = {}
        self.M = 256 - 2 ** (8 - settings.weight_bits + 1)   # mixed-sign max mantissa

    # -- which synapses feed a neuron (their gain follows the neuron's scale) ---------
    def passes_on(self, src: str, consumer: str) -> bool:
        """Does ``consumer`` carry ``src``'s value on linearly, with no gain of its own? Add,
        layouts, sums, and a product whose other operand is spikes or counts (scale 1)."""
        node = self.g.node(consumer)
        if isinstance(node, THROUGH) or (self.pools and isinstance(node, ir.MaxPool2d)):
            return True
        if isinstance(node, ir.PRODUCTS):
            others = [i for i in self.g.inputs_of(consumer) if i != src]
            return bool(others) and all(self.dom[o] != "real" for o in others)
        return False

    def target_neuron(self, name: str) -> Optional[str]:
        """The Neuron a synapse's output reaches through :meth:`passes_on` nodes only, else None."""
        seen = []
        frontier = [name]
        while frontier:
            n = frontier.pop()
            for c in self.g.consumers(n):
                node = self.g.node(c)
                if isinstance(node, ir.Neuron):
                    seen.append(c)
                elif self.passes_on(n, c):
                    frontier.append(c)
                else:
                    return None
        if len(set(seen)) == 1:
            return seen[0]
        return None

    def feeders(self, neuron: str) -> tuple[list[str], bool]:
        """Synapses delivering current to ``neuron`` (through Adds, layouts, sums and the real
        operand of products), and whether the path crossed a product or a sum; [] if its
        input isn't one."""
        out, frontier, crossed = [], [self.g.inputs_of(neuron)[0]], False
        while frontier:
            n = frontier.pop()
            node = self.g.node(n)
            if isinstance(node, GAINS) and self.target_neuron(n) == neuron:
                out.append(n)
            elif isinstance(node, THROUGH) or (self.pools and isinstance(node, ir.MaxPool2d)):
                crossed |= isinstance(node, (ir.ReduceSum, ir.MaxPool2d))
                frontier.extend(self.g.inputs_of(n))
            elif isinstance(node, ir.PRODUCTS):
                crossed = True
                frontier.extend(i for i in self.g.inputs_of(n) if self.dom[i] == "real")
            else:
                return [], crossed
        return out, crossed

    def value_range(self, name: str) -> float:
        if self.r is not None and name in self.r.value:
            return max(self.r.value[name], 1e-12)
        return max(self.amax.get(name, 1.0), 1e-12)

    # -- the walk ----------------------------------------------------------------------
    def run(self):
        g = self.g
        order = g.order()
        for name in order:
            node = g.node(name)
            if isinstance(node, ir.PRODUCTS) and all(self.dom[i] == "real" for i in g.inputs_of(name)):
                raise self.unrepresentable(node, (
                    "both operands are real-valued currents; a Loihi-style chip multiplies activations "
                    "only by selecting with spikes (AND, popcount, sums of the selected values), so a "
                    "product of two reals has no integer mapping"))
        self.joins = self.shortcut_groups()
        self.pending: dict[str, tuple[float, float]] = {}
        known = -1
        while known != len(self.sigma):     # until shortcut groups resolve (they set several at once)
            known = len(self.sigma)
            for name in order:
                self.visit(name, first_pass=True)
        for name in order:
            if isinstance(g.node(name), ir.Neuron):
                self.neuron(name)
        for name in order:
            self.visit(name, first_pass=False)
        return self.layers

    def visit(self, name: str, first_pass: bool):
        node = self.g.node(name)
        TABLE.lookup(node)(self, name, node, self.g.inputs_of(name), first_pass)

    def input_scales(self, name: str, ins: list[str]):
        """(sigma, amax) of each input, or None while one waits for a neuron's scale (second
        pass) or when ``name`` has its scale already."""
        g = self.g
        if any(i not in self.sigma for i in ins if not isinstance(g.node(i), ir.Neuron)):
            return None     # waits for a neuron's scale (second pass)
        for i in ins:
            if isinstance(g.node(i), ir.Neuron):
                self.sigma[i], self.amax[i] = 1.0, 1.0
        if name in self.sigma:
            return None
        return [self.sigma[i] for i in ins], [self.amax[i] for i in ins]

    # -- node kinds ---------------------------------------------------------------------
    def input(self, node: ir.Input):
        if self.r is not None and self.r.input_binary:
            node.fixed = fx.InputFixed(scale=1.0, num_message_bits=0)
            self.sigma[node.name], self.amax[node.name] = 1.0, 1.0
            return
        xmax = self.r.input_max if self.r is not None else self.s.default_input_max
        xmax = xmax or 1.0
        b = self.s.input_bits
        scale = (2 ** (b - 1) - 1) / xmax
        node.fixed = fx.InputFixed(scale=scale, num_message_bits=b)
        self.sigma[node.name], self.amax[node.name] = scale, xmax
        self.layers[node.name] = LayerQuant(node.name, node.kind, scale, note=f"{b}-bit graded input")

    def message_bits(self, src: str) -> int:
        """Bits of the messages a synapse reads from ``src``: 0 for spikes, else enough for its range."""
        node = self.g.node(src)
        while isinstance(node, (ir.MaxPool2d,) + ir.LAYOUTS):
            src = self.g.inputs_of(src)[0]
            node = self.g.node(src)
        if isinstance(node, ir.Neuron) or (isinstance(node, ir.Mul) and self.dom[src] == "spike"):
            return 0
        if isinstance(node, ir.Input):
            return node.fixed.num_message_bits
        return 24

    def shortcut_groups(self) -> dict[str, frozenset]:
        """Inner synapses whose messages meet in an Add (through max pools and layouts): a
        membrane shortcut that reaches its neuron through another gain (SDT's ``x + x_feat``
        before the LIF's 1/tau) -- they must share one scale. Name -> its group."""
        parent: dict[str, str] = {}

        def find(a):
            while parent.setdefault(a, a) != a:
                a = parent[a]
            return a

        def sources(n):
            node = self.g.node(n)
            if isinstance(node, (ir.MaxPool2d,) + ir.LAYOUTS):
                return sources(self.g.inputs_of(n)[0])
            if isinstance(node, ir.Add):
                return [x for i in self.g.inputs_of(n) for x in sources(i)]
            if isinstance(node, (ir.Linear, ir.Conv2d, ir.Scale)) and self.target_neuron(n) is None:
                return [n]
            return []

        for node in self.g:
            if isinstance(node, ir.Add):
                members = sources(node.name)
                for m in members[1:]:
                    parent[find(m)] = find(members[0])
        groups: dict[str, set] = {}
        for m in parent:
            groups.setdefault(find(m), set()).add(m)
        return {m: frozenset(grp) for grp in groups.values() if len(grp) > 1 for m in grp}

    def inner_synapse(self, node, sig_in: float):
        """A synapse whose output is a message, not a neuron's current. Into another synapse
        (Conv -> Conv, pooling -> Linear) its messages get ``input_bits`` like the Input's
        (the next synapse multiplies them by 8-bit weights into a current that must stay
        near 2**16 before the 6-bit shift; ``PRODUCT_EXTRA_BITS`` more into a product); into
        a potential readout it uses the whole
        range up to VALUE_LIMIT. Pooling keeps mantissa 1 (a sum of its messages)."""
        name = node.name
        if isinstance(node, (ir.SumPool2d, ir.AvgPool2d)):
            self.set_synapse(node, sig_in, 1.0 / _pool_weight(node), fixed_mantissa=1)
            return
        readout = any(isinstance(self.g.node(c), ir.Output) for c in self.g.consumers(name))
        # into a product (selects, no multiplier) or a shortcut stream (read through one-to-one
        # gains and more Adds): wider messages, so that the weights keep their bits
        wide = name in self.into_products or name in self.joins
        bits = self.s.input_bits + (PRODUCT_EXTRA_BITS if wide else 0)
        top = VALUE_LIMIT if readout else 2.0 ** (bits - 1) - 1
        if name in self.realigned:
            top = REALIGNED_LIMIT
        if name in self.realign and readers(self.g, name, through_add=True) <= self.realign:
            top = REALIGN_LIMIT
        if isinstance(node, ir.Scale) and all(isinstance(self.g.node(c), (ir.Linear, ir.Output))
                                              for c in self.g.consumers(name)):
            # a mean's 1/n before the head: no fan-in here, and the Linear's weight exponent
            # scales its wide messages back down
            top = max(top, SCALE_INTO_DENSE_LIMIT)
        gain = top / (sig_in * self.value_range(name))
        mw = _max_w(node)
        if isinstance(node, (ir.Conv2d, ir.Scale)) and name not in self.realign and mw > 0:
            gain = min(gain, self.M / mw)
        elif mw > 0:
            gain = min(gain, self.M * 2.0 ** fx.WEIGHT_EXP_MAX / mw)
        group = self.joins.get(name)
        if group is None:
            self.set_synapse(node, sig_in, gain)
            return
        self.pending[name] = (sig_in, sig_in * gain)
        if all(m in self.pending for m in group):    # the last of its group: one common scale
            sigma = min(self.pending[m][1] for m in group)
            for m in sorted(group):
                self.set_synapse(self.g.node(m), self.pending[m][0], sigma / self.pending[m][0])

    def last_synapse(self, node, sig_in: float, S: float):
        self.set_synapse(node, sig_in, S / (64.0 * sig_in))

    def set_synapse(self, node, sig_in: float, gain: float, fixed_mantissa: Optional[int] = None):
        name = node.name
        bits = self.message_bits(self.g.inputs_of(name)[0])
        lq = LayerQuant(name, node.kind, sig_in * gain)
        if isinstance(node, (ir.SumPool2d, ir.AvgPool2d)):
            m = fixed_mantissa if fixed_mantissa is not None else int(round(_pool_weight(node) * gain))
            if m < 1 or m > 255:
                raise self.unrepresentable(node, f"pooling mantissa {m} outside [1, 255]")
            gain = m / _pool_weight(node)
            lq.scale = sig_in * gain
            node.fixed = fx.SynapseFixed(weight=np.array(m), weight_exp=0, num_message_bits=bits,
                                         scale=lq.scale, in_scale=sig_in)
            self.sigma[name] = lq.scale
            self.layers[name] = lq
            return
        w = np.asarray(node.weight, dtype=np.float64)
        mw = _amax(w)
        e = 0
        if (isinstance(node, ir.Linear) or name in self.realign) and mw > 0:
            e = math.ceil(math.log2(mw * gain / self.M))
            if name in self.realign:     # a smaller gain: fewer mantissa bits (0 is refused below)
                e = max(e, fx.WEIGHT_EXP_MIN)
            if e < fx.WEIGHT_EXP_MIN:
                raise self.unrepresentable(node, (
                    f"its weights (max |w| = {mw:.3g}) are too small for the neuron scale: they need "
                    f"weight_exp {e}, below Loihi's minimum {fx.WEIGHT_EXP_MIN}"))
            e = min(e, fx.WEIGHT_EXP_MAX)
        mant, sat = quantize_mantissa(w * gain / 2.0 ** e, self.s.weight_bits)
        if mw > 0 and not np.any(mant):
            raise self.unrepresentable(node, f"all weights round to 0 at scale {gain:.3g}")
        lq.weight_exp, lq.saturated_weights, lq.n_weights = e, sat, int(w.size)
        if name in self.realign:
            lq.note = f"one-to-one Scale with a weight exponent: mantissa * 2**{e} (quantize.realign)"
        lq.max_mantissa = int(np.abs(mant).max()) if mant.size else 0
        lq.weight_sqnr_db = _sqnr(w, mant * 2.0 ** e / gain)
        bias = None
        if name in self.kept:       # it feeds a product: it realizes its own constant (ir.fixed)
            c = np.asarray(self.const[name], dtype=np.float64)
            bias = np.rint(c * lq.scale).astype(np.int64) if np.any(c) else None
            if bias is not None and _amax(bias) >= fx.STATE_MAX:
                raise self.unrepresentable(node, f"its bias {_amax(c):.3g} needs {_amax(bias):.0f} "
                                                 f"units, beyond the 24-bit accumulator")
            if bias is not None:
                lq.note = "keeps its bias as an integer (it feeds a product or a max pool)"
        node.fixed = fx.SynapseFixed(weight=mant, weight_exp=e, num_weight_bits=self.s.weight_bits,
                                     num_message_bits=bits, scale=lq.scale, in_scale=sig_in, bias=bias)
        self.sigma[name] = lq.scale
        self.layers[name] = lq

    def unrepresentable(self, node, why: str) -> SnnCompileError:
        return SnnCompileError(f"node '{node.name}' ({node.kind}) cannot be represented in Loihi fixed "
                               f"point: {why}")

    # -- neurons ---------------------------------------------------------------------------
    S: dict

    def neuron(self, name: str):
        node: ir.Neuron = self.g.node(name)
        th = np.asarray(node.threshold, dtype=np.float64)
        if np.any(th <= 0):
            raise SnnCompileError(f"node '{name}' (Neuron): threshold must be > 0 for Loihi "
                                  f"(v > vth << 6 with an unsigned vth), got {th.min():g}")
        feeders, crossed = self.feeders(name)
        src = self.g.inputs_of(name)[0]
        c = np.asarray(self.const[src], dtype=np.float64)
        du = np.asarray(node.du, dtype=np.float64)
        u_bound = self.r.u.get(name) if self.r is not None and name in self.r.u else None
        v_bound = self.r.v.get(name) if self.r is not None and name in self.r.v else None
        never = node.never_fires   # a leaky integrator: v is the readout, no threshold bounds it
        if u_bound is None and crossed:     # sums of selected values: the propagated bound
            u_bound, v_bound = self.bound[src], 0.0
        elif u_bound is None:
            u_bound = sum(_row_l1(self.g.node(f)) * self.amax.get(self.g.inputs_of(f)[0], 1.0)
                          for f in feeders) + _amax(c)
            v_bound = 0.0
            if never:
                u_bound, v_bound = _steady_bounds(node, u_bound, self.g.timesteps)
        big = max(0.0 if never else _amax(th), _amax(node.reset_value), _amax(node.v_init), _amax(node.u_init),
                  _amax(node.bias), u_bound, v_bound, 1e-12)
        S = VALUE_LIMIT / big
        for f in feeders:
            fnode = self.g.node(f)
            sig_in = self.sigma.get(self.g.inputs_of(f)[0], 1.0)
            exp = isinstance(fnode, ir.Linear) or f in self.realign
            room = self.M * (2.0 ** fx.WEIGHT_EXP_MAX if exp else 1.0)
            S = min(S, 64.0 * sig_in * room / max(_max_w(fnode), 1e-300))
        if feeders:
            # the (constant) bias must fit Loihi's 13-bit mantissa << 7 (BatchNorm shifts of a
            # first conv on graded input would saturate at the mantissa-limited scale)
            c_v = c / np.where(du > 0, du, 1.0) if _amax(c) > 0 and np.any(du != 1.0) else c
            b_max = _amax(np.asarray(node.bias, dtype=np.float64) + c_v)
            if b_max > 0:
                S = min(S, (fx.BIAS_MANT_MAX << fx.BIAS_EXP_MAX) / b_max)
        if not feeders:
            S = 64.0 * self.sigma.get(src, 1.0)
        elif never:
            pass
        elif th.size == 1 or np.all(th == th.flat[0]):
            t0 = float(th.flat[0])
            gains = [(self.g.node(f).weight, self.sigma.get(self.g.inputs_of(f)[0], 1.0))
                     for f in feeders if isinstance(self.g.node(f), (ir.Scale, ir.Conv2d)) and f not in self.realign]
            # exact threshold mantissa (and exact Scale mantissas where they are dyadic)
            S = 64.0 * exact_threshold_units(t0, S / 64.0, gains) / t0
        self.S[name] = S
        # never fires: the largest threshold, above every |v| the scale allows (2**22); only a
        # saturated v (2**23 - 1) could pass it, and a leaky integrator's spikes go nowhere
        vth = np.full(th.shape, fx.VTH_MAX, np.int64) if never else np.rint(th * S / 64.0).astype(np.int64)
        if np.any(vth < 1) or np.any(vth > fx.VTH_MAX):
            raise self.unrepresentable(node, f"threshold mantissa {vth.min()}..{vth.max()} outside "
                                             f"[1, {fx.VTH_MAX}] at scale {S:.4g}")
        note = ""
        if _amax(c) > 0 and np.any(du != 1.0):
            if np.any(du <= 0):
                raise self.unrepresentable(node, "a constant (bias) input current into a non-leaky "
                                                 "current (du = 0) grows without bound")
            c = c / du
            note = "synapse bias into a leaky current (du<1): steady state c/du used as v bias"
        bias_v = (np.asarray(node.bias, dtype=np.float64) + c) * S
        bias_mant, bias_exp, bsat = _bias(bias_v)
        ra, thb, vthb = np.broadcast_arrays(np.asarray(node.reset_amount, dtype=np.float64), th, vth)
        reset_amount = np.where(ra == thb, vthb << fx.VTH_SHIFT, np.rint(ra * S)).astype(np.int64)
        node.fixed = fx.NeuronFixed(
            du=np.clip(np.rint(du * 4096) - 1, fx.DU_MIN, fx.DU_MAX).astype(np.int64),
            dv=np.clip(np.rint(np.asarray(node.dv) * 4096), fx.DV_MIN, fx.DV_MAX).astype(np.int64),
            vth=vth, bias_mant=bias_mant, bias_exp=bias_exp, reset_mode=node.reset_mode,
            reset_value=np.rint(node.reset_value * S).astype(np.int64), reset_amount=reset_amount,
            compare=node.compare, u_init=np.rint(node.u_init * S).astype(np.int64),
            v_init=np.rint(node.v_init * S).astype(np.int64), scale=S)
        if np.any(np.asarray(node.dv) >= 1.0):
            note = (note + "; " if note else "") + "dv = 1 clipped to 4095/4096"
        if never:
            note = (note + "; " if note else "") + "leaky integrator (never fires): vth at its maximum"
        self.layers[name] = LayerQuant(name, node.kind, S, vth=int(vth.max()), bias_saturated=bsat,
                                       note=note)

    def output(self, node: ir.Output, sig: float):
        src = self.g.inputs_of(node.name)[0]
        if node.mode == "membrane":   # the integer v of the neuron: its state scale
            node.fixed = fx.ReadoutFixed(mode="membrane", bias=np.array(0), scale=self.S[src])
            return
        bias = np.rint(np.asarray(self.const[src], dtype=np.float64) * sig).astype(np.int64) \
            if node.mode == "potential" else np.array(0)
        if node.mode == "spikes":
            bias = np.array(0)
        node.fixed = fx.ReadoutFixed(mode=node.mode, bias=bias, scale=sig)


#: The quantizer's visit of each kind: ``fn(pass, name, node, ins, first_pass)`` assigns its scale.
TABLE = StageTable("quantize")


@TABLE.implements(ir.Input)
def _visit_input(p: _Pass, name, node, ins, first_pass):
    if first_pass:
        p.input(node)


@TABLE.implements(ir.Neuron)
def _visit_neuron(p: _Pass, name, node, ins, first_pass):
    p.sigma[name], p.amax[name] = 1.0, 1.0


@TABLE.implements(ir.Flatten, ir.MaxPool2d, ir.Reshape, ir.Permute, ir.Slice)
def _visit_passthrough(p: _Pass, name, node, ins, first_pass):
    scales = p.input_scales(name, ins)
    if scales is not None:
        (sig_in, amax_in) = scales
        p.sigma[name], p.amax[name] = sig_in[0], amax_in[0]


@TABLE.implements(ir.Add)
def _visit_add(p: _Pass, name, node, ins, first_pass):
    scales = p.input_scales(name, ins)
    if scales is None:
        return
    sig_in, amax_in = scales
    if max(sig_in) > min(sig_in) * (1 + 1e-9):
        raise SnnCompileError(
            f"node '{name}' (Add): its inputs have different fixed-point scales {sig_in} "
            f"(an Add must join spikes with spikes, or currents into one neuron)")
    p.sigma[name], p.amax[name] = sig_in[0], float(sum(amax_in))


@TABLE.implements(ir.Output)
def _visit_output(p: _Pass, name, node, ins, first_pass):
    if node.mode == "membrane" and ins[0] not in p.S:
        return   # waits for its neuron's state scale (second pass)
    scales = p.input_scales(name, ins)
    if scales is not None:
        p.output(node, scales[0][0])
        p.sigma[name] = scales[0][0]


@TABLE.implements(ir.ReduceSum)
def _visit_reduce_sum(p: _Pass, name, node, ins, first_pass):
    scales = p.input_scales(name, ins)
    if scales is None:
        return
    (sig,), (amax,) = scales
    n = p.g.shape(ins[0])[node.axis]
    p.sigma[name], p.amax[name] = sig, amax * n
    p.layers[name] = LayerQuant(name, node.kind, sig, note=product_note(p.dom[ins[0]], None, n, amax * n * sig))


@TABLE.implements(ir.MatMul, ir.Mul)
def _visit_product(p: _Pass, name, node, ins, first_pass):
    scales = p.input_scales(name, ins)
    if scales is None:
        return
    (sa, sb), (aa, ab) = scales
    da, db = p.dom[ins[0]], p.dom[ins[1]]
    k = p.g.shape(ins[0])[-1] if isinstance(node, ir.MatMul) else 1
    p.sigma[name], p.amax[name] = sa * sb, k * aa * ab
    p.layers[name] = LayerQuant(name, node.kind, sa * sb, note=product_note(da, db, k, k * aa * ab * sa * sb))


@TABLE.implements(*GAINS)
def _visit_synapse(p: _Pass, name, node, ins, first_pass):
    scales = p.input_scales(name, ins)
    if scales is None:
        return
    sig_in, amax_in = scales
    bound = _row_l1(node) * amax_in[0] + _amax(p.const[name])
    p.amax[name] = bound
    target = p.target_neuron(name)
    if target is None:
        p.inner_synapse(node, sig_in[0])
    elif target in p.S:
        p.last_synapse(node, sig_in[0], p.S[target])


def _steady_bounds(node: ir.Neuron, u_step: float, timesteps: int) -> tuple[float, float]:
    """Without calibration data, bounds of |u| and |v| of a leaky integrator whose input current
    is at most ``u_step`` per step: the steady states ``u/du`` and ``(u + bias)/dv`` (times the
    steps, up to the graph's ``timesteps``, where a decay is 0)."""
    steps = max(int(timesteps or 1), 1)
    du, dv = float(np.min(node.du)), float(np.min(node.dv))
    u = u_step / du if du > 0 else u_step * steps
    drive = u + _amax(node.bias)
    v = drive / dv if dv > 0 else drive * steps
    return u, v + _amax(node.v_init)


def _bias(bias_v: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """v-unit biases -> (mantissa, exponent, saturated count): the smallest exponent that fits."""
    b = np.asarray(bias_v, dtype=np.float64)
    mx = _amax(b)
    e = 0
    while e < fx.BIAS_EXP_MAX and mx / 2 ** e > fx.BIAS_MANT_MAX + 0.5:
        e += 1
    mant = np.rint(b / 2 ** e)
    sat = int(np.count_nonzero((mant < fx.BIAS_MANT_MIN) | (mant > fx.BIAS_MANT_MAX)))
    mant = np.clip(mant, fx.BIAS_MANT_MIN, fx.BIAS_MANT_MAX).astype(np.int64)
    return mant, np.array(e, dtype=np.int64), sat


def assign_fixed(graph, ranges: Optional[Ranges], settings: QuantSettings,
                 realign=frozenset()) -> dict[str, LayerQuant]:
    """Fill ``node.fixed`` on every node of ``graph`` (in place); returns per-layer decisions.

    Spikes added to a current first get an identity synapse (see
    :mod:`snncompile.passes.spike_synapses`), so that the Add has one scale for both; a
    count (product or sum of spikes) into a neuron gets an identity Scale, so that the
    neuron's scale is free (``products.identity_scales_for_counts``)."""
    from snncompile.passes.spike_synapses import identity_synapses_for_spikes

    identity_synapses_for_spikes(graph)
    identity_scales_for_counts(graph)
    p = _Pass(graph, ranges, settings, realign)
    p.S = {}
    return p.run()
