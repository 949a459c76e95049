"""Export time and peak memory of a ResNet-18-sized spiking network.

SpikingJelly's own ``sew_resnet18`` imports torchvision (not installed, and not
installable next to the pinned CPU torch), so this builds the same network: SEW-ResNet-18
(ADD connect), SpikingJelly IFNode, BatchNorm after every conv, 11.7 M parameters,
ImageNet input 3x224x224. It is saved with ``torch.save(model)`` and exported with the
real command (``snncompile export ... --trust-code``) in a child process, so the time
includes Python start-up, imports, safe loading, tracing, the passes and writing ONNX;
peak memory is the child's max RSS. An in-process breakdown follows.

Usage: .venv/bin/python benchmarks/bench_export.py [--write]   (--write appends to RESULTS.md)
"""
from __future__ import annotations

import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
INPUT_SHAPE, T = (3, 224, 224), 4


def _conv_bn(cin, cout, k, stride, pad):
    return [nn.Conv2d(cin, cout, k, stride, pad, bias=False), nn.BatchNorm2d(cout)]


class SEWBasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        from spikingjelly.activation_based import neuron
        self.conv1 = nn.Sequential(*_conv_bn(cin, cout, 3, stride, 1), neuron.IFNode(v_reset=None))
        self.conv2 = nn.Sequential(*_conv_bn(cout, cout, 3, 1, 1), neuron.IFNode(v_reset=None))
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(*_conv_bn(cin, cout, 1, stride, 0), neuron.IFNode(v_reset=None))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return self.conv2(self.conv1(x)) + identity


class SEWResNet18(nn.Module):
    def __init__(self, classes=1000):
        super().__init__()
        from spikingjelly.activation_based import neuron
        self.stem = nn.Sequential(*_conv_bn(3, 64, 7, 2, 3), neuron.IFNode(v_reset=None), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], 64
        for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            layers += [SEWBasicBlock(cin, cout, stride), SEWBasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))  # as in SpikingJelly's sew_resnet
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


def main(write: bool) -> None:
    import bench_export  # the classes must be importable by name (not __main__) for --trust-code

    torch.manual_seed(0)
    model = bench_export.SEWResNet18().eval()
    n_params = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        pt, onnx_path = Path(tmp) / "sew_resnet18.pt", Path(tmp) / "sew_resnet18.onnx"
        torch.save(model, pt)
        cmd = [str(ROOT / ".venv/bin/snncompile"), "export", str(pt), "--input-shape",
               ",".join(map(str, INPUT_SHAPE)), "--timesteps", str(T), "--trust-code", "-o", str(onnx_path)]
        env_path = f"{Path(__file__).resolve().parent}"
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=env_path)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"export failed: {proc.stderr}")
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        size_mb = onnx_path.stat().st_size / 1e6

        # in-process breakdown, second (warm) run: imports and first-call costs excluded
        from snncompile.frontend import load_model, to_raw_graph_from_torch
        from snncompile.ir.onnx_format import save_onnx
        from snncompile.passes import canonicalize
        for _ in range(2):
            t = [time.perf_counter()]
            loaded = load_model(pt, trust_code=True)
            t.append(time.perf_counter())
            raw = to_raw_graph_from_torch(loaded, INPUT_SHAPE, T)
            t.append(time.perf_counter())
            graph = canonicalize(raw)
            t.append(time.perf_counter())
            save_onnx(graph, Path(tmp) / "again.onnx")
            t.append(time.perf_counter())
    steps = dict(zip(["load", "trace+convert", "passes", "save ONNX"], [b - a for a, b in zip(t, t[1:])]))
    lines = [
        "## Export (`snncompile export`, engineer F)",
        "",
        f"Measured 2026-11-25 on {platform.machine()} ({sys.platform}), 2 shared CPU cores, torch "
        f"{torch.__version__}, by `benchmarks/bench_export.py`. Model: SEW-ResNet-18 (ADD), SpikingJelly "
        f"IFNode, BatchNorm after every conv, {n_params / 1e6:.1f} M parameters, input "
        f"{'x'.join(map(str, INPUT_SHAPE))}, T={T}; exported by the CLI in a child process "
        f"(start-up and imports included). Target: under 10 s. The last four columns are a warm "
        f"in-process breakdown (second run in one process).",
        "",
        "| model | nodes | export wall (s) | peak RSS (MB) | ONNX file (MB) | load | trace+convert | passes | save ONNX |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| sew_resnet18 | {len(graph)} | {wall:.2f} | {peak_mb:.0f} | {size_mb:.1f} | "
        + " | ".join(f"{v:.2f} s" for v in steps.values()) + " |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if write:
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main("--write" in sys.argv)
