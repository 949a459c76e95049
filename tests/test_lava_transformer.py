"""Spiking transformers on Lava (issue 12): every zoo family as Lava processes.

Lava float == the reference == PyTorch eager (0 spike-count mismatches at every neuron, readouts
within 1e-9), and Lava fixed_pt == the emulator in fixed point (spikes and readout integers
identical), each on 10 samples in one Lava run; every layer fires (2-40 %).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from snncompile.frontend import MappingWarning, from_torch
from snncompile.ir import nodes as ir
from snncompile.quantize import quantize
from snncompile.targets import emulator, reference
from transformer_eager import PER_SAMPLE_EAGER, eager_run

pytestmark = [pytest.mark.lava, pytest.mark.slow]
NAMES = ["qkformer", "sdt_v1", "sdt_v2", "spikformer_cifar", "spikformer_imagenet", "spikingformer",
         "spikingresformer"]
N = 10


def _lava():
    from snncompile.targets import lava
    return lava


def _neurons(graph) -> list[str]:
    return [n.name for n in graph if isinstance(n, ir.Neuron)]


def _assert_same_spikes(graph, got, expected, what):
    for name in _neurons(graph):
        diff = int(np.sum(got.layer_counts[name] != expected.layer_counts[name]))
        assert diff == 0, f"{what}: {name}: {diff} neurons with different spike counts"


@pytest.mark.parametrize("name", NAMES)
def test_zoo_family_on_lava_float_and_fixed(tzoo, name):
    zm = tzoo.MODELS[name]
    model = zm.build().double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MappingWarning)
        graph = from_torch(model, zm.input_shape, zm.timesteps, name=name)
    x = zm.inputs(N, seed=5)
    neurons = _neurons(graph)
    # float: Lava == reference == PyTorch eager
    eager_out, eager_counts, _ = eager_run(tzoo, zm, model, x, name in PER_SAMPLE_EAGER)
    ref = reference.run(graph, x, record=True)
    lf = _lava().run(graph, x, precision="float", record=neurons)
    scale = np.abs(eager_out).max()
    assert np.abs(lf.outputs - ref.outputs).max() <= 1e-9 * scale
    assert np.abs(lf.outputs - eager_out).max() <= 1e-9 * scale
    assert np.ptp(lf.outputs, axis=0).max() > 1e-3, "outputs do not depend on the input"
    _assert_same_spikes(graph, lf, ref, "Lava float vs reference")
    for node in neurons:
        assert np.array_equal(lf.layer_counts[node], eager_counts[node]), f"Lava float vs eager: {node}"
        rate = lf.layer_counts[node].mean() / zm.timesteps
        assert 0.02 <= rate <= 0.40, f"{name}: {node} fires at {rate:.3f}"
    # fixed point: Lava fixed_pt == emulator, spike for spike, readout integer for integer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qg, _ = quantize(graph, calib=zm.inputs(8, seed=0))
    em = emulator.run(qg, x, precision="fixed", record=True)
    lx = _lava().run(qg, x, precision="fixed", record=_neurons(qg))
    assert lx.outputs.dtype.kind == "i" and np.array_equal(lx.outputs, em.outputs)
    assert np.ptp(lx.outputs, axis=0).max() > 0
    _assert_same_spikes(qg, lx, em, "Lava fixed vs emulator")
    for node in _neurons(qg):
        rate = lx.layer_counts[node].mean() / zm.timesteps
        assert 0.01 <= rate <= 0.5, f"{name} fixed: {node} fires at {rate:.3f}"


# -- hand-built attention blocks: quick, every mapping path ---------------------------------------

def _block(block):
    from transformer_blocks import BLOCKS, _images, spikes

    g = BLOCKS[block]()
    x = _images(g.input.shape, n=10) if block == "shortcut" else spikes(g.input.shape, n=10)
    return g, x


@pytest.mark.parametrize("block", ["sdt", "shortcut", "srf", "ssa"])
def test_attention_blocks_on_lava(block):
    """SSA (spike x spike and count x spike products), SDT (stock AND masks, Sparse of ones), SRf
    (a biased synapse's real values x spikes, Slices: in fixed point its own integer bias lands
    in the product), a membrane shortcut (realigned by Scales with weight exponents)."""
    g, x = _block(block)
    ref = reference.run(g, x, record=True)
    lf = _lava().run(g, x, precision="float", record=True)
    assert np.abs(lf.outputs - ref.outputs).max() <= 1e-9 * max(np.abs(ref.outputs).max(), 1e-12)
    _assert_same_spikes(g, lf, ref, "Lava float vs reference")
    qg, _ = quantize(g, calib=x[:8])
    em = emulator.run(qg, x, precision="fixed", record=True)
    lx = _lava().run(qg, x, precision="fixed", record=True)
    assert np.array_equal(lx.outputs, em.outputs)
    _assert_same_spikes(qg, lx, em, "Lava fixed vs emulator")
    for node in _neurons(qg):
        assert 0.01 <= lx.layer_counts[node].mean() / g.timesteps <= 0.6, node
    # every recorded node (synapses, products, sums, scales too), not only the neurons
    for name in set(lx.layer_counts) & set(em.layer_counts):
        assert np.array_equal(lx.layer_counts[name], em.layer_counts[name]), name


def test_a_failure_inside_a_product_process_leaves_no_lava_process(monkeypatch):
    """A Product ProcessModel that raises mid-run: one clear error, every worker stopped."""
    import multiprocessing

    from snncompile.errors import SnnCompileError
    from snncompile.targets.lava.procs import models

    original = models.PyProductFloat.run_spk

    def failing(self):
        if int(self.time_step) == 4:
            raise ValueError("injected product failure")
        return original(self)

    monkeypatch.setattr(models.PyProductFloat, "run_spk", failing)
    g, x = _block("ssa")
    with pytest.raises(SnnCompileError, match="Lava run of graph 'ssa' failed: .*injected product failure"):
        _lava().run(g, x[:2], precision="float")
    assert not [p for p in multiprocessing.active_children() if "SystemProcess" in p.name]


def test_a_mapping_over_the_budget_is_refused_before_building(monkeypatch):
    from snncompile.errors import SnnCompileError
    from snncompile.targets.lava import size

    g, x = _block("ssa")
    sizes = {n.name: n for n in size.graph_size(g).nodes}
    C, N, h = 16, 24, 2
    assert sizes["qk"].product_units == h * N * (C // h) * N          # (h, N, d) @ (h, d, N): N*N*d per head
    assert sizes["qk"].units == sizes["qk"].product_units + h * N * N
    assert sizes["q_lif"].units == C * N and sizes["q_heads"].units == 0
    with pytest.raises(SnnCompileError, match=r"graph 'ssa': its Lava mapping needs [\d,]+ units .* over the "
                                              r"budget of 1,000 \(largest: 'qk' \(MatMul\) 10,368, 'attn_v' "
                                              r"\(MatMul\) 9,600.*--lava-max-units"):
        _lava().run(g, x[:1], max_units=1000)
    monkeypatch.setenv("SNNCOMPILE_LAVA_MAX_SYNAPSES", "5000")
    with pytest.raises(SnnCompileError, match=r"[\d,]+ synapses, over the budget of 5,000"):
        _lava().run(g, x[:1])
    monkeypatch.setenv("SNNCOMPILE_LAVA_MAX_SYNAPSES", "many")
    with pytest.raises(SnnCompileError, match=r"SNNCOMPILE_LAVA_MAX_SYNAPSES='many' is not a number"):
        _lava().run(g, x[:1])


def test_cli_runs_verifies_and_inspects_a_transformer_on_lava(tmp_path, monkeypatch):
    """`run --backend lava` and `verify` unchanged on a transformer graph; `inspect --target lava`
    reports the mapping's size; `--lava-max-units` refuses, with no output file."""
    import json

    from click.testing import CliRunner

    from snncompile.cli import main
    from snncompile.ir.onnx_format import save_onnx

    monkeypatch.setenv("SNNCOMPILE_LAVA_MAX_UNITS", "")     # restored after the test (the flag sets it)
    g, x = _block("sdt")
    qg, _ = quantize(g, calib=x[:8])
    graph_file, data = str(tmp_path / "sdt.q.onnx"), str(tmp_path / "x.npz")
    save_onnx(qg, graph_file)
    np.savez(data, x=x[:4])
    cli = CliRunner()
    out = str(tmp_path / "out.npz")
    res = cli.invoke(main, ["run", graph_file, "-i", data, "--backend", "lava", "--precision", "fixed", "-o", out])
    assert res.exit_code == 0, res.output
    res_em = cli.invoke(main, ["run", graph_file, "-i", data, "--backend", "emulator", "--precision", "fixed",
                               "-o", str(tmp_path / "em.npz")])
    assert res_em.exit_code == 0, res_em.output
    with np.load(out) as a, np.load(str(tmp_path / "em.npz")) as b:
        assert np.array_equal(a["counts"], b["counts"]) and np.any(a["counts"])
    res = cli.invoke(main, ["verify", graph_file, "-i", data, "--no-lava-float"])
    assert res.exit_code == 0, res.output
    assert "verify: emulator == Lava fixed point, spike for spike" in res.output
    res = cli.invoke(main, ["inspect", graph_file, "--target", "lava", "--precision", "fixed", "--json"])
    assert res.exit_code == 0, res.output
    lava = json.loads(res.output)["lava"]
    assert lava["processes"]["LIF"] == 2 and lava["processes"]["Sparse"] >= 5    # 2 ANDs, fan-outs + a sum
    assert lava["units"] == sum(n["units"] for n in lava["nodes"]) > 0
    blocked = str(tmp_path / "blocked.npz")
    res = cli.invoke(main, ["run", graph_file, "-i", data, "--backend", "lava", "--lava-max-units", "100",
                            "-o", blocked])
    assert res.exit_code == 1 and "over the budget of 100" in res.output
    assert not (tmp_path / "blocked.npz").exists()


def test_energy_counts_on_lava_equal_the_emulators():
    """`energy --backend lava` needs every node's counts: Reshape/Permute are derived from their
    input's (no process), the rest recorded; all equal the emulator's in fixed point."""
    g, x = _block("ssa")
    qg, _ = quantize(g, calib=x[:8])
    lx = _lava().run(qg, x[:4], precision="fixed", record=True)
    em = emulator.run(qg, x[:4], precision="fixed", record=True)
    assert set(em.layer_counts) <= set(lx.layer_counts)
    for name in em.layer_counts:
        assert np.array_equal(lx.layer_counts[name], em.layer_counts[name]), name
        assert np.array_equal(lx.layer_steps[name], em.layer_steps[name]), name


def test_a_kept_synapse_bias_that_reaches_a_neuron_is_refused_by_name():
    """In fixed point a synapse keeps its own integer bias only where it feeds a product; Lava's
    Conv has none, so the mapping adds it in the MaxPool, Scale, ReduceSum or product it reaches.
    Anywhere else it would be lost: refused, naming both nodes."""
    from snncompile.errors import SnnCompileError
    from snncompile.ir import fixed as fx
    from snncompile.ir.graph import Graph
    from snncompile.targets.lava.plan import plan

    g = Graph("kept_bias", timesteps=2)
    g.add(ir.Input("in", shape=(2, 3, 3), fixed=fx.InputFixed(scale=1.0, num_message_bits=8)))
    g.add(ir.Conv2d("conv", weight=np.ones((2, 2, 1, 1)), fixed=fx.SynapseFixed(
        weight=np.ones((2, 2, 1, 1)), num_message_bits=8, bias=np.array([3, -4]))), ["in"])
    g.add(ir.Reshape("tokens", shape=(2, 9, 1)), ["conv"])
    g.add(ir.Neuron("lif", shape=(2, 9, 1), fixed=fx.NeuronFixed(vth=4)), ["tokens"])
    g.add(ir.Output("out", fixed=fx.ReadoutFixed(mode="spikes")), ["lif"])
    g.validate()
    assert plan(g, "float").const["tokens"] is None            # float: no bias on the float node
    with pytest.raises(SnnCompileError, match=r"node 'lif' \(Neuron\): it receives the integer bias of "
                                              r"synapse 'conv'.*only in a MaxPool, Scale, ReduceSum or product"):
        plan(g, "fixed")


def test_a_flat_product_output_feeding_a_conv_is_reshaped_not_routed():
    """A MatMul's (1, N, 1) result sits on a flat port in the order of the (1, N, 1) image's WHC
    port: the Conv after it gets the same ports reshaped (no Route), and computes the same."""
    from snncompile.ir.graph import Graph
    from snncompile.passes import mark_operands

    rng = np.random.default_rng(3)
    N, k = 6, 4
    g = Graph("flat_to_conv", timesteps=3)
    g.add(ir.Input("in", shape=(2, N, k)))
    g.add(ir.Neuron("lif", shape=(2, N, k), du=1.0, dv=0.5, threshold=0.4), ["in"])
    g.add(ir.Slice("a", axis=0, start=0, stop=1), ["lif"])                    # (1, N, k)
    g.add(ir.Slice("b", axis=0, start=1, stop=2), ["lif"])
    g.add(ir.Slice("b_col", axis=1, start=0, stop=1), ["b"])                  # (1, 1, k)
    g.add(ir.Permute("b_t", perm=(0, 2, 1)), ["b_col"])                       # (1, k, 1)
    g.add(ir.MatMul("mm"), ["a", "b_t"])                                      # (1, N, 1)
    g.add(ir.Conv2d("conv", weight=rng.normal(0.5, 0.2, (3, 1, 1, 1)), bias=np.full(3, 0.1)), ["mm"])
    g.add(ir.Output("out", mode="potential"), ["conv"])
    g = mark_operands(g.validate())
    x = rng.random((4, 3, 2, N, k))
    ref = reference.run(g, x)
    lf = _lava().run(g, x, precision="float")
    from snncompile.targets.lava import runner
    assert np.abs(lf.outputs - ref.outputs).max() <= 1e-12 and np.ptp(ref.outputs) > 0
    assert runner.last_timings.processes == 5    # input, neuron, product, conv, output collector: no route
