"""``snncompile demo`` and the model it ships with."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from snncompile.cli import main
from snncompile.commands import demo


def test_shipped_model_loads_safely_and_reaches_97_percent():
    from snncompile.frontend import load_model
    from snncompile.mnist import load_mnist

    meta = demo.shipped_metadata()
    model = load_model(demo.SHIPPED)            # weights_only allow-list: no --trust-code
    data = load_mnist()
    acc = demo.torch_accuracy(model, data.x_test, data.y_test, meta["timesteps"])
    assert len(data.x_test) == 1000
    assert acc >= 0.97
    assert acc == pytest.approx(meta["torch_test_accuracy"], abs=1e-4)
    assert demo.SHIPPED.stat().st_size < 300 * 1024
    assert "--ship" in meta["regenerate"]


def test_mnist_split_is_fixed_and_stratified():
    import numpy as np

    from snncompile.mnist import load_mnist

    a, b = load_mnist(), load_mnist()
    assert a.x_train.shape == (4000, 1, 28, 28) and a.x_test.shape == (1000, 1, 28, 28)
    assert np.array_equal(a.y_test, b.y_test) and np.array_equal(a.x_train, b.x_train)
    assert np.bincount(a.y_test).tolist() == [100] * 10
    assert a.x_train.min() == 0.0 and a.x_train.max() == 1.0


@pytest.mark.lava
@pytest.mark.slow
def test_demo_runs_the_whole_pipeline(tmp_path):
    out = tmp_path / "demo"
    res = CliRunner().invoke(main, ["demo", "--out", str(out), "--test-samples", "200",
                                    "--lava-samples", "10"])
    assert res.exit_code == 0, res.output
    for line in ("accuracy PyTorch", "accuracy float (emulator)", "accuracy fixed (emulator)",
                 "first 10", "spike agreement emulator/Lava", "SOPs per sample",
                 "energy per sample, SNN", "energy per sample, ANN", "HTML energy report:"):
        assert line in res.output
    summary = json.loads((out / "mnist_convsnn.summary.json").read_text())
    assert summary["n_test"] == 200 and summary["n_lava"] == 10
    assert summary["lava_spike_agreement"] == 1.0
    assert summary["float_accuracy"] == summary["torch_accuracy"] >= 0.95
    assert (out / "mnist_convsnn.energy.html").is_file()
    assert str((out / "mnist_convsnn.energy.html").resolve()) in res.output


def test_demo_without_the_shipped_model_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "SHIPPED", tmp_path / "mnist_convsnn.pt")
    res = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "out"), "--lava-samples", "0"])
    assert res.exit_code == 1
    assert "error:" in res.output and "mnist_convsnn" in res.output and "--ship" in res.output
    assert not (tmp_path / "out").exists()
