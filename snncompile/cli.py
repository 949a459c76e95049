"""The ``snncompile`` command. Each subcommand lives in ``snncompile/commands/<name>.py``
and is imported only when used, so ``snncompile --help`` stays fast (no torch, no Lava)."""
from __future__ import annotations

import importlib

import click

from snncompile import __version__

#: command name -> module under snncompile.commands defining a click command ``command``.
COMMANDS = {
    "export": "export",
    "inspect": "inspect",
    "quantize": "quantize",
    "run": "run",
    "verify": "verify",
    "energy": "energy",
    "map": "map",
    "demo": "demo",
    "ops": "ops",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return [name for name, mod in COMMANDS.items() if importlib.util.find_spec(
            f"snncompile.commands.{mod}") is not None]

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        try:
            module = importlib.import_module(f"snncompile.commands.{COMMANDS[name]}")
        except ModuleNotFoundError as exc:
            if exc.name == f"snncompile.commands.{COMMANDS[name]}":
                return None
            raise
        return module.command


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="snncompile")
def main():
    """Compile PyTorch spiking networks to ONNX, Loihi fixed point and Lava; estimate energy."""


if __name__ == "__main__":
    main()
