"""The spiking-transformer zoo (tests/transformer_zoo.py) in PyTorch eager mode.

Every family builds deterministically, every neuron layer it runs fires 2-40 % on fresh
inputs, its per-step outputs are the official forward's output before the mean over T, and
SpikingJelly 2.0's ``SynOpCounter`` gives stable totals, recorded here as the reference for
the later exact-SynOp check. Spikingformer-8-512 is built (not run) for its parameter count.
"""
import copy
import sys

import numpy as np
import pytest
import torch

from stubs import timm_helpers

NAMES = ["qkformer", "sdt_v1", "sdt_v2", "spikformer_cifar", "spikformer_imagenet", "spikingformer", "spikingresformer"]

#: neurons the official forward builds but never calls (SDT: MS_SSA_Conv.attn_lif, MS_SPS.rpe_lif)
NEVER_CALLED = {"sdt_v1": {"block.0.attn.attn_lif", "block.1.attn.attn_lif", "patch_embed.rpe_lif"}}

#: SynOpCounter on build().double() with inputs(2, seed=0): (total, aten.bmm part). The bmm part
#: is the attention products: spike x spike in SSA, real x spike in DSSA; SDT's masks are
#: aten.mul, which SynOpCounter does not count.
SYNOPS_REFERENCE = {
    "spikformer_cifar": (2406855, 54551),
    "spikformer_imagenet": (4661044, 26156),
    "spikingformer": (4940822, 26894),
    "sdt_v1": (4485010, 0),
    "sdt_v2": (8683592, 52836),
    "qkformer": (6068807, 26407),
    "spikingresformer": (4248584, 239888),
}

#: state-dict keys as the official files name them (official checkpoints load by these)
OFFICIAL_KEYS = {
    "spikformer_cifar": ["patch_embed.rpe_bn.running_var", "block.1.attn.q_linear.bias", "block.0.mlp.fc2_bn.weight",
                         "block.0.norm1.weight", "head.weight"],
    "spikformer_imagenet": ["patch_embed.proj_conv3.weight", "block.0.attn.k_conv.weight", "block.1.mlp.fc1_conv.bias"],
    "spikingformer": ["patch_embed.proj4_bn.running_mean", "block.0.attn.proj_conv.bias", "block.1.mlp.mlp2_bn.bias",
                      "block.1.norm2.bias"],
    "sdt_v1": ["patch_embed.rpe_conv.weight", "block.0.attn.talking_heads.weight", "block.1.mlp.fc1_bn.weight"],
    "sdt_v2": ["downsample1_1.encode_conv.weight", "ConvBlock1_1.0.Conv.dwconv.weight", "ConvBlock2_2.0.bn2.bias",
               "block3.0.attn.q_conv.0.body.1.bn.running_mean", "block3.0.attn.proj_conv.1.weight",
               "block4.0.mlp.fc2_conv.weight", "head.weight"],
    "qkformer": ["patch_embed1.proj_res_conv.weight", "stage1.0.tssa.q_conv.weight", "patch_embed3.proj4_bn.bias",
                 "stage3.0.ssa.v_bn.running_var", "stage3.0.mlp.mlp2_conv.bias"],
    "spikingresformer": ["prologue.0.weight", "layers.0.0.firing_rate_x", "layers.0.0.W.weight",
                         "layers.1.2.conv.0.1.weight", "layers.1.0.norm.bn.running_mean", "classifier.weight"],
}


@pytest.fixture(scope="module")
def tzoo():
    """The zoo module, imported with the timm stand-ins installed, on one CPU thread (these
    models are tiny: on a loaded 2-core machine a second thread makes each op ~10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with timm_helpers.installed():
        import transformer_zoo
        yield transformer_zoo
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def built(tzoo):
    """One build per family, shared by the tests of this file."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = tzoo.MODELS[name].build()
        return cache[name]
    return get


def test_zoo_lists_the_five_families(tzoo):
    assert sorted(tzoo.MODELS) == NAMES
    assert {zm.official.split()[0] for zm in tzoo.MODELS.values()} == {
        "ZK-Zhou/spikformer", "zhouchenlin2096/Spikingformer", "BICLab/Spike-Driven-Transformer",
        "BICLab/Spike-Driven-Transformer-V2", "zhouchenlin2096/QKFormer", "xyshi2000/SpikingResformer"}


@pytest.mark.parametrize("name", NAMES)
def test_every_neuron_layer_fires_moderately(tzoo, built, name):
    zm, model = tzoo.MODELS[name], built(name)
    rates = tzoo.firing_rates(model, torch.from_numpy(zm.inputs(4, seed=0)))
    all_neurons = {n for n, _ in tzoo.neuron_layers(model)}
    assert all_neurons - set(rates) == NEVER_CALLED.get(name, set())
    assert len(rates) >= 12
    out_of_band = {n: round(r, 4) for n, r in rates.items() if not 0.02 <= r <= 0.40}
    assert not out_of_band, f"{name}: firing rates outside 2-40 %: {out_of_band}"


@pytest.mark.parametrize("name", NAMES)
def test_neuron_settings_are_the_official_ones(tzoo, built, name):
    """tau=2, decay_input, hard reset to 0, detach_reset; threshold 0.5 exactly on attention neurons."""
    attention = ("attn_lif", "talking_heads_lif")
    for n, m in tzoo.neuron_layers(built(name)):
        assert (m.tau, m.decay_input, m.v_reset, m.detach_reset, m.step_mode) == (2.0, True, 0.0, True, "m"), n
        assert m.v_threshold == (0.5 if n.endswith(attention) else 1.0), n


@pytest.mark.parametrize("name", NAMES)
def test_builds_and_outputs_are_deterministic(tzoo, built, name):
    zm, model = tzoo.MODELS[name], built(name)
    x = zm.inputs(3, seed=7)
    out = zm.torch_outputs(model, x)
    assert out.shape == (3, zm.timesteps, 10)
    assert np.array_equal(out, zm.torch_outputs(model, x)), "a second run of the same model differs"
    assert np.ptp(out, axis=0).max() > 1e-3, "outputs do not depend on the input"
    again = zm.build()
    first, second = model.state_dict(), again.state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first), "two seeded builds differ"
    assert np.array_equal(out, zm.torch_outputs(again, x))
    rates = tzoo.firing_rates(again, torch.from_numpy(x))
    assert 0.02 <= np.mean(list(rates.values())) <= 0.40


@pytest.mark.parametrize("name", NAMES)
def test_official_forward_is_the_mean_of_the_step_outputs(tzoo, built, name):
    """``torch_outputs`` gives the head per step; the official forward averages over T (or,
    for SpikingResformer, returns the steps themselves)."""
    zm, model = tzoo.MODELS[name], built(name)
    x = zm.inputs(2, seed=3)
    steps = zm.torch_outputs(model, x)
    tzoo.sj_functional.reset_net(model)
    with torch.no_grad():
        official = model(torch.from_numpy(x)).double().numpy()
    tzoo.sj_functional.reset_net(model)
    expected = steps.transpose(1, 0, 2) if name == "spikingresformer" else steps.mean(axis=1)
    np.testing.assert_allclose(official, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_official_state_dict_keys(tzoo, built, name):
    keys = built(name).state_dict().keys()
    missing = [k for k in OFFICIAL_KEYS[name] if k not in keys]
    assert not missing, f"{name}: official keys missing: {missing}"


@pytest.mark.parametrize("name", NAMES)
def test_a_state_dict_loads_strictly_into_a_fresh_model(tzoo, built, name):
    """What a checkpoint is: the registered constructor plus ``load_state_dict(strict=True)``
    gives the built model back, buffers included (SpikingResformer's firing rates)."""
    zm, model = tzoo.MODELS[name], built(name)
    fresh = tzoo.create_model(zm.model_name, **zm.kwargs).eval()
    fresh.load_state_dict(model.state_dict(), strict=True)
    x = zm.inputs(2, seed=11)
    assert np.array_equal(zm.torch_outputs(fresh, x), zm.torch_outputs(model, x))


@pytest.mark.parametrize("name", NAMES)
def test_synop_counter_totals_are_stable_reference_numbers(tzoo, built, name):
    from spikingjelly.activation_based.op_counter import DispatchCounterMode, SynOpCounter

    zm = tzoo.MODELS[name]
    model = copy.deepcopy(built(name)).double()
    x = torch.from_numpy(zm.inputs(2, seed=0)).double()
    counts = []
    for _ in range(2):
        counter = SynOpCounter()
        tzoo.sj_functional.reset_net(model)
        with torch.no_grad(), DispatchCounterMode([counter]):
            model(x)
        counts.append((counter.get_total(), counter.records["Global"].get(torch.ops.aten.bmm.default, 0)))
    tzoo.sj_functional.reset_net(model)
    assert counts[0] == counts[1], "SynOpCounter differs between two identical runs"
    assert counts[0][0] > 0
    assert counts[0] == SYNOPS_REFERENCE[name]


def test_spikingformer_8_512_has_the_official_parameter_count(tzoo):
    """29,705,768: the count in Spikingformer's imagenet/energy_consumption_logs (8-512 log)."""
    model = tzoo.spikingformer_8_512()
    assert sum(p.numel() for p in model.parameters()) == 29_705_768
    assert len(model.block) == 8 and model.block[0].attn.num_heads == 8
    # per-layer counts printed in the same log (which names the modules SPS / rpe_conv / fc1_conv)
    assert model.patch_embed.proj_conv.weight.numel() == 1728
    assert model.patch_embed.proj4_conv.weight.numel() == 2359296
    assert sum(p.numel() for p in model.block[0].attn.proj_conv.parameters()) == 262656
    assert sum(p.numel() for p in model.block[0].mlp.mlp1_conv.parameters()) == 1050624
    assert sum(p.numel() for p in model.head.parameters()) == 513000


def test_timm_stubs_behave_like_the_helpers_and_go_away():
    before = sys.modules.get("timm")
    with timm_helpers.installed():
        assert sys.modules["timm"] is not before
        from timm.models import create_model
        from timm.models.layers import DropPath, to_2tuple
        assert to_2tuple(4) == (4, 4) and to_2tuple([3, 5]) == (3, 5)
        drop = DropPath(0.5)
        x = torch.ones(64, 3)
        assert torch.equal(drop.eval()(x), x)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            kept = drop.train()(x)
        assert set(kept.unique().tolist()) <= {0.0, 2.0} and 0 < kept.count_nonzero() < x.numel()
        with pytest.raises(KeyError, match="unknown model 'nope'"):
            create_model("nope")
    assert sys.modules.get("timm") is before
