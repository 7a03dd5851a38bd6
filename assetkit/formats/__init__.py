"""formats: bytes <-> tensors. Knows nothing of model families.

:func:`open_asset` is the one entry point: it sniffs the path and hands it to the right reader.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ..errors import AssetkitError, UnsupportedFormatError
from .base import Asset, TensorInfo
from .sniff import SAFETENSORS_SUFFIXES, SHOWN_HEAD_BYTES, is_text_head, read_head, shown_head, sniff

__all__ = ["Asset", "TensorInfo", "missing_path_error", "not_a_checkpoint_error", "open_asset",
           "os_error_message", "reads_as_safetensors", "require_file", "sniff_path"]


def missing_path_error(path: str | os.PathLike[str]) -> AssetkitError:
    """The one-line error for a path that does not resolve: a symbolic-link loop and a dangling
    link are named as such rather than as a plain "no such file or directory"."""
    p = Path(path)
    try:
        os.stat(p)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return AssetkitError("symbolic link loop (too many levels of symbolic links)", where=str(p))
    if p.is_symlink():
        return AssetkitError(f"broken symbolic link: its target {os.readlink(p)} does not exist", where=str(p))
    return AssetkitError("no such file or directory", where=str(p))


def require_file(path: str | os.PathLike[str], purpose: str = "a checkpoint file") -> Path:
    """``path`` as a regular file, or the one-line error that says what it is instead (missing,
    a dangling link, a folder, a FIFO or device, which opening could block forever)."""
    p = Path(path)
    if not p.exists():
        raise missing_path_error(p)
    if p.is_dir():
        raise AssetkitError(f"is a folder: give {purpose}", where=str(p))
    if not p.is_file():
        raise UnsupportedFormatError("not a regular file", where=str(p))
    return p


def os_error_message(exc: OSError) -> str:
    """An OS error as the end of a one-line message: ``permission denied``, ``is a directory``..."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    return (exc.strerror or str(exc)).lower() if exc.strerror else str(exc)


def sniff_path(path: Path) -> str:
    """:func:`~assetkit.formats.sniff.sniff`, with an unreadable file as a one-line error
    (``PATH: permission denied``)."""
    try:
        return sniff(path)
    except PermissionError:
        raise AssetkitError("permission denied", where=str(path)) from None
    except OSError as exc:
        raise AssetkitError(f"cannot read: {os_error_message(exc)}", where=str(path)) from None


def _named_safetensors(path: Path) -> bool:
    return path.suffix.lower() in SAFETENSORS_SUFFIXES


def reads_as_safetensors(kind: str, path: Path) -> bool:
    """Whether a file sniffed as ``kind`` goes to the strict safetensors reader: safetensors bytes,
    or unrecognised binary bytes under a ``.safetensors`` name (so a broken one is told the exact
    rule). Text under that name (JSON, an LFS pointer) is not a safetensors file at all."""
    if kind == "safetensors":
        return True
    return kind == "unknown" and _named_safetensors(path) and not is_text_head(read_head(path, 8))


def not_a_checkpoint_error(kind: str, path: Path) -> UnsupportedFormatError:
    """The one-line error for a file sniffed as empty, unrecognised or a foreign format."""
    if kind == "empty":
        return UnsupportedFormatError("file is empty", where=str(path))
    if kind == "unknown" and _named_safetensors(path):
        try:
            head = shown_head(read_head(path, SHOWN_HEAD_BYTES + 1))
        except OSError:
            head = "unreadable bytes"
        return UnsupportedFormatError(f"not a safetensors file (starts with {head})", where=str(path))
    if kind == "unknown":
        return UnsupportedFormatError("not a checkpoint: neither safetensors, a torch zip nor a pickle",
                                      where=str(path))
    return UnsupportedFormatError(f"not a checkpoint: this is a {kind}", where=str(path))


def open_asset(path: str | os.PathLike[str], *, variant: str | None = None) -> Asset:
    """Open a checkpoint file or diffusers folder lazily (headers only).

    ``variant`` selects ``*.<variant>.safetensors`` weights in a diffusers folder.
    Raises :class:`~assetkit.errors.AssetkitError` subclasses with one-line messages.
    """
    p = Path(path)
    if not p.exists():
        raise missing_path_error(p)
    if p.is_dir():
        from .diffusers_folder import read_diffusers_folder

        return read_diffusers_folder(p, variant=variant)
    if not p.is_file():
        raise UnsupportedFormatError("not a regular file", where=str(p))
    kind = sniff_path(p)
    if reads_as_safetensors(kind, p):
        # A broken .safetensors goes to the strict reader so the error names the exact rule.
        from .safetensors import read_safetensors

        return read_safetensors(p)
    if kind in ("zip", "pickle"):
        from .torch_pickle import read_torch_file

        return read_torch_file(p)
    raise not_a_checkpoint_error(kind, p)
