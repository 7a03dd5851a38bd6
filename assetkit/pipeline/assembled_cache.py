"""Diffusers folders converted from single files, cached under the registry by content.

diffusers builds a pipeline from a folder, so ``assetkit check`` converts a single-file base,
VAE or ControlNet (``assetkit.convert``) before loading it. The folder is kept at
``<registry root>/assembled/<sha256 of the file>/``: content-addressed, so a second check of the
same bytes (under any name or path, on the same machine) loads it straight away, and a changed
file never reuses a stale conversion. A file converted with configs of its own (the spec's
``base: {name, config}``, ``assetkit smoke --config``) is keyed on them too:
``<sha256 of the file>-<sha256 of the configs, 16 hex digits>/``, so edited configs are a new
folder. The file's sha256 comes from the lock's pin when there is
one; otherwise from the registry's hash cache (an unchanged file is hashed once). Deleting
the ``assembled`` folder is always safe. Light: no torch.
"""

from __future__ import annotations

from pathlib import Path


def cache_root() -> Path:
    """``<registry root>/assembled`` (the registry root: ``$ASSETKIT_HOME`` or the user data dir)."""
    from ..registry.api import default_root

    return default_root() / "assembled"


def content_sha256(path: Path) -> str:
    """sha256 of ``path`` through the registry's hash cache (keyed by device, inode, size and
    mtime): an unchanged file is read once, however many checks use it."""
    from ..registry import Registry
    from ..registry.hashes import file_hashes, safetensors_data_start

    data_start = safetensors_data_start(path) if path.suffix == ".safetensors" else None
    with Registry() as registry:
        return file_hashes(registry.conn, path, data_start).sha256


def configs_sha256(folder: Path) -> str:
    """One sha256 over the files of a config folder that the conversion reads (their relative
    paths and contents; weights in the folder are not configs and do not count)."""
    import hashlib

    from ..convert.layout_convert import config_files
    from .lock import file_sha256

    digest = hashlib.sha256()
    for path in config_files(folder):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def cached_diffusers_folder(path: Path, *, sha256: str | None = None, root: Path | None = None,
                            config_dir: Path | None = None) -> Path:
    """The diffusers folder of the single file ``path``: ``root/<sha256>/`` (with ``config_dir``:
    ``root/<sha256>-<configs sha256[:16]>/``), converted on first use.

    ``sha256``: the file's, when already known (a lock's pin); ``root``: the cache folder
    (default :func:`cache_root`); ``config_dir``: the file's own diffusers configs, instead of the
    catalogue's."""
    from ..convert import plan_single_file_to_diffusers, write_diffusers_folder
    from ..formats import open_asset

    root = root if root is not None else cache_root()
    digest = sha256 or content_sha256(path)
    if config_dir is not None:
        digest = f"{digest}-{configs_sha256(Path(config_dir))[:16]}"
    out = root / digest
    if (out / "model_index.json").is_file() or (out / "config.json").is_file():
        return out
    root.mkdir(parents=True, exist_ok=True)
    with open_asset(path) as asset:
        plan = plan_single_file_to_diffusers(asset, config_dir=config_dir)
        write_diffusers_folder(plan, asset, out, overwrite=True)  # staged, then moved into place
    return out
