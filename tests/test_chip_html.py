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
