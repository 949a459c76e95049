"""``snncompile export CKPT --model MODULE:CALLABLE``: checkpoints as researchers share them.

Every layout (a bare state dict; one under ``state_dict``, ``model``, ``net``,
``model_state_dict`` or ``--key``; DataParallel and DDP ``module.`` prefixes, ``torch.compile``'s
``_orig_mod.``; training-script metadata beside the weights) is exported through the CLI and
the graph's reference run is held equal to PyTorch eager on the saved model (float64, 0 spike
mismatches, firing checked).
Each bad input gives one ``error:`` line and no output file.
"""
import argparse
import importlib.util
import io
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import zoo
from snncompile.cli import main
from snncompile.frontend.checkpoint import ModelSpec, build_model, model_from_checkpoint
from snncompile.ir.onnx_format import load_onnx
from snncompile.targets import run
from test_export_cli import _assert_fails

NETS = Path(__file__).parent / "fixtures" / "checkpoint_nets.py"
SHAPE, T = (2, 8, 8), 6


def _nets():
    spec = importlib.util.spec_from_file_location("checkpoint_nets_in_tests", NETS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


nets = _nets()

#: name -> (ZooModel building the "trained" model, --model CALLABLE, --model-kwargs)
CASES = {
    "sj_class": (zoo.ZooModel("sj_class", lambda T: nets.SJConvNet(channels=6), SHAPE, T, "step", "spikes", 4.0),
                 "SJConvNet", '{"channels": 6}'),
    "sj_factory": (zoo.ZooModel("sj_factory", lambda T: nets.sj_conv_net(6, 5), SHAPE, T, "step", "spikes", 4.0),
                   "sj_conv_net", '{"channels": 6, "num_classes": 5}'),
    "snntorch_default_surrogate": (zoo.ZooModel("stk", lambda T: nets.SnnTorchNet(T=T), SHAPE, T, "loop",
                                                "spikes", 3.0), "SnnTorchNet", '{"T": 6}'),
    "norse_lif_parameters": (zoo.ZooModel("norse", lambda T: nets.NorseNet(T=T, v_th=0.5), SHAPE, T, "loop",
                                          "spikes", 6.0), "NorseNet", '{"T": 6, "v_th": 0.5}'),
}


def _export(*args):
    return CliRunner().invoke(main, ["export", *map(str, args)])


def _export_ckpt(ckpt, callable_name, kwargs=None, *extra):
    args = [ckpt, "--model", f"{NETS}:{callable_name}", "--input-shape", "2,8,8", "-T", T, *extra]
    if kwargs is not None:
        args += ["--model-kwargs", kwargs]
    return _export(*args)


def _assert_exports_like_pytorch(result, out: Path, zm, model: nn.Module) -> None:
    assert result.exit_code == 0, result.output
    graph = load_onnx(out)
    x = zm.inputs(8, seed=1)
    expected = zm.torch_outputs(model.double(), x)
    got = run(graph, x, record=True)
    assert got.outputs.shape == expected.shape
    assert np.array_equal(got.outputs, expected), f"{np.sum(got.outputs != expected)} spike mismatches"
    assert 0.02 < expected.mean() < 0.6, f"output fires at {expected.mean()}"
    for node in graph:
        if node.kind == "Neuron":
            rate = got.layer_counts[node.name].mean() / T
            assert 0.02 < rate < 0.6, f"{node.name} fires at rate {rate}"


def _ddp_state_dict(model: nn.Module, tmp_path: Path) -> dict:
    """A real DistributedDataParallel wrapper (one gloo process) and its state dict."""
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        return nn.parallel.DistributedDataParallel(model).state_dict()
    finally:
        dist.destroy_process_group()


def _layout(name: str, model: nn.Module, tmp_path: Path):
    """(checkpoint object, extra CLI args) for one way researchers save weights."""
    sd = model.state_dict()
    if name == "bare":
        return sd, []
    if name == "state_dict":  # timm / SpikingJelly train scripts: metadata beside the weights
        return {"epoch": 299, "arch": "net", "state_dict": sd, "args": argparse.Namespace(lr=0.1, T=T),
                "max_test_acc": np.float64(0.93)}, []
    if name == "model":
        return {"model": sd, "epoch": 3}, []
    if name == "net":
        return {"net": sd, "acc": 91.2}, []
    if name == "model_state_dict":
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        model.train()
        sum(p.sum() for p in model.parameters()).backward()
        opt.step()
        model.eval()
        return {"model_state_dict": model.state_dict(), "optimizer_state_dict": opt.state_dict()}, []
    if name == "key":  # --key picks the EMA weights, not the (different) raw ones
        noisy = {k: v + 1.0 if v.is_floating_point() else v for k, v in sd.items()}
        return {"state_dict": noisy, "state_dict_ema": sd}, ["--key", "state_dict_ema"]
    if name == "dataparallel":
        return {"state_dict": nn.DataParallel(model).state_dict()}, []
    if name == "ddp":
        return {"model": _ddp_state_dict(model, tmp_path)}, []
    if name == "torch_compile":  # what torch.compile(model).state_dict() writes (importing dynamo takes 14 s)
        return {"state_dict": {f"_orig_mod.{k}": v for k, v in sd.items()}}, []
    raise AssertionError(name)


LAYOUTS = ["bare", "state_dict", "model", "net", "model_state_dict", "key", "dataparallel", "ddp", "torch_compile"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_checkpoint_layout_exports_like_pytorch(layout, tmp_path):
    zm, name, kwargs = CASES["sj_class"]
    model = zm.build()
    obj, extra = _layout(layout, model, tmp_path)
    torch.save(obj, tmp_path / "ckpt.pth")
    result = _export_ckpt(tmp_path / "ckpt.pth", name, kwargs, *extra)
    _assert_exports_like_pytorch(result, tmp_path / "ckpt.onnx", zm, model)


@pytest.mark.parametrize("case", ["sj_factory", "snntorch_default_surrogate", "norse_lif_parameters"])
def test_model_code_kinds_export_like_pytorch(case, tmp_path):
    zm, name, kwargs = CASES[case]
    model = zm.build()
    torch.save({"state_dict": model.state_dict()}, tmp_path / "w.pt")
    result = _export_ckpt(tmp_path / "w.pt", name, kwargs, "-o", tmp_path / "g.onnx")
    _assert_exports_like_pytorch(result, tmp_path / "g.onnx", zm, model)


@pytest.mark.parametrize("case", ["snntorch_default_surrogate", "norse_lif_parameters"])
def test_these_models_cannot_be_saved_whole(case):
    """Why --model is the only way for them (the README says so)."""
    with pytest.raises(Exception, match="pickle"):
        torch.save(CASES[case][0].build(), io.BytesIO())


def test_dotted_module_name_is_imported_from_the_working_folder(tmp_path, monkeypatch):
    zm, _, _ = CASES["sj_class"]
    model = zm.build()
    torch.save(model.state_dict(), tmp_path / "ckpt.pt")
    (tmp_path / "mynets_ckpt_test.py").write_text(NETS.read_text())
    monkeypatch.chdir(tmp_path)
    result = _export("ckpt.pt", "--model", "mynets_ckpt_test:SJConvNet", "--model-kwargs", '{"channels": 6}',
                     "--input-shape", "2,8,8", "-T", T)
    _assert_exports_like_pytorch(result, tmp_path / "ckpt.onnx", zm, model)


# -- bad input: one error line, no output ------------------------------------------------
@pytest.fixture
def ckpt(tmp_path):
    zm, _, _ = CASES["sj_class"]
    torch.save({"state_dict": zm.build().state_dict()}, tmp_path / "ckpt.pth")
    return tmp_path / "ckpt.pth"


def test_whole_pickled_model_is_refused_by_name(tmp_path):
    torch.save(nn.Sequential(nn.Linear(3, 3)), tmp_path / "whole.pt")
    _assert_fails(_export_ckpt(tmp_path / "whole.pt", "SJConvNet"),
                  r"checkpoint '.*whole.pt' is a whole pickled model \(torch\.nn\.modules\.\S+\), not a "
                  r"state dict: export it without --model", tmp_path)


class TrainConfig:
    lr = 0.1


def test_checkpoint_with_other_python_objects_is_refused(tmp_path, ckpt):
    sd = torch.load(ckpt, weights_only=True)["state_dict"]
    torch.save({"state_dict": sd, "config": TrainConfig()}, tmp_path / "odd.pth")
    _assert_fails(_export_ckpt(tmp_path / "odd.pth", "SJConvNet", '{"channels": 6}'),
                  r"'.*odd.pth' holds Python objects that are not tensors \(test_checkpoints.TrainConfig\); "
                  r"reading it would run code", tmp_path)


def test_bad_json(ckpt):
    _assert_fails(_export_ckpt(ckpt, "SJConvNet", '{"channels": 6'),
                  r"--model-kwargs is not valid JSON \(Expecting .* at character \d+\)", ckpt.parent)
    _assert_fails(_export_ckpt(ckpt, "SJConvNet", "[6]"),
                  r"--model-kwargs must be a JSON object of keyword arguments, .*got list", ckpt.parent)


def test_callable_that_raises(ckpt):
    _assert_fails(_export_ckpt(ckpt, "needs_a_gpu"),
                  r"--model: calling needs_a_gpu\(\*\*\{\}\) raised RuntimeError: CUDA is not available",
                  ckpt.parent)
    _assert_fails(_export_ckpt(ckpt, "SJConvNet", '{"chanels": 6}'),
                  r"calling SJConvNet\(\*\*\{'chanels': 6\}\) raised TypeError: .*unexpected keyword argument "
                  r"'chanels'", ckpt.parent)


def test_bad_model_spec(ckpt, tmp_path):
    _assert_fails(_export_ckpt(ckpt, "NoSuchNet"),
                  r"'.*checkpoint_nets.py' has no 'NoSuchNet' \(it defines: .*SJConvNet.*\)", tmp_path)
    _assert_fails(_export_ckpt(ckpt, "NOT_CALLABLE"), r"'.*:NOT_CALLABLE' is a int, not a class or function",
                  tmp_path)
    _assert_fails(_export(ckpt, "--model", "checkpoint_nets_nowhere:Net", "--input-shape", "2,8,8", "-T", T),
                  r"module 'checkpoint_nets_nowhere' cannot be imported", tmp_path)
    _assert_fails(_export(ckpt, "--model", "SJConvNet", "--input-shape", "2,8,8", "-T", T),
                  r"--model 'SJConvNet' must be MODULE:CALLABLE", tmp_path)
    _assert_fails(_export(ckpt, "--key", "model", "--input-shape", "2,8,8", "-T", T),
                  r"--key needs --model MODULE:CALLABLE", tmp_path)


def test_model_files_that_cannot_be_imported(ckpt, tmp_path):
    (tmp_path / "train.py").write_text("import argparse\nargs = argparse.ArgumentParser().parse_args(['--x'])\n")
    _assert_fails(_export(ckpt, "--model", f"{tmp_path / 'train.py'}:Net", "--input-shape", "2,8,8", "-T", T),
                  r"importing '.*train.py' exited \(SystemExit 2\); point --model at the module that defines "
                  r"the model", tmp_path)
    (tmp_path / "json.py").write_text("class Net: pass\n")
    _assert_fails(_export(ckpt, "--model", f"{tmp_path / 'json.py'}:Net", "--input-shape", "2,8,8", "-T", T),
                  r"file '.*json.py' has the name of the already imported module 'json'; rename the file", tmp_path)
    (tmp_path / "broken.py").write_text("def net(:\n")
    _assert_fails(_export(ckpt, "--model", f"{tmp_path / 'broken.py'}:net", "--input-shape", "2,8,8", "-T", T),
                  r"importing '.*broken.py' failed: SyntaxError: ", tmp_path)


def test_wrong_key(ckpt):
    _assert_fails(_export_ckpt(ckpt, "SJConvNet", '{"channels": 6}', "--key", "ema"),
                  r"checkpoint '.*ckpt.pth' has no key 'ema' \(top-level keys: state_dict\)", ckpt.parent)


def test_no_state_dict_found(tmp_path):
    torch.save({"epoch": 3, "weights": [torch.ones(2)]}, tmp_path / "c.pth")
    _assert_fails(_export_ckpt(tmp_path / "c.pth", "SJConvNet"),
                  r"holds no state dict at its top level or under 'state_dict', 'model', 'net', "
                  r"'model_state_dict' \(top-level keys: epoch, weights\); name the key with --key", tmp_path)


def test_shape_mismatch_names_the_parameter(ckpt):
    _assert_fails(_export_ckpt(ckpt, "SJConvNet", '{"channels": 4}'),
                  r"parameter 'features.0.weight' has shape \(6, 2, 3, 3\), the model's has \(4, 2, 3, 3\)",
                  ckpt.parent)


def test_missing_and_unexpected_keys_are_listed(tmp_path, ckpt):
    sd = torch.load(ckpt, weights_only=True)["state_dict"]
    sd["classifier.1.scale"] = sd.pop("classifier.1.bias")
    torch.save(sd, tmp_path / "renamed.pth")
    _assert_fails(_export_ckpt(tmp_path / "renamed.pth", "SJConvNet", '{"channels": 6}'),
                  r"does not fit the model \(missing from the checkpoint: classifier.1.bias; not in the model: "
                  r"classifier.1.scale\)", tmp_path)


# -- torchvision: never needed by the product; SpikingJelly's zoo only wants one helper -------
_WITHOUT_TORCHVISION = """
import importlib, pkgutil, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torchvision":
            raise ImportError("torchvision is blocked in this test")
sys.meta_path.insert(0, Block())
import snncompile
for info in pkgutil.walk_packages(snncompile.__path__, "snncompile."):
    importlib.import_module(info.name)
from snncompile.cli import main
from snncompile.frontend.checkpoint import ModelSpec, build_model, model_from_checkpoint
for args in sys.argv[1:]:
    main(args.split("|"), standalone_mode=False)
print("torchvision imported:", "torchvision" in sys.modules)
"""


def test_product_never_imports_torchvision(tmp_path, ckpt):
    """Every snncompile module, and exports of SpikingJelly 2.0 and legacy models, with torchvision blocked."""
    legacy = Path(__file__).parent / "fixtures" / "legacy_clock_driven_net.py"
    torch.save(build_model(ModelSpec.parse(f"{legacy}:LegacyConvSNN"), {}).state_dict(), tmp_path / "legacy.pth")
    exports = [f"export|{ckpt}|--model|{NETS}:SJConvNet|--model-kwargs|{{\"channels\": 6}}|--input-shape|2,8,8|-T|4",
               f"export|{tmp_path / 'legacy.pth'}|--model|{legacy}:LegacyConvSNN|--input-shape|2,8,8|-T|4"]
    out = subprocess.run([sys.executable, "-c", _WITHOUT_TORCHVISION, *exports], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("wrote ") == 2 and "torchvision imported: False" in out.stdout, out.stdout


ZOO_MODULE = "spikingjelly.activation_based.model.spiking_resnet"


@pytest.fixture
def zoo_module_unloaded():
    """The SpikingJelly zoo module is imported fresh by each test (with or without the stub),
    and the module other tests imported is put back afterwards (their classes must stay the
    ones pickle finds under that name)."""
    package, _, attr = ZOO_MODULE.rpartition(".")
    saved = sys.modules.pop(ZOO_MODULE, None)
    yield
    sys.modules.pop(ZOO_MODULE, None)
    if saved is not None:
        sys.modules[ZOO_MODULE] = saved
        setattr(sys.modules[package], attr, saved)


def test_spikingjelly_zoo_without_torchvision_says_why(zoo_module_unloaded, ckpt, monkeypatch):
    # not installed (other test modules may have left a stub of it in sys.modules)
    for name in {"torchvision", *(k for k in sys.modules if k.startswith("torchvision."))}:
        monkeypatch.setitem(sys.modules, name, None)
    _assert_fails(_export(ckpt, "--model", f"{ZOO_MODULE}:spiking_resnet18", "--input-shape", "3,32,32", "-T", 2),
                  r"importing 'spikingjelly.activation_based.model.spiking_resnet' failed: .*torchvision.*; "
                  r"SpikingJelly's model zoo imports torchvision only for load_state_dict_from_url", ckpt.parent)


def test_spikingjelly_zoo_builds_with_a_stubbed_helper(zoo_module_unloaded, tmp_path, monkeypatch):
    """Tests may provide the one torchvision helper the zoo imports (it is only used for pretrained=True)."""
    def load_state_dict_from_url(*args, **kwargs):
        raise AssertionError("no downloads in tests")

    for name in ("torchvision", "torchvision.models", "torchvision.models.utils"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules["torchvision.models.utils"].load_state_dict_from_url = load_state_dict_from_url
    from spikingjelly.activation_based import neuron
    kwargs = {"num_classes": 10, "spiking_neuron": neuron.IFNode}  # a class: Python, not --model-kwargs JSON
    reference = build_model(ModelSpec.parse(f"{ZOO_MODULE}:spiking_resnet18"), kwargs)
    torch.save({"model": nn.DataParallel(reference).state_dict()}, tmp_path / "r18.pth")
    model = model_from_checkpoint(tmp_path / "r18.pth", f"{ZOO_MODULE}:spiking_resnet18", kwargs)
    assert type(model).__name__ == "SpikingResNet" and not model.training
    for (name, got), want in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(got, want), name
