"""The ``assetkit`` command line: click commands over the public API; formatting only.

Each command lives in its own module (``<name>_cmd.py``, defining a click command ``command``)
and is imported only when it runs, so a command pays for nothing but its own imports.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from .. import __version__

#: command name -> module under assetkit.cli
COMMANDS = {
    "inspect": "inspect_cmd",
    "scan": "scan_cmd",
    "validate": "validate_cmd",
    "convert": "convert_cmd",
    "demo": "demo_cmd",
    "lock": "lock_cmd",
    "check": "check_cmd",
    "smoke": "smoke_cmd",
    "registry": "registry_cmd",
}


#: ctx.meta key: whether the command line asked for --json (usage errors then print JSON too).
_JSON_REQUESTED = "assetkit.json_requested"


def _asks_for_json(args: list[str]) -> bool:
    """``--json`` among the options (not after a ``--`` that ends them)."""
    return "--json" in (args[: args.index("--")] if "--" in args else args)


def _usage_error(exc: click.ClickException) -> None:
    """A usage error under --json: the one JSON document on stdout, click's exit code."""
    from ._common import fail

    fail(exc.format_message(), exc.exit_code, json_output=True)


class LazyGroup(click.Group):
    """A click group that imports a command's module the first time the command is asked for.

    With ``--json`` on the command line, usage errors (unknown option, missing argument, bad
    value) print ``{"ok": false, "error", "exit_code"}`` on stdout like every other failure,
    instead of click's usage text.
    """

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        json_requested = _asks_for_json(list(args))
        try:
            ctx = super().make_context(info_name, args, parent=parent, **extra)
        except click.ClickException as exc:
            if not json_requested:
                raise
            _usage_error(exc)
        ctx.meta[_JSON_REQUESTED] = json_requested
        return ctx

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            if not ctx.meta.get(_JSON_REQUESTED):
                raise
            _usage_error(exc)

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
