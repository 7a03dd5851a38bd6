"""Diffusers folders converted from single files, cached under the registry by content.

diffusers builds a pipeline from a folder, so ``assetkit check`` converts a single-file base,
VAE or ControlNet (``assetkit.convert``) before loading it. The folder is kept at
``<registry root>/assembled/<sha256 of the file>/``: content-addressed, so a second check of the
same bytes (under any name or path, on the same machine) loads it straight away, and a changed
file never reuses a stale conversion. The file's sha256 comes from the lock's pin when there is
one; otherwise it is computed once and remembered per (path, size, mtime, inode) in
``assembled/hashes.json``. Deleting the ``assembled`` folder is always safe. Light: no torch.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..formats.atomic import atomic_write

_INDEX = "hashes.json"


def cache_root() -> Path:
    """``<registry root>/assembled`` (the registry root: ``$ASSETKIT_HOME`` or the user data dir)."""
    from ..registry.api import default_root

    return default_root() / "assembled"


def _stat_key(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def content_sha256(path: Path, root: Path) -> str:
    """sha256 of ``path``, remembered per path and (size, mtime, inode) in ``root/hashes.json``."""
    from .lock import file_sha256

    index_path = root / _INDEX
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        index = {}
    index = index if isinstance(index, dict) else {}
    key, stat = str(path.resolve()), _stat_key(path)
    entry = index.get(key)
    if isinstance(entry, dict) and entry.get("stat") == stat and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    digest = file_sha256(path)
    index[key] = {"stat": stat, "sha256": digest}
    try:
        root.mkdir(parents=True, exist_ok=True)
        with atomic_write(index_path, overwrite=True) as fh:
            fh.write(json.dumps(index, indent=1).encode("utf-8"))
    except OSError:
        pass  # a read-only cache still converts; it only forgets the hash
    return digest


def cached_diffusers_folder(path: Path, *, sha256: str | None = None, root: Path | None = None) -> Path:
    """The diffusers folder of the single file ``path``: ``root/<sha256>/``, converted on first use.

    ``sha256``: the file's, when already known (a lock's pin); ``root``: the cache folder
    (default :func:`cache_root`)."""
    from ..convert import plan_single_file_to_diffusers, write_diffusers_folder
    from ..formats import open_asset

    root = root if root is not None else cache_root()
    digest = sha256 or content_sha256(path, root)
    out = root / digest
    if (out / "model_index.json").is_file() or (out / "config.json").is_file():
        return out
    root.mkdir(parents=True, exist_ok=True)
    with open_asset(path) as asset:
        plan = plan_single_file_to_diffusers(asset)
        write_diffusers_folder(plan, asset, out, overwrite=True)  # staged, then moved into place
    return out
