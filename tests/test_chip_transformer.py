"""The chip mapper on the spiking-transformer kinds (issue 15's last row): a small product / mask /
reduction graph mapped with exact counts on Loihi 1 and Loihi 2 (neurons per core, synapse memory by
the nengo-loihi rule, input and output axons), the same unit and synapse counts as the Lava mapping
(``targets/lava/size.py``), layouts as index maps (a token-wise Linear through a Permute cut across
cores), product-unit activity, and the zoo families mapped (or refused by name)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from snncompile.chip.cost import activity_from_run, estimate
from snncompile.chip.mapper import map_graph
from snncompile.chip.profile import load_profile
from snncompile.errors import SnnCompileError
from snncompile.ir import nodes as ir
from snncompile.ir.graph import Graph
from snncompile.targets import reference
from snncompile.targets.lava.size import node_size

from test_chip_mapper import check_map, nengo_bits_per_axon, zeros  # noqa: E402


def product_graph(weights=zeros) -> Graph:
    """a, b, c: LIFs of 12, 12, 4 on an input of 8; q = a as (3, 4), k^T = b as (3, 4) permuted;
    q @ k^T (spike x spike) -> * 0.5; mask = q * c (c as (1, 4), broadcast) -> sum over axis 0 ->
    Linear(4 -> 9); neuron out (9) = that current + the scaled product (reshaped)."""
    g = Graph("products", timesteps=4)
    g.add(ir.Input("input", shape=(8,)))
    for name, n in (("a", 12), ("b", 12), ("c", 4)):
        g.add(ir.Linear(f"f{name}", weight=weights(n, 8)), ["input"])
        g.add(ir.Neuron(name, shape=(n,)), [f"f{name}"])
    g.add(ir.Reshape("qa", shape=(3, 4)), ["a"])
    g.add(ir.Reshape("kb", shape=(3, 4)), ["b"])
    g.add(ir.Permute("kT", perm=(1, 0)), ["kb"])
    g.add(ir.MatMul("qk", lhs="spike", rhs="spike"), ["qa", "kT"])
    g.add(ir.Scale("sc", weight=np.float64(0.5)), ["qk"])
    g.add(ir.Reshape("cm", shape=(1, 4)), ["c"])
    g.add(ir.Mul("mask", lhs="spike", rhs="spike"), ["qa", "cm"])
    g.add(ir.ReduceSum("red", axis=0), ["mask"])
    g.add(ir.Linear("fr", weight=weights(9, 4)), ["red"])
    g.add(ir.Reshape("scf", shape=(9,)), ["sc"])
    g.add(ir.Add("sum"), ["fr", "scf"])
    g.add(ir.Neuron("out", shape=(9,)), ["sum"])
    g.add(ir.Output("output"), ["out"])
    return g


#: population -> (role, neurons, input axons, output axons); one core each on both chips
EXPECTED = {
    "a": ("neuron", 12, 8, 24),             # each a neuron reaches the product-unit core and the mask core
    "b": ("neuron", 12, 8, 12),
    "c": ("neuron", 4, 8, 4),
    "qk:products": ("products", 36, 24, 36),  # 12 lhs (a) + 12 rhs (b) elements; each unit -> its accumulator
    "qk": ("accumulator", 9, 36, 9),        # 4 units per accumulator, one axon each
    "sc": ("scale", 9, 9, 9),
    "mask": ("and", 12, 16, 12),            # 12 from a (one-to-one), 4 from c (each fans out to 3)
    "red": ("accumulator", 4, 12, 4),
    "out": ("neuron", 9, 13, 9),            # 4 from red (Dense 4 -> 9) + 9 from sc; 9 to the host
}


def loihi1_units():
    """Synapse memory per core by nengo-loihi's bits_per_axon (64-bit words): 8-bit weights, plus
    6 index bits where a source feeds several targets (Sparse of a fan-out: the mask's c, both
    operands of the product units; the smallest index width of the profile's map covers <= 64)."""
    w = lambda n, bits=8: nengo_bits_per_axon(n, bits) // 64  # noqa: E731
    return {"a": 8 * w(12), "b": 8 * w(12), "c": 8 * w(4),
            "qk:products": 12 * w(3, 14) + 12 * w(3, 14),
            "qk": 36 * w(1), "sc": 9 * w(1), "mask": 12 * w(1) + 4 * w(3, 14), "red": 12 * w(1),
            "out": 4 * w(9) + 9 * w(1)}


def loihi2_units():
    """SynMem: 4 weights of 8 bits per 32-bit unit, per axon, no index bits."""
    u = lambda n: -(-n // 4)  # noqa: E731
    return {"a": 8 * u(12), "b": 8 * u(12), "c": 8 * u(4), "qk:products": 24 * u(3), "qk": 36 * u(1),
            "sc": 9 * u(1), "mask": 12 * u(1) + 4 * u(3), "red": 12 * u(1), "out": 4 * u(9) + 9 * u(1)}


@pytest.mark.parametrize("chip,units", [("loihi1", loihi1_units), ("loihi2", loihi2_units)])
def test_product_mask_reduction_graph_exact_counts(chip, units):
    cmap = map_graph(product_graph(), chip)
    check_map(cmap)
    assert [la.name for la in cmap.layers] == list(EXPECTED)
    want = units()
    for name, (role, n, axons_in, axons_out) in EXPECTED.items():
        (core,) = cmap.layer_cores(name)
        assert (cmap.layer_map(name).role, core.neurons) == (role, n), name
        assert (core.usage["input_axons"], core.usage["output_axons"]) == (axons_in, axons_out), name
        assert core.usage["synapse_units"] == want[name], name
    if chip == "loihi1":
        assert any("'qk' (MatMul, accumulator population) sends graded values" in n for n in cmap.notes)
        assert any("'sc' (Scale, scale population)" in n for n in cmap.notes)
    else:
        assert cmap.notes == []


def test_units_and_synapses_equal_the_lava_mapping_count():
    """Per node, the chip's units and synapses are size.py's; the chip adds the one-to-one synapses
    where a population reads an accumulator or a scale (out reading sc: 9)."""
    g = product_graph()
    cmap = map_graph(g, "loihi1")
    pops = cmap.network.by_name()

    def synapses(pop):
        return sum(g_.geometry.synapses for g_ in pop.groups)
    for node, names in (("qk", ["qk:products", "qk"]), ("mask", ["mask"]), ("red", ["red"]), ("sc", ["sc"])):
        size = node_size(g, node)
        assert sum(pops[n].n for n in names) == size.units, node
        assert sum(synapses(pops[n]) for n in names) == size.synapses, node
    assert pops["qk:products"].n == node_size(g, "qk").product_units
    extra = [g_ for g_ in pops["out"].groups if g_.source == "sc"]
    assert len(extra) == 1 and extra[0].geometry.n_targets == 9


def test_a_tiny_core_cuts_the_product_units_and_keeps_every_limit(tmp_path):
    data = load_profile("loihi1").as_dict()
    data["name"] = "tiny"
    data["fields"]["neurons_per_core"]["value"] = 5
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(data))
    cmap = map_graph(product_graph(), str(path))
    check_map(cmap)
    cores = cmap.layer_cores("qk:products")
    assert [c.neurons for c in cores] == [5] * 7 + [1]
    # units (n, k, m) C order, 5 per core: core 0 holds (0,0,0)..(0,1,1): lhs a[0], a[1]; rhs
    # k^T[k, m] = b[4m + k]: b[0], b[4], b[8], b[1], b[5]
    assert cores[0].usage["input_axons"] == 2 + 5
    acc = cmap.layer_cores("qk")
    # each accumulator core reads the 4 units of each of its accumulators, from wherever they lie
    assert [c.usage["input_axons"] for c in acc] == [4 * c.neurons for c in acc]
    total_out = sum(c.usage["output_axons"] for c in cores)
    # a unit reaches one core: the one of its accumulator
    assert total_out == 36


def token_linear_graph():
    """Input (2 channels, 6 tokens) -> 1x1 conv (3 channels) -> (3, 6) -> Permute -> LIF (6 tokens, 3)."""
    g = Graph("tokens", timesteps=2)
    g.add(ir.Input("input", shape=(2, 6)))
    g.add(ir.Reshape("col", shape=(2, 6, 1)), ["input"])
    g.add(ir.Conv2d("lin", weight=zeros(3, 2, 1, 1)), ["col"])
    g.add(ir.Reshape("back", shape=(3, 6)), ["lin"])
    g.add(ir.Permute("tok", perm=(1, 0)), ["back"])
    g.add(ir.Neuron("lif", shape=(6, 3)), ["tok"])
    g.add(ir.Permute("chan", perm=(1, 0)), ["lif"])
    g.add(ir.Reshape("chan_col", shape=(3, 6, 1)), ["chan"])
    g.add(ir.Conv2d("lin2", weight=zeros(2, 3, 1, 1)), ["chan_col"])
    g.add(ir.Neuron("lif2", shape=(2, 6, 1)), ["lin2"])
    g.add(ir.Output("output"), ["lif2"])
    return g


@pytest.mark.parametrize("chip", ["loihi1", "loihi2"])
def test_a_current_through_a_permute_reaches_its_neurons_at_reindexed_targets(chip, tmp_path):
    """lif neuron i = (token t, channel c) = conv output (c, t): a core of lif neurons [a, b) reads the
    2 input channels of the tokens it holds, each axon storing one weight per neuron of its token."""
    data = load_profile(chip).as_dict()
    data["name"] = "tiny"
    data["fields"]["neurons_per_core"]["value"] = 4
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(data))
    cmap = map_graph(token_linear_graph(), str(path))
    check_map(cmap)
    p = cmap.profile
    for core in cmap.layer_cores("lif"):
        tokens = np.bincount(np.arange(core.start, core.stop) // 3, minlength=6)
        assert core.usage["input_axons"] == 2 * np.count_nonzero(tokens)
        if chip == "loihi1":       # per-axon conv weights with index bits (6 for <= 64 neurons)
            per = [nengo_bits_per_axon(int(n), 8 + 6) // 64 for n in tokens if n]
        else:
            per = [-(-int(n) // 4) for n in tokens if n]
        assert core.usage["synapse_units"] == 2 * sum(per)
    # lif2 (2, 6, 1) reads lif through the inverse Permute: neuron (c2, t) reads lif (t, 0..2)
    for core in cmap.layer_cores("lif2"):
        tokens = {i % 6 for i in range(core.start, core.stop)}
        assert core.usage["input_axons"] == 3 * len(tokens)
    # each lif neuron reaches every lif2 core holding its token
    lif2 = cmap.layer_cores("lif2")
    per_token = [sum(1 for c in lif2 if any(i % 6 == t for i in range(c.start, c.stop))) for t in range(6)]
    assert sum(c.usage["output_axons"] for c in cmap.layer_cores("lif")) == 3 * sum(per_token)
    assert p.name == "tiny"


def test_product_unit_events_match_the_recorded_accumulator_sums():
    """Spike x spike: the units into each accumulator fire exactly its recorded value (summed over the
    run); every synaptic op into the accumulators is a unit spike; the AND's spikes are recorded."""
    rng = np.random.default_rng(0)
    g = product_graph(lambda *s: rng.normal(1.0, 1.0, size=s))
    x = (rng.random((5, 4, 8)) < 0.6).astype(np.float64)
    result = reference.run(g, x, record=True)
    for chip in ("loihi1", "loihi2"):
        cmap = map_graph(g, chip)
        act = activity_from_run(cmap, result, x)
        rec = np.asarray(result.layer_counts["qk"]).reshape(len(x), -1).mean(axis=0)
        assert rec.sum() > 0
        units = act.events["qk:products"].reshape(3, 4, 3)
        np.testing.assert_allclose(units.sum(axis=1).reshape(-1), rec)
        cost = estimate(cmap, act)
        acc_core = next(c for c in cost.cores if c.layer == "qk")
        assert acc_core.synops_per_step * 4 == pytest.approx(rec.sum())
        and_rec = np.asarray(result.layer_counts["mask"]).reshape(len(x), -1).mean(axis=0)
        np.testing.assert_allclose(act.events["mask"], and_rec)
        assert any("product units are not recorded" in n for n in cost.notes)


# -- the zoo -----------------------------------------------------------------------------------------
MAPPED = ["sdt_v2", "spikformer_cifar", "spikformer_imagenet", "spikingformer"]
#: MaxPool of BatchNorm'd conv outputs (real values): no OR neuron computes that max
REFUSED = {"qkformer": "patch_embed2.proj4_maxpool", "sdt_v1": "patch_embed.maxpool3", "spikingresformer": "prologue.2"}


@pytest.mark.parametrize("name", MAPPED)
def test_zoo_transformers_map_on_both_chips(zoo_export, name):
    from snncompile.targets.lava.size import graph_size
    _, graph = zoo_export(name)
    for chip in ("loihi1", "loihi2"):
        cmap = map_graph(graph, chip)
        check_map(cmap)
        kinds = {graph.node(p.node).kind for p in cmap.network.populations}
        assert {"MatMul", "Scale"} <= kinds, kinds
        # the Lava mapping's units, plus what only a chip needs: relays of currents that feed synapses
        # and the compartments of a potential readout (size.py counts neither)
        extra = sum(p.n for p in cmap.network.populations
                    if p.role == "relay" or (p.role == "readout" and graph.node(p.node).kind == "Output"))
        assert sum(p.n for p in cmap.network.populations) == graph_size(graph).units + extra


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_zoo_transformers_with_a_maxpool_of_real_values_are_refused_by_name(zoo_export, name):
    _, graph = zoo_export(name)
    for chip in ("loihi1", "loihi2"):
        with pytest.raises(SnnCompileError, match=rf"^node '{REFUSED[name]}' \(MaxPool2d\): max-pools a current"):
            map_graph(graph, chip)
