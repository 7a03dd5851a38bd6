"""Getting assets out of the user's registry: files, diffusers folders, views and UI model trees.

* :func:`link_file`: the first strategy of an order that the file system allows (or the one asked
  for). The registry's own read-only places (views, ``export-tree`` link trees) use :data:`LINKS`,
  reflink -> hardlink -> symlink -> copy; a file handed to the user (``export``) uses
  :data:`EXPORT_LINKS`, reflink -> copy, an independent file: a hard link or a symbolic link shares
  the blob's bytes, so editing it would corrupt the registry (only when asked for explicitly).
* :func:`export_asset`: an asset as its original file (rebuilt byte for byte from its recipe, the
  sha256 checked while writing) or as a folder (every original file rebuilt).
* :func:`view_path`: what :meth:`Registry.path` hands out, built once under ``views/<id>-<layout>``:
  a diffusers folder of links to the canonical blobs, or a single ``.safetensors`` file.
* :func:`export_tree`: a ComfyUI or A1111 ``models/`` tree of links, with a ledger of what it
  created so a rebuild removes only its own links. Nothing is ever deleted through a link, and a
  real file or folder where a link was expected is left alone.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import AssetkitError, OutputExistsError, VerificationError
from .add import DIFFUSERS_WEIGHTS, TRANSFORMERS_WEIGHTS
from .recipe import rebuild_chunks
from .records import AssetRecord, FileRecord

if TYPE_CHECKING:
    from .api import Registry

#: every strategy, and the default order of the registry's own views and link trees
LINKS = ("reflink", "hardlink", "symlink", "copy")
#: the default order of ``export``: an independent file (a reflink is copy-on-write), never one that
#: shares the blob's bytes unless ``--link hardlink|symlink`` asks for it
EXPORT_LINKS = ("reflink", "copy")
_FICLONE = 0x40049409
#: file layout views rebuild recipes up to this size; bigger files get a link to the canonical blob
VIEW_REBUILD_LIMIT = 256 * 1024 * 1024
LEDGER = ".assetkit-tree.json"

#: kind -> subfolder of a ComfyUI / A1111 models tree. A single-file asset goes to its kind's folder
#: as ``<name>.safetensors``; so does a component folder (a diffusers ``vae/``, ``controlnet/``...,
#: added on its own) as a link to its one weights file, since these loaders read one file and convert
#: diffusers names themselves; a full pipeline folder goes under ``diffusers`` (ComfyUI only).
TREE_LAYOUTS: dict[str, dict[str, str]] = {
    "comfyui": {"pipeline": "checkpoints", "lora": "loras", "vae": "vae", "controlnet": "controlnet",
                "textual_inversion": "embeddings", "text_encoder": "text_encoders", "unet": "diffusion_models",
                "transformer": "diffusion_models", "ip_adapter": "ipadapter", "t2i_adapter": "controlnet",
                "diffusers": "diffusers"},
    # relative to the webui folder (DIR/models/..., DIR/embeddings)
    "a1111": {"pipeline": "models/Stable-diffusion", "lora": "models/Lora", "vae": "models/VAE",
              "controlnet": "models/ControlNet", "textual_inversion": "embeddings", "ip_adapter": "models/ControlNet",
              "t2i_adapter": "models/ControlNet"},
}
#: kinds whose loader in that UI reads original-layout names only: a diffusers component folder of
#: that kind is left out of the tree (A1111 loads a VAE's state dict as it is, without converting)
TREE_ORIGINAL_ONLY: dict[str, frozenset[str]] = {"comfyui": frozenset(), "a1111": frozenset({"vae"})}


def _reflink(src: Path, dst: Path) -> None:
    import fcntl

    with open(src, "rb") as s, open(dst, "xb") as d:
        try:
            fcntl.ioctl(d.fileno(), _FICLONE, s.fileno())
        except OSError:
            d.close()
            os.unlink(dst)
            raise


def link_file(src: Path, dst: Path, strategy: str | None = None, order: tuple[str, ...] = LINKS) -> str:
    """Make ``dst`` show the bytes of ``src`` by ``strategy``, else by the first of ``order`` the file
    system allows; returns the strategy used. ``dst`` must not exist."""
    if dst.exists() or dst.is_symlink():
        raise OutputExistsError("exists", where=str(dst))
    order = (strategy,) if strategy else order
    last: OSError | None = None
    for how in order:
        try:
            if how == "reflink":
                _reflink(src, dst)
            elif how == "hardlink":
                os.link(src, dst)
            elif how == "symlink":
                os.symlink(src.resolve(), dst)
            elif how == "copy":
                from ..formats.atomic import atomic_write

                with open(src, "rb") as fh, atomic_write(dst) as out:
                    shutil.copyfileobj(fh, out, 8 * 1024 * 1024)
            else:
                raise AssetkitError(f"unknown link strategy {how!r} (choose from {', '.join(LINKS)})")
            return how
        except (OSError, ImportError) as exc:
            last = exc if isinstance(exc, OSError) else OSError(errno.ENOTSUP, str(exc))
            continue
    raise AssetkitError(f"cannot {strategy or 'link or copy'} to {dst}: {last.strerror if last else ''}")


def write_file(reg: Registry, f: FileRecord, dst: Path, link: str | None = None, overwrite: bool = False,
               order: tuple[str, ...] = LINKS) -> str:
    """One file of an asset at ``dst``: its blob placed by ``link`` (else the first of ``order`` the
    file system allows), or rebuilt from its recipe (checked)."""
    if f.blob is not None:
        if not reg.store.has(f.blob):
            from .blobs import BlobError

            raise BlobError(f"blob {f.blob} of {f.relpath} is missing from the store (run `assetkit registry verify`)")
        if overwrite and (dst.is_symlink() or dst.is_file()):
            os.unlink(dst)
        return link_file(reg.store.path(f.blob), dst, link, order)
    if link not in (None, "copy"):
        raise AssetkitError(f"{f.relpath} is rebuilt from its components (a recipe): it can only be written, "
                            f"not linked (--link {link})")
    from ..formats.atomic import AtomicFile

    out = AtomicFile(dst, overwrite=overwrite)
    digest = hashlib.sha256()
    try:
        for chunk in rebuild_chunks(reg.store, f.recipe or {}):
            digest.update(chunk)
            out.file.write(chunk)
        if digest.hexdigest() != f.sha256:
            raise VerificationError(f"rebuilt file hashes to {digest.hexdigest()}, expected {f.sha256}",
                                    where=f.relpath)
    except BaseException:
        out.discard()
        raise
    out.commit()
    return "rebuilt"


def _single_file(record: AssetRecord) -> FileRecord | None:
    if record.source_format == "diffusers" or len(record.files) != 1:
        return None
    return record.files[0]


def export_asset(reg: Registry, record: AssetRecord, dest: Path, *, form: str = "auto", link: str | None = None,
                 overwrite: bool = False) -> dict[str, Any]:
    """Export ``record`` to ``dest``: ``form`` "file" (the original file, byte for byte), "diffusers"
    (a folder: the original folder's files, or the components of a split checkpoint),
    "single-file" (a pipeline or component as one original-layout file, through the converter), "auto"."""
    single = _single_file(record)
    if form == "auto":
        from ..formats.sniff import CHECKPOINT_SUFFIXES

        form = "file" if single is not None else "diffusers"
        if form == "diffusers" and dest.suffix.lower() in CHECKPOINT_SUFFIXES and not dest.is_dir():
            raise AssetkitError(f"{record.name} is a folder asset and {dest.name} names a file: pass --as single-file "
                                "for one file, or give a folder name")
    if form == "file":
        if single is None:
            raise AssetkitError(f"{record.name} is a folder asset: export it as 'diffusers'")
        target = dest / single.relpath if dest.is_dir() else dest
        how = write_file(reg, single, target, link, overwrite, EXPORT_LINKS)
        return {"asset": record.name, "form": "file", "path": str(target), "sha256": single.sha256, "how": how}
    if form == "single-file":
        return _export_single_file(reg, record, dest, overwrite)
    if form != "diffusers":
        raise AssetkitError(f"unknown export form {form!r} (file, diffusers, single-file)")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise OutputExistsError("exists and is not an empty folder", where=str(dest))
    entries = _folder_entries(reg, record, exact=True)
    staging = dest.parent / f".{dest.name}.assetkit-tmp"
    if staging.exists():
        _remove_own_tree(staging)
    staging.mkdir(parents=True)
    used: dict[str, int] = {}
    try:
        for relpath, f in entries:
            target = staging / relpath
            target.parent.mkdir(parents=True, exist_ok=True)
            how = write_file(reg, f, target, link if f.blob is not None else None, order=EXPORT_LINKS)  # recipes: rebuilt
            used[how] = used.get(how, 0) + 1
        if dest.exists():
            dest.rmdir()
        os.replace(staging, dest)
    except BaseException:
        _remove_own_tree(staging)
        raise
    return {"asset": record.name, "form": "diffusers", "path": str(dest), "files": len(entries), "how": used}


def _export_single_file(reg: Registry, record: AssetRecord, dest: Path, overwrite: bool) -> dict[str, Any]:
    """A pipeline or component as one original-layout safetensors file, through the converter."""
    from ..convert import plan_diffusers_to_single_file, write_single_file
    from ..formats import open_asset

    target = dest / f"{record.name}.safetensors" if dest.is_dir() else dest
    folder = view_path(reg, record, "diffusers")
    with open_asset(folder) as asset:
        summary = write_single_file(plan_diffusers_to_single_file(asset), asset, target, overwrite=overwrite)
    return {"asset": record.name, "form": "single-file", "path": str(target), "how": "converted",
            "converter": summary}


def _folder_entries(reg: Registry, record: AssetRecord, exact: bool) -> list[tuple[str, FileRecord]]:
    """(relative path, file) pairs of a folder: the files as added (``exact``), or a loadable view
    with the canonical blob standing for the weights."""
    out: list[tuple[str, FileRecord]] = []
    if record.source_format != "diffusers" and record.components:
        # a single file split into components: its diffusers form
        if record.kind != "pipeline" and len(record.components) == 1:
            (comp_name,) = record.components.values()
            return [(f.relpath, f) for f in _component_files(reg.resolve(comp_name), exact)]
        blob = (record.probe.get("registry") or {}).get("model_index_blob")
        if blob:
            out.append(("model_index.json", FileRecord("model_index.json", blob, reg.store.size(blob), blob)))
    elif record.source_format == "diffusers":
        out.extend((f.relpath, f) for f in _component_files(record, exact))
    else:
        raise AssetkitError(f"{record.name} is a single file ({record.storage}) and was not split into components: "
                            "it has no diffusers folder form; use layout 'file'")
    for role, comp_name in record.components.items():
        comp = reg.resolve(comp_name)
        out.extend((f"{role}/{f.relpath}", f) for f in _component_files(comp, exact))
    return out


def _component_files(record: AssetRecord, exact: bool) -> list[FileRecord]:
    if exact or record.canonical_sha256 is None:
        return list(record.files)
    from ..formats.diffusers_folder import is_index_file

    files = [f for f in record.files if f.recipe is None and not is_index_file(Path(f.relpath).name)
             and f.blob != record.canonical_sha256]
    weights = TRANSFORMERS_WEIGHTS if any(Path(f.relpath).name.startswith(("model.", "pytorch_model"))
                                          for f in record.files) or record.kind == "text_encoder" else DIFFUSERS_WEIGHTS
    files.append(FileRecord(weights, record.canonical_sha256, 0, record.canonical_sha256))
    return files


# ---- views: what Registry.path hands out ------------------------------------------------------
def view_path(reg: Registry, record: AssetRecord, layout: str) -> Path:
    if layout not in ("diffusers", "file"):
        raise AssetkitError(f"unknown layout {layout!r} (diffusers, file)")
    folder = reg.views / f"{record.id}-{layout}"
    done = folder / ".complete"
    if done.is_file():
        return Path(done.read_text())
    reg.views.mkdir(parents=True, exist_ok=True)
    staging = reg.views / f".{record.id}-{layout}.{os.getpid()}.tmp"
    if staging.exists():
        _remove_own_tree(staging)
    staging.mkdir()
    try:
        if layout == "file":
            single = _single_file(record)
            if single is None:
                raise AssetkitError(f"{record.name} is a folder asset: use layout 'diffusers'")
            name = single.relpath if single.relpath.endswith(".safetensors") else f"{record.name}.safetensors"
            if single.recipe is not None and single.size > VIEW_REBUILD_LIMIT and record.canonical_sha256:
                link_file(reg.store.path(record.canonical_sha256), staging / name, None)
            else:
                write_file(reg, single, staging / name)
                os.chmod(staging / name, 0o444)  # a view is read-only, like the blobs
            result_rel = name
        else:
            if record.source_format != "diffusers" and not record.components:
                if record.canonical_sha256 is None:
                    raise AssetkitError(f"{record.name} was stored whole and not split into components: "
                                        "it has no diffusers folder form; use layout 'file'")
                raise AssetkitError(f"{record.name} is a single {record.kind} file without a config.json: "
                                    "use layout 'file'")
            for relpath, f in _folder_entries(reg, record, exact=False):
                target = staging / relpath
                target.parent.mkdir(parents=True, exist_ok=True)
                write_file(reg, f, target)
            result_rel = ""
        final = folder / result_rel if result_rel else folder
        (staging / ".complete").write_text(str(final))
        try:
            os.replace(staging, folder)
        except OSError:  # another process built it meanwhile
            _remove_own_tree(staging)
    except BaseException:
        _remove_own_tree(staging)
        raise
    return Path((folder / ".complete").read_text())


def _remove_own_tree(path: Path) -> None:
    """Remove a folder this module created (views, staging): never through a link."""
    if path.is_symlink():
        os.unlink(path)
        return
    if path.is_dir():
        shutil.rmtree(path)  # rmtree unlinks symbolic links inside, never follows them


def remove_view(reg: Registry, asset_id: int) -> None:
    for layout in ("diffusers", "file"):
        folder = reg.views / f"{asset_id}-{layout}"
        if folder.is_symlink():
            continue  # not ours
        if folder.is_dir() and folder.resolve().parent == reg.views.resolve():
            _remove_own_tree(folder)


def remove_views_of_blobs(reg: Registry, blobs: list[str]) -> None:
    """Remove the views of every asset needing one of ``blobs`` (and of the pipelines using such an
    asset): a view may hold a hard link to a blob's old, damaged file. They are rebuilt on next use."""
    marks = ",".join("?" * len(blobs))
    ids = {r[0] for r in reg.conn.execute(f"SELECT asset_id FROM refs WHERE blob IN ({marks})", blobs)}
    ids |= {r[0] for r in reg.conn.execute(
        f"SELECT pipeline_id FROM components WHERE component_id IN ({','.join('?' * len(ids))})", tuple(ids))}
    for asset_id in sorted(ids):
        remove_view(reg, asset_id)


# ---- export-tree: ComfyUI / A1111 models trees ---------------------------------------------------
def _ledger(dest: Path) -> dict[str, Any]:
    path = dest / LEDGER
    if not path.is_file():
        return {"entries": []}
    try:
        return json.loads(path.read_text())
    except ValueError:
        return {"entries": []}


def _is_ours(path: Path, entry: dict[str, Any]) -> bool:
    """Whether ``path`` is still exactly the link we made (a symlink to our target, or a file with
    our inode); a real folder or a replaced file is never ours."""
    if entry.get("how") == "symlink":
        return path.is_symlink() and os.readlink(path) == entry.get("target")
    if path.is_symlink() or not path.is_file():
        return False
    st = path.stat()
    return [st.st_dev, st.st_ino] == entry.get("inode")


def _tree_place(reg: Registry, record: AssetRecord, layout: str) -> tuple[Path, Path] | str:
    """Where ``record`` goes in a ``layout`` tree and what it shows there (a view's file or folder),
    or why it is left out."""
    folders = TREE_LAYOUTS[layout]
    if _single_file(record) is not None:
        sub = folders.get(record.kind)
        if sub is None:
            return f"{layout} has no folder for a {record.kind}"
        try:
            return Path(sub) / f"{record.name}.safetensors", view_path(reg, record, "file")
        except AssetkitError as exc:
            return str(exc)
    if record.kind == "pipeline":
        sub = folders.get("diffusers")
        if sub is None:
            return (f"a diffusers pipeline folder, which {layout} does not load; "
                    f"`assetkit registry export {record.name} FILE --as single-file` makes one file of it")
        try:
            return Path(sub) / record.name, view_path(reg, record, "diffusers")
        except AssetkitError as exc:
            return str(exc)
    sub = folders.get(record.kind)
    if sub is None:
        return f"{layout} has no folder for a {record.kind}"
    if record.kind in TREE_ORIGINAL_ONLY[layout]:
        return (f"a diffusers {record.kind} folder; {layout} reads original-layout names only: "
                f"`assetkit registry export {record.name} FILE --as single-file` converts it")
    if record.canonical_sha256 is None:
        return f"a {record.kind} folder without weights"
    try:
        folder = view_path(reg, record, "diffusers")
    except AssetkitError as exc:
        return str(exc)
    weights = next((folder / name for name in (DIFFUSERS_WEIGHTS, TRANSFORMERS_WEIGHTS) if (folder / name).is_file()),
                   None)
    if weights is None:
        return f"a {record.kind} folder without one weights file"
    return Path(sub) / f"{record.name}.safetensors", weights


def export_tree(reg: Registry, dest: Path, layout: str, link: str | None = None) -> dict[str, Any]:
    """Build (or rebuild) a models tree at ``dest`` for ``layout`` ("comfyui" or "a1111")."""
    if layout not in TREE_LAYOUTS:
        raise AssetkitError(f"unknown tree layout {layout!r} (choose from {', '.join(TREE_LAYOUTS)})")
    folders = TREE_LAYOUTS[layout]
    dest.mkdir(parents=True, exist_ok=True)
    ledger = _ledger(dest)
    removed, kept = 0, []
    for entry in ledger.get("entries", []):
        path = dest / entry["path"]
        if not (path.exists() or path.is_symlink()):
            continue
        if _is_ours(path, entry):
            os.unlink(path)
            removed += 1
        else:
            kept.append(entry["path"])
    entries: list[dict[str, Any]] = []
    skipped: list[str] = []
    for sub in sorted(set(folders.values())):  # every folder the layout (and the yaml) names exists
        (dest / sub).mkdir(parents=True, exist_ok=True)
    for item in reg.ls():
        record = reg.get(item["id"])
        placed = _tree_place(reg, record, layout)
        if isinstance(placed, str):
            skipped.append(f"{record.name} ({placed})")
            continue
        rel, source = placed
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            skipped.append(f"{record.name} ({rel} exists and is not ours)")
            continue
        if source.is_dir():  # a pipeline folder: always a symbolic link to the view
            os.symlink(source, target)
            how = "symlink"
        else:
            how = link_file(source, target, link)
        entry: dict[str, Any] = {"path": rel.as_posix(), "asset": record.name, "how": how}
        if how == "symlink":
            entry["target"] = os.readlink(target)
        else:
            st = target.stat()
            entry["inode"] = [st.st_dev, st.st_ino]
        entries.append(entry)
    entries_kept = [e for e in ledger.get("entries", []) if e["path"] in kept]
    from ..formats.atomic import atomic_write

    with atomic_write(dest / LEDGER, overwrite=True) as out:
        out.write(json.dumps({"layout": layout, "entries": entries + entries_kept}, indent=2).encode())
    snippet = None
    if layout == "comfyui":
        lines = ["assetkit:", f"    base_path: {dest.resolve()}"]
        for key in sorted(set(folders.values())):
            lines.append(f"    {key}: {key}")
        snippet = "\n".join(lines) + "\n"
    return {"path": str(dest), "layout": layout, "linked": len(entries), "removed": removed,
            "kept_not_ours": kept, "skipped": skipped, "extra_model_paths_yaml": snippet}
