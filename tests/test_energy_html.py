"""The HTML report opened in a real headless browser (Debian chromium): the page renders and
its plots are not blank. Skipped where chromium is not installed (CI installs it with
``apt-get install -y chromium``)."""
from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
import torch.nn as nn

from snncompile.energy import analyze
from snncompile.frontend import from_torch
from snncompile.targets import reference

from spikingjelly.activation_based import neuron as sj_neuron  # noqa: E402
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WIDTH, HEIGHT = 1200, 2400


def screenshot(page, png, profile):
    """Render ``page`` with headless chromium into ``png`` (no network, throwaway profile)."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", f"--screenshot={png}", f"--window-size={WIDTH},{HEIGHT}",
           page.as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)


def colour_pixels(img: np.ndarray, hex_colour: str, tol: float = 0.06) -> int:
    rgb = np.array([int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return int(np.sum(np.all(np.abs(img[..., :3] - rgb) < tol, axis=-1)))


@pytest.fixture(scope="module")
def report():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), sj_neuron.IFNode(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(64, 16), sj_neuron.IFNode(), nn.Linear(16, 3)).eval()
    with torch.no_grad():
        model[0].weight.mul_(3)
        model[4].weight.mul_(3)
    graph = from_torch(model, (1, 8, 8), 4, name="html-demo")
    x = (np.random.default_rng(0).random((4, 4, 1, 8, 8)) < 0.3).astype(np.float64)
    return analyze(graph, reference.run(graph, x, record=True), x=x, energy_model="loihi1")


def test_embedded_plots_are_not_blank(report):
    page = report.to_html()
    pngs = re.findall(r'id="plot-([a-z_]+)"[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert [k for k, _ in pngs] == ["firing_rates", "synops", "energy", "rate_over_time"]
    for key, data in pngs:
        img = mpimg.imread(io.BytesIO(base64.b64decode(data)), format="png")
        assert img.shape[0] > 100 and img.shape[1] > 300, key
        assert img[..., :3].std() > 0.05, f"plot {key} looks blank"


@pytest.mark.slow
# CI installs chromium (.ci/run), so there the browser check can never be skipped.
@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                    reason="Debian chromium not installed (apt-get install -y chromium)")
def test_html_report_renders_in_headless_chromium(report, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(report.to_html(), encoding="utf-8")
    png = tmp_path / "shot.png"
    screenshot(page, png, tmp_path / "profile")
    assert png.stat().st_size > 10_000
    img = mpimg.imread(png)
    assert img.shape[:2] == (HEIGHT, WIDTH)
    assert img[..., :3].std() > 0.05
    # the plots rendered: their bar colours are on the page (tables and text have none)
    assert colour_pixels(img, "#2ca02c") > 2000      # firing-rate bars, neuron energy
    assert colour_pixels(img, "#1f77b4") > 2000      # SOP bars
    assert colour_pixels(img, "#d62728") > 20        # spike energy (loihi1 charges spikes)
    # without its images the same page has none of those colours
    bare = tmp_path / "bare.html"
    bare.write_text(re.sub(r'src="data:image/png;base64,[^"]+"', 'src=""', page.read_text()))
    screenshot(bare, tmp_path / "bare.png", tmp_path / "profile")
    assert colour_pixels(mpimg.imread(tmp_path / "bare.png"), "#1f77b4") == 0
