"""Safe loading of torch.save(model) files: allow-listed classes load, others need --trust-code."""
import pickle
import sys

import pytest
import torch
from torch import nn

import zoo
from snncompile.errors import SnnCompileError
from snncompile.frontend import load_model


def test_library_model_loads_without_trust(tmp_path):
    zm = zoo.MODELS["sj_conv_maxpool"]
    torch.save(zm.build(), tmp_path / "m.pt")
    model = load_model(tmp_path / "m.pt")
    assert not model.training
    x = zm.inputs(3)
    assert (zm.torch_outputs(model, x) == zm.torch_outputs(zm.build(), x)).all()


def test_snntorch_model_with_surrogate_attribute_loads(tmp_path):
    import snntorch as snn
    model = nn.Sequential(nn.Linear(4, 3), snn.Leaky(beta=0.9, init_hidden=True,
                                                     spike_grad=snn.surrogate.ATan.apply))
    torch.save(model, tmp_path / "m.pt")
    assert isinstance(load_model(tmp_path / "m.pt")[1], snn.Leaky)


def test_own_class_needs_trust_code_and_says_how(tmp_path):
    torch.save(zoo.SEWNet().eval(), tmp_path / "sew.pt")
    with pytest.raises(SnnCompileError, match=r"'zoo.SEWNet'.*not on the allow-list.*--trust-code"):
        load_model(tmp_path / "sew.pt")
    assert isinstance(load_model(tmp_path / "sew.pt", trust_code=True), zoo.SEWNet)


def test_trust_code_with_missing_module_says_which(tmp_path):
    torch.save(zoo.SEWNet().eval(), tmp_path / "sew.pt")
    saved = sys.modules.pop("zoo")
    path = list(sys.path)
    try:
        sys.path[:] = [p for p in sys.path if not p.endswith("tests")]
        with pytest.raises(SnnCompileError, match=r"needs module 'zoo'.*PYTHONPATH"):
            load_model(tmp_path / "sew.pt", trust_code=True)
    finally:
        sys.path[:] = path
        sys.modules["zoo"] = saved


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned > evil_ran.txt",))


def test_pickle_with_disallowed_callable_is_refused_and_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"model": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(SnnCompileError, match=r"not on the allow-list"):
        load_model(tmp_path / "evil.pt")
    assert not (tmp_path / "evil_ran.txt").exists()


def test_torch_hub_function_is_not_allowed(tmp_path):
    class Hub:
        def __reduce__(self):
            return (torch.hub.load, ("x/y", "z"))
    torch.save(Hub(), tmp_path / "hub.pt")
    with pytest.raises(SnnCompileError, match=r"torch.hub.*not on the allow-list"):
        load_model(tmp_path / "hub.pt")


def test_missing_empty_and_non_torch_files(tmp_path):
    with pytest.raises(SnnCompileError, match=r"'.*nope.pt' does not exist"):
        load_model(tmp_path / "nope.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(SnnCompileError, match=r"is empty"):
        load_model(tmp_path / "empty.pt")
    (tmp_path / "text.pt").write_text("hello, not a model")
    with pytest.raises(SnnCompileError, match=r"is not a PyTorch file"):
        load_model(tmp_path / "text.pt")
    with open(tmp_path / "old.pt", "wb") as f:
        pickle.dump({"a": 1}, f)
    with pytest.raises(SnnCompileError, match=r"is not a PyTorch file"):
        load_model(tmp_path / "old.pt")


def test_state_dict_is_explained(tmp_path):
    torch.save(nn.Linear(2, 2).state_dict(), tmp_path / "sd.pt")
    with pytest.raises(SnnCompileError, match=r"holds a state_dict.*torch.save\(model, path\)"):
        load_model(tmp_path / "sd.pt")


def test_truncated_file_is_reported(tmp_path):
    torch.save(zoo.MODELS["sj_mlp"].build(), tmp_path / "m.pt")
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(SnnCompileError, match=r"cut.pt"):
        load_model(tmp_path / "cut.pt")


def test_model_saved_from_a_script_says_how_to_fix(tmp_path):
    import subprocess
    script = tmp_path / "train.py"
    script.write_text("import torch\nfrom torch import nn\n"
                      "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                      "        self.fc = nn.Linear(2, 2)\n    def forward(self, x):\n        return self.fc(x)\n"
                      f"torch.save(Net(), {str(tmp_path / 'net.pt')!r})\n")
    subprocess.run([sys.executable, str(script)], check=True, capture_output=True)
    with pytest.raises(SnnCompileError, match=r"saved from a script: its class 'Net' lives in __main__"):
        load_model(tmp_path / "net.pt")



def test_a_module_named_by_the_file_is_not_imported_before_it_is_allowed(tmp_path, monkeypatch):
    """Importing a module can run code: the allow-list is checked on the name first."""
    import sys
    import zipfile

    import torch

    from snncompile.errors import SnnCompileError
    from snncompile.frontend import load_model

    # An importable module the checkpoint names; importing it would put it in sys.modules.
    (tmp_path / "snnc_side_effect.py").write_text("class Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("snnc_side_effect", None)
    path = tmp_path / "m.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    with zipfile.ZipFile(path) as z:
        data = {n: z.read(n) for n in z.namelist()}
    pkl = next(n for n in data if n.endswith("data.pkl"))
    data[pkl] = b"\x80\x02csnnc_side_effect\nThing\n)\x81."  # protocol 2: Thing() via NEWOBJ
    with zipfile.ZipFile(path, "w") as z:
        for name, blob in data.items():
            z.writestr(name, blob)
    with pytest.raises(SnnCompileError, match=r"'snnc_side_effect.Thing', not on the allow-list"):
        load_model(path)
    assert "snnc_side_effect" not in sys.modules
