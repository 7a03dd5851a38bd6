"""The ``assetkit`` command line: click commands over the public API; formatting only.

Each command lives in its own module; importing this package must stay cheap (no torch).
"""

from __future__ import annotations

import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="assetkit")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
def main(debug: bool) -> None:
    """Inspect, scan, validate and convert diffusion model checkpoints.

    Exit codes: 0 ok, 1 the check found problems, 2 usage error or unreadable input.
    """


def _register() -> None:
    import importlib

    for module_name in ("inspect_cmd", "scan_cmd", "validate_cmd", "convert_cmd", "demo_cmd"):
        try:
            module = importlib.import_module(f"{__name__}.{module_name}")
        except ModuleNotFoundError as exc:  # a command still being built
            if exc.name != f"{__name__}.{module_name}":
                raise
            continue
        main.add_command(module.command)


_register()
