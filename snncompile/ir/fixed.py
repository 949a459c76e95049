"""Loihi fixed-point parameters attached to IR nodes by the quantization pass.

Owned by the quantization work (issue: Loihi fixed-point quantization). A quantized graph
keeps its float parameters (for reports and SQNR) and carries, on each synapse and neuron
node, a ``fixed`` dataclass with the integers Lava's ``fixed_pt`` models receive.
"""
