"""Interoperability: NIR files (``interop.nir``: ``read_nir``, ``write_nir``), lava-dl netx
HDF5 networks (``interop.netx``: ``read_netx``) and NIR from snnTorch's/SpikingJelly's own
exporters with their gaps named (``interop.library_nir``: ``library_to_nir``).

Imported lazily by the CLI: nothing here is imported by ``snncompile`` itself.
"""
