"""Plumbing shared by every command: one-line errors, exit codes, JSON output."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from ..errors import AssetkitError

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2
#: 128 + signal number, the shell convention: Ctrl-C (SIGINT), closed stdout (SIGPIPE), SIGTERM.
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE, EXIT_TERMINATED = 130, 141, 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that cleanup (temporary files) runs as for Ctrl-C."""


@contextlib.contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """While a command runs, SIGTERM raises :class:`Terminated` (SIGKILL cannot be caught)."""

    def terminate(signum: int, frame: Any) -> None:
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread (embedded use): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def quiet_broken_pipe() -> None:
    """stdout was closed by the reader (``| head``): end quietly with 141, like a tool killed by
    SIGPIPE; later writes (the interpreter's final flush) go to /dev/null instead of raising."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    sys.exit(EXIT_BROKEN_PIPE)

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


def finish(document: Any, *, json_output: bool, render: Callable[[Any], str | None] | None = None,
           code: int = EXIT_OK) -> NoReturn:
    """The one way a command ends: its result document, as exactly one JSON document (``--json``)
    or as the text ``render(document)`` returns (a renderer may also print as it goes and return
    None), then the exit code. Broken pipes and signals are handled around it, once
    (:func:`handles_errors`, :class:`assetkit.cli.LazyGroup`)."""
    if json_output:
        emit_json(document)
    elif render is not None:
        text = render(document)
        if text is not None:
            click.echo(text)
    sys.exit(code)


def check_junit_destination(junit_file: Path | None) -> None:
    """Refuse an unwritable ``--junit FILE`` before the checks run (nothing is written yet)."""
    if junit_file is not None:
        from ..formats.atomic import check_destination

        check_destination(junit_file, overwrite=True)


def write_junit(junit_file: Path | None, command: str, cases: Sequence[tuple[str, Sequence[Any]]]) -> None:
    """``--junit FILE``: one ``<testsuite name="assetkit COMMAND">`` (the same naming for every
    command), one test case per path, written atomically (never a half-written report)."""
    if junit_file is None:
        return
    from ..findings import render_junit
    from ..formats.atomic import atomic_write

    with atomic_write(junit_file, overwrite=True) as out:
        out.write(render_junit([(f"assetkit {command}", cases)]))


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
        except BrokenPipeError:
            quiet_broken_pipe()
        except Terminated:
            fail("terminated", EXIT_TERMINATED, json_output)
        except KeyboardInterrupt:
            fail("interrupted", EXIT_INTERRUPTED, json_output)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except MemoryError:
            fail("out of memory", EXIT_USAGE, json_output)
        except OSError as exc:
            if debug:
                raise
            from ..formats import os_error_message

            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            fail(f"{where}{os_error_message(exc)}", EXIT_USAGE, json_output)
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


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 tensor``, ``2 tensors`` (``nouns`` for an irregular plural)."""
    return f"{count} {noun}" if count == 1 else f"{count} {nouns or noun + 's'}"


def human_count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)
