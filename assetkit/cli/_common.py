"""Plumbing shared by every command: one-line errors, exit codes, JSON output."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any

import click

from ..errors import AssetkitError

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2

json_option = click.option("--json", "json_output", is_flag=True, help="Print exactly one JSON document on stdout.")


def emit_json(document: Any) -> None:
    """Print one JSON document on stdout."""
    click.echo(json.dumps(document, indent=2, sort_keys=False, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def fail(message: str, code: int = EXIT_USAGE, json_output: bool = False) -> None:
    """Report one line and exit: on stderr, or as ``{"ok": false, "error": ...}`` with --json."""
    if json_output:
        emit_json({"ok": False, "error": message, "exit_code": code})
    else:
        click.echo(f"assetkit: error: {message}", err=True)
    sys.exit(code)


def handles_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn :class:`AssetkitError` (and anything unexpected) into one line and an exit code.

    ``--debug`` on the top-level group lets the traceback through instead.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        json_output = bool(kwargs.get("json_output"))
        ctx = click.get_current_context(silent=True)
        debug = bool(ctx and ctx.find_root().params.get("debug"))
        try:
            return func(*args, **kwargs)
        except AssetkitError as exc:
            if debug:
                raise
            fail(str(exc), exc.exit_code, json_output)
        except KeyboardInterrupt:
            fail("interrupted", EXIT_USAGE, json_output)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except MemoryError:
            fail("out of memory", EXIT_USAGE, json_output)
        except OSError as exc:
            if debug:
                raise
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            fail(f"{where}{exc.strerror or exc}", EXIT_USAGE, json_output)
        except Exception as exc:  # noqa: BLE001 - the contract is one line, never a traceback
            if debug:
                raise
            fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for a traceback)",
                 EXIT_USAGE, json_output)

    return wrapper


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{n} B"


def human_count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)
