"""Package discovery for the layout of ARCHITECTURE.md: `snncompile/` is the library and
`targets/` is installed as `snncompile.targets` (every subpackage found automatically)."""
from setuptools import find_packages, setup

library = find_packages(include=["snncompile", "snncompile.*"])
targets = ["snncompile." + p for p in find_packages(include=["targets", "targets.*"])]

setup(
    packages=library + targets,
    package_dir={"snncompile": "snncompile", "snncompile.targets": "targets"},
)
