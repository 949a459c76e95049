"""The ``snncompile`` command. Each subcommand lives in ``snncompile/commands/<name>.py``
and is imported only when used, so ``snncompile --help`` stays fast (no torch, no Lava)."""
from __future__ import annotations

import importlib
import sys

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


#: Exit status of a bad command line (click's usage errors); bad input exits 1, signal N 128 + N.
USAGE_ERROR = 2


class LazyGroup(click.Group):
    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """click's own errors (unknown option, ``--steps abc``, a folder as MODEL) follow the
        contract of every other error: one ``error:`` line on stderr, no usage text."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            status = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help())
            sys.exit(0)
        except click.UsageError as exc:
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"error: {_one_line(exc.format_message())}{where}", err=True)
            sys.exit(USAGE_ERROR)
        except click.ClickException as exc:
            click.echo(f"error: {_one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(status if isinstance(status, int) else 0)

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


def _one_line(text: str) -> str:
    return " ".join(text.split())


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="snncompile")
def main():
    """Compile PyTorch spiking networks to ONNX, Loihi fixed point and Lava; estimate energy."""


if __name__ == "__main__":
    main()
