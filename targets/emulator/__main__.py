"""``python -m snncompile.targets.emulator``: compile the event kernel (and the torch engine's
neuron update, ``lif_kernel.py``) once, ahead of use.

numba compiles the kernel on first use (for both message types, with the torch engine's
update: 40-49 s on a 2-vCPU Intel Xeon VM, 2026-12-04; 120-200 s before a population's last
neurons took masked vector lanes instead of a scalar loop, ``lif_vector.lif16_tail``) and
caches it next to the source; ``make install`` runs this so that the first ``snncompile run
--backend emulator`` (and the test suite) starts warm.
"""
from __future__ import annotations

import sys
import time

import numpy as np


def _graph(message_bits: int):
    """A small graph with every op kind the kernel has: Input, Conv2d, Neuron, MaxPool2d,
    Flatten, Linear, Add with a recurrent edge, potential readout."""
    from snncompile.ir import fixed as fx
    from snncompile.ir import nodes as ir
    from snncompile.ir.graph import Graph
    g = Graph("warm_up", timesteps=3)
    g.add(ir.Input("in", shape=(2, 4, 4), fixed=fx.InputFixed(num_message_bits=message_bits)))
    g.add(ir.Conv2d("conv", weight=np.zeros((16, 2, 3, 3)), padding=1,
                    fixed=fx.SynapseFixed(weight=np.ones((16, 2, 3, 3), int), num_message_bits=message_bits)),
          ["in"])
    g.add(ir.Neuron("lif", shape=(16, 4, 4), fixed=fx.NeuronFixed(vth=1)), ["conv"])
    g.add(ir.MaxPool2d("pool"), ["lif"])
    g.add(ir.Flatten("flat"), ["pool"])
    g.add(ir.Linear("fc", weight=np.zeros((8, 64)), fixed=fx.SynapseFixed(weight=np.ones((8, 64), int))),
          ["flat"])
    g.add(ir.Add("join"), ["fc"])
    g.add(ir.Neuron("lif2", shape=(8,), fixed=fx.NeuronFixed(vth=1, reset_mode="subtract")), ["join"])
    g.add(ir.Linear("rec", weight=np.zeros((8, 8)), fixed=fx.SynapseFixed(weight=np.eye(8, dtype=int))),
          ["lif2"])
    g.add_edge("rec", "join", delay=1)
    g.add(ir.Linear("out_fc", weight=np.zeros((4, 8)), fixed=fx.SynapseFixed(weight=np.ones((4, 8), int))),
          ["lif2"])
    g.add(ir.Output("out", mode="potential", fixed=fx.ReadoutFixed(mode="potential")), ["out_fc"])
    return g


def main() -> int:
    from snncompile.targets import emulator
    t0 = time.perf_counter()
    print("compiling the emulator's event kernel (once; numba caches it) ...", flush=True)
    for bits in (0, 8):              # spike input (uint8), graded messages (int32)
        x = np.ones((2, 3, 2, 4, 4))
        emulator.run(_graph(bits), x, precision="fixed", engine="events", record=True)
        # the torch engine's compiled neuron update, for its activation dtypes
        emulator.run(_graph(bits), x, precision="fixed", engine="torch")
    print(f"event kernel ready ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
