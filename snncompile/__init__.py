"""snncompile: compile PyTorch spiking networks to a portable graph, Loihi fixed point and Lava."""

__version__ = "0.1.0"
