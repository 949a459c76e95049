"""The chip core map in the HTML reports, opened in headless chromium as test_energy_html does:
cores coloured by layer and by the utilisation of their binding limit are really on the page."""
from __future__ import annotations

import base64
import io
import os
import re

import matplotlib.image as mpimg
import numpy as np
import pytest

from snncompile.chip.mapper import map_graph
from snncompile.chip.report import LAYER_COLOURS, html, map_dict
from test_chip_mapper import chain  # noqa: E402
from test_energy_html import CHROMIUM, HEIGHT, WIDTH, colour_pixels, screenshot  # noqa: E402

VIRIDIS_TOP = "#fde725"          # utilisation 1.0 (a core filled to its binding limit)


@pytest.fixture(scope="module")
def report():
    # 3 layers: 3 cores full of neurons, 1 core, 1 core
    return map_dict(map_graph(chain(32, 3072, 500, 10), "loihi1"))


def core_map(page: str) -> np.ndarray:
    (data,) = re.findall(r'id="plot-core_map"[^>]*\s*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    return mpimg.imread(io.BytesIO(base64.b64decode(data)), format="png")


def test_core_map_colours_cores_by_layer_and_utilisation(report):
    img = core_map(html(report))
    assert img.shape[1] > 500
    for colour in LAYER_COLOURS[:3]:
        assert colour_pixels(img, colour) > 50, colour
    assert colour_pixels(img, VIRIDIS_TOP) > 100          # the full cores of the first layer


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                    reason="Debian chromium not installed (apt-get install -y chromium)")
def test_chip_html_renders_in_headless_chromium(report, tmp_path):
    page = tmp_path / "map.html"
    page.write_text(html(report), encoding="utf-8")
    png = tmp_path / "shot.png"
    screenshot(page, png, tmp_path / "profile")
    img = mpimg.imread(png)
    assert img.shape[:2] == (HEIGHT, WIDTH)
    for colour in LAYER_COLOURS[:3]:
        assert colour_pixels(img, colour) > 50, colour
    assert colour_pixels(img, VIRIDIS_TOP) > 100


def test_energy_report_html_carries_the_chip_section_and_core_map():
    import torch
    import torch.nn as nn
    from spikingjelly.activation_based import neuron as sj_neuron
    from snncompile.chip.report import chip_section
    from snncompile.energy import analyze
    from snncompile.frontend import from_torch
    from snncompile.targets import reference

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), sj_neuron.IFNode(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(64, 16), sj_neuron.IFNode(), nn.Linear(16, 3)).eval()
    with torch.no_grad():
        model[0].weight.mul_(3)
        model[4].weight.mul_(3)
    graph = from_torch(model, (1, 8, 8), 4, name="html-chip")
    x = (np.random.default_rng(0).random((4, 4, 1, 8, 8)) < 0.3).astype(np.float64)
    result = reference.run(graph, x, record=True)
    report = analyze(graph, result, x=x)
    report.chip = chip_section(graph, result, x, "loihi1")
    page = report.to_html()
    assert "<h2>Chip map: loihi1</h2>" in page and "energy per inference" in page
    img = core_map(page)
    for colour in LAYER_COLOURS[:4]:      # conv neurons, OR neurons, dense neurons, readout
        assert colour_pixels(img, colour) > 20, colour
    assert report.to_dict()["chip"]["cost"]["energy_per_inference_j"] > 0
