"""Every architecture of the frontend's zoo written as NIR and read back: identical outputs
where our writer gave no semantic warning, a warning naming each node whose semantics NIR
cannot carry, or an error naming the node NIR has no kind for."""
import warnings

import numpy as np
import pytest

import zoo
from snncompile.errors import SnnCompileError
from snncompile.interop.nir import read_nir, write_nir
from snncompile.ir import MaxPool2d, Neuron
from snncompile.targets import run


@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_zoo_model_through_nir(name, tmp_path):
    model = zoo.MODELS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = model.graph()
    maxpools = [n.name for n in graph if isinstance(n, MaxPool2d)]
    if maxpools:
        with pytest.raises(SnnCompileError, match=rf"node '{maxpools[0]}' \(MaxPool2d\): NIR has no MaxPool2d"):
            write_nir(graph, tmp_path / "m.nir")
        return
    notes = write_nir(graph, tmp_path / "m.nir")
    lossy = {n.name for n in graph if isinstance(n, Neuron) and n.reset_mode != "zero"}
    named = {w.split("'")[1] for w in notes if "reset" in w}
    assert lossy <= named  # every neuron NIR cannot reset like the IR is named
    back = read_nir(tmp_path / "m.nir")
    assert back.timesteps == graph.timesteps
    x = model.inputs(4, 0)
    ours, theirs = run(graph, x), run(back, x)
    if not lossy:
        # '>=' comparisons are warned about but differ only on exact equality
        np.testing.assert_allclose(theirs.outputs, ours.outputs, rtol=1e-9, atol=1e-9)
