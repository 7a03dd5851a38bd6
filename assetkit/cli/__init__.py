"""The ``assetkit`` command line: click commands over the public API; formatting only.

Each command lives in its own module (``<name>_cmd.py``, defining a click command ``command``)
and is imported only when it runs, so a command pays for nothing but its own imports.
"""

from __future__ import annotations

import importlib

import click

from .. import __version__

#: command name -> module under assetkit.cli
COMMANDS = {
    "inspect": "inspect_cmd",
    "scan": "scan_cmd",
    "validate": "validate_cmd",
    "convert": "convert_cmd",
    "demo": "demo_cmd",
}


class LazyGroup(click.Group):
    """A click group that imports a command's module the first time the command is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = COMMANDS.get(cmd_name)
        if module_name is None:
            return None
        return importlib.import_module(f"{__name__}.{module_name}").command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="assetkit")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
def main(debug: bool) -> None:
    """Inspect, scan, validate and convert diffusion model checkpoints.

    Exit codes: 0 ok, 1 the check found problems, 2 usage error or unreadable input.
    """
