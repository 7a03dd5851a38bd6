"""``add``: put a file or folder into the user's registry (blobs first, then one index transaction).

* a safetensors file of one component (VAE, UNet, text encoder, LoRA, embedding...): its tensors go
  into one canonical blob (:mod:`.canonical`), the file itself is kept as a recipe (:mod:`.recipe`)
  that rebuilds it byte for byte;
* a full single-file checkpoint: split into diffusers components through the converter
  (``assetkit.convert.plan_single_file_to_diffusers``) when it is available and knows the
  checkpoint; otherwise stored whole, as one blob (``storage: whole``, and ``show`` says so);
* a pickle (``.ckpt``/``.pt``/``.bin``): scanned and converted to safetensors first (unsafe ones are
  refused), the converted file is stored as above, the pickle's sha256 is recorded for ``find``;
* a diffusers pipeline folder: one component asset per subfolder (shared with any earlier pipeline
  holding the very same files), the pipeline asset referencing them;
* a diffusers component folder: one asset.

Nothing is written to the index until every blob it references is in the store, and everything
about one asset is written in one transaction: a kill at any moment leaves no row pointing to a
missing blob (leftover blobs and temporary files are ``gc``'s).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import AssetkitError, UnsupportedFormatError
from .canonical import CanonicalBlob, CanonicalTensor, asset_tensors, store_canonical
from .hashes import FileHashes, file_hashes, fingerprint, safetensors_data_start
from .recipe import Placement, make_recipe
from .records import AssetRecord, FileRecord

if TYPE_CHECKING:
    from .api import Registry

Progress = Callable[[int], None]

#: Weight file names of the canonical form, per library (what diffusers and transformers load).
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
TRANSFORMERS_WEIGHTS = "model.safetensors"
_PICKLE_KINDS = ("zip", "pickle")
#: kinds the converter can split into diffusers components (original layouts)
SPLITTABLE = ("pipeline", "vae", "unet", "controlnet")


@dataclass
class AddResult:
    """What ``add`` did: the record, whether it is new, what was read and stored."""

    record: AssetRecord
    created: bool
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    components_reused: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"created": self.created, "seconds": round(self.seconds, 3), "notes": list(self.notes),
                "components_reused": list(self.components_reused), "asset": self.record.to_dict()}


@dataclass
class _Planned:
    """One asset to insert: its row values, files, hashes, blobs, components."""

    name: str
    kind: str
    family: str | None
    probe: dict[str, Any]
    source_format: str
    storage: str
    sha256: str
    size: int
    files: list[FileRecord]
    hashes: list[tuple[str, str, str]]  # (algo, value, relpath)
    blobs: dict[str, int]  # sha256 -> size, every blob the asset needs
    description: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)
    fingerprint: str | None = None
    canonical: str | None = None
    content_key: str | None = None
    auto: bool = False
    variant: str | None = None
    prediction_type: str | None = None
    layout: str | None = None
    tags: tuple[str, ...] = ()
    components: dict[str, _Planned] = field(default_factory=dict)
    explicit_name: bool = False  #: given by the user: taken means an error, not another name
    reused: bool = False  #: (components) an equal component asset existed and is referenced
    existing: bool = False  #: the same asset was indexed meanwhile (a concurrent add): that one is returned


# ---------------------------------------------------------------------------------------------
# names
# ---------------------------------------------------------------------------------------------
_BAD_NAME = re.compile(r"[\x00-\x1f/\\]")


def check_name(name: str, what: str = "name") -> str:
    """A registry name: non-empty, at most 200 characters, no path separators, control characters,
    leading dash, ``.`` or ``..`` (names never reach the file system, and never escape the root)."""
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise AssetkitError(f"invalid {what} {name!r}: empty or surrounded by spaces")
    if len(name) > 200:
        raise AssetkitError(f"invalid {what}: longer than 200 characters")
    if _BAD_NAME.search(name) or name in (".", "..") or name.startswith("-") or ":" in name:
        raise AssetkitError(f"invalid {what} {name!r}: no '/', '\\', ':', control characters, leading '-', "
                            "'.' or '..'")
    return name


def check_id(value: str | None, literal: object, what: str) -> str | None:
    """``value`` when it is one of the ids of ``literal`` (:mod:`assetkit.ids`) or None; else a usage
    error that lists them (``--kind``/``--family`` of ``add`` and ``ls``)."""
    from ..ids import ids

    allowed = ids(literal)
    if value is not None and value not in allowed:
        raise AssetkitError(f"unknown {what} {value!r}: choose one of {', '.join(allowed)}")
    return value


def name_from_path(path: Path) -> str:
    stem = path.name if path.is_dir() else path.name.split(".")[0] or path.name
    cleaned = re.sub(r"[\x00-\x1f/\\:]+", "_", stem).strip().lstrip("-.") or "asset"
    return cleaned[:200]


# ---------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------
def add_path(reg: Registry, path: str | os.PathLike[str], *, name: str | None = None, tags: Iterable[str] = (),
             description: str = "", kind: str | None = None, family: str | None = None,
             progress: Progress | None = None, follow_root: Path | None = None,
             config: str | os.PathLike[str] | None = None) -> AddResult:
    """Add a file or folder; returns the existing record (``created=False``) when the same bytes are
    already registered as an asset of their own. ``config``: a diffusers folder (or config-only
    folder) whose configs the converter uses to split a single file (default: the catalogue's)."""
    from ..formats import missing_path_error, not_a_checkpoint_error, reads_as_safetensors, sniff_path

    started = time.perf_counter()
    p = Path(path)
    if not p.exists():
        raise missing_path_error(p)
    from ..ids import Family, Kind

    check_id(kind, Kind, "kind")
    check_id(family, Family, "family")
    tags = tuple(check_name(t, "tag") for t in tags)
    if name is not None:
        check_name(name)
    options = dict(name=name, tags=tags, description=description, kind=kind, family=family, progress=progress)
    repaired_before = len(reg.store.repaired)
    if p.is_dir():
        result = _add_folder(reg, p, follow_root=follow_root, **options)
    elif not p.is_file():
        raise UnsupportedFormatError("not a regular file", where=str(p))
    else:
        sniffed = sniff_path(p)
        config_dir = Path(config) if config is not None else None
        if reads_as_safetensors(sniffed, p):
            result = _add_file(reg, p, config_dir=config_dir, **options)
        elif sniffed in _PICKLE_KINDS:
            result = _add_pickle(reg, p, config_dir=config_dir, **options)
        else:
            raise not_a_checkpoint_error(sniffed, p)
    repaired = reg.store.repaired[repaired_before:]
    if repaired:
        from .export import remove_views_of_blobs

        remove_views_of_blobs(reg, repaired)
        result.notes.append(f"repaired {len(repaired)} damaged blob(s) (their size on disk was wrong): replaced "
                            "by the verified bytes just added; views that used them are rebuilt on next use")
    result.seconds = time.perf_counter() - started
    return result


def _unique_name(reg: Registry, wanted: str, explicit: bool) -> str:
    refusal = reg._name_refusal(wanted)
    if refusal is not None:
        if explicit:
            raise AssetkitError(f"{refusal}; choose another with --name")
        for n in range(2, 10_000):
            candidate = f"{wanted}-{n}"
            if not reg._name_taken(candidate):
                return candidate
    return wanted


def _identity(probe_result: Any, kind: str | None, family: str | None) -> tuple[str, str | None, dict[str, Any]]:
    overrides: dict[str, Any] = {}
    final_kind, final_family = probe_result.kind, probe_result.family
    if kind is not None and kind != probe_result.kind:
        overrides["kind"] = {"given": kind, "probe": probe_result.kind}
        final_kind = kind
    if family is not None and family != probe_result.family:
        overrides["family"] = {"given": family, "probe": probe_result.family}
        final_family = family
    return final_kind, final_family, overrides


# ---------------------------------------------------------------------------------------------
# single files
# ---------------------------------------------------------------------------------------------
def _add_pickle(reg: Registry, p: Path, *, name: str | None, progress: Progress | None,
                config_dir: Path | None = None, **options: Any) -> AddResult:
    from ..convert import convert_file

    with reg.connection() as conn:
        pickle_hashes = file_hashes(conn, p, None)
    existing = reg._find_own(pickle_hashes.sha256, algos=("source_sha256",))
    if existing is not None and not reg._damaged(existing):
        return AddResult(existing, False, notes=["already registered (same pickle sha256)"])
    reg.tmp.mkdir(parents=True, exist_ok=True)
    converted = reg.tmp / f"{secrets.token_hex(8)}-{name_from_path(p)}.safetensors"
    try:
        report = convert_file(p, converted, keep_metadata=True, progress=progress, warn=lambda line: None)
        result = _add_file(reg, converted, name=name or name_from_path(p), progress=None, source=p, config_dir=config_dir,
                           source_format=report.source_format,
                           extra_hashes=[("source_sha256", report.source_sha256, p.name)], repair_of=existing,
                           **options)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(converted)
    if existing is not None:
        return result
    result.notes.append(f"pickle scanned and stored as safetensors ({report.tensors} tensors); its sha256 "
                        f"{report.source_sha256} is recorded")
    return result


def _tiles(asset: Any, data_start: int, size: int) -> bool:
    """Whether the tensors cover the data section exactly (then a recipe rebuilds the file)."""
    position = data_start
    for info in sorted(asset.tensors.values(), key=lambda i: (i.data_offset or 0)):
        if info.data_offset != position:
            return False
        position += info.nbytes
    return position == size


def _add_file(reg: Registry, p: Path, *, name: str | None, tags: tuple[str, ...], description: str,
              kind: str | None, family: str | None, progress: Progress | None, source: Path | None = None,
              source_format: str = "safetensors", extra_hashes: list[tuple[str, str, str]] | None = None,
              config_dir: Path | None = None, repair_of: AssetRecord | None = None) -> AddResult:
    from ..formats import open_asset
    from ..probe import probe

    shown = source or p
    data_start = safetensors_data_start(p)
    with reg.connection() as conn:
        hashes = file_hashes(conn, p, data_start, progress)
    existing = reg._find_own(hashes.sha256, algos=("sha256",))
    if existing is not None and source is None:
        if not reg._damaged(existing):
            return AddResult(existing, False, notes=["already registered (same sha256)"])
        repair_of = existing  # store everything again: the damaged blobs are replaced, nothing is indexed
    size = p.stat().st_size
    notes: list[str] = []
    with open_asset(p) as asset:
        result = probe(asset)
        final_kind, final_family, overrides = _identity(result, kind, family)
        relpath = shown.name if source is None else name_from_path(shown) + ".safetensors"
        hash_rows = [(algo, value, relpath) for algo, value in hashes.as_rows()] + list(extra_hashes or [])
        planned = _Planned(name=_unique_name(reg, name or name_from_path(shown), name is not None and repair_of is None),
                           kind=final_kind,
                           family=final_family, probe={**result.to_dict(), "dtypes": asset.dtype_counts()}, source_format=source_format, storage="whole",
                           sha256=hashes.sha256, size=size, files=[], hashes=hash_rows, blobs={},
                           description=description, overrides=overrides, variant=result.variant,
                           prediction_type=result.prediction_type, layout=result.layout, tags=tags,
                           explicit_name=name is not None)
        split = _plan_split(asset, family, config_dir) if result.kind in SPLITTABLE else None
        if split is None and result.kind in SPLITTABLE and (result.kind == "pipeline" or result.layout == "original"):
            notes.append(not_split_note(result.kind, final_family))
        if split is not None and (data_start is None or not _tiles(asset, data_start, size)):
            notes.append("stored whole as one blob: the file has bytes its header does not account for")
            split = None
        if split is not None:
            try:
                _store_split(reg, asset, p, planned, split, hashes, data_start, relpath, progress)
            except ValueError as exc:  # the plan does not tile the file: keep it whole (gc takes the rest)
                notes.append(f"stored whole as one blob: the split does not rebuild the file ({exc})")
                planned.components, planned.blobs, planned.storage = {}, {}, "whole"
        elif result.kind != "pipeline" and data_start is not None and _tiles(asset, data_start, size):
            with reg.lock.shared():
                cblob = store_canonical(reg.store, asset_tensors(asset), progress)
                same = cblob.sha256 == hashes.sha256  # the file is already in canonical form
                header_blob, header_size = (cblob.sha256, cblob.size) if same else _store_header(reg, p, data_start)
            placements = [(info.data_offset, Placement(cblob.sha256, cblob.offsets[tname][0], info.nbytes,
                                                       component=final_kind, tensor=tname))
                          for tname, info in asset.tensors.items()]
            recipe = make_recipe(size=size, sha256=hashes.sha256, header_blob=header_blob, header_len=data_start,
                                 placements=placements)
            planned.storage = "canonical"
            planned.canonical = cblob.sha256
            planned.files = [FileRecord(relpath, hashes.sha256, size, cblob.sha256, None) if same
                             else FileRecord(relpath, hashes.sha256, size, None, recipe)]
            planned.blobs = {cblob.sha256: cblob.size, header_blob: header_size}
            planned.fingerprint = _fingerprint(asset)
            planned.hashes.append(("canonical_sha256", cblob.sha256, ""))
        if planned.storage == "whole":
            with reg.lock.shared():
                blob = reg.store.put_file(p, expected_sha256=hashes.sha256)
            planned.files = [FileRecord(relpath, hashes.sha256, size, blob, None)]
            planned.blobs = {blob: size}
            planned.fingerprint = _fingerprint(asset) if result.kind != "pipeline" else None
    if repair_of is not None:
        return _repaired(reg, repair_of, "same sha256" if source is None else "same pickle sha256")
    record = reg._insert(planned)
    if planned.existing:
        return AddResult(record, False, notes=["already registered (added meanwhile by another process)"])
    return AddResult(record, True, notes=notes)


def _repaired(reg: Registry, record: AssetRecord, why: str) -> AddResult:
    """The result of adding again the bytes of ``record`` after some of its blobs were found missing
    or damaged: everything was stored again (a damaged blob is replaced, see :mod:`.blobs`)."""
    note = f"already registered ({why}); what of it was missing or damaged in the store is stored again"
    left = reg._damaged(record)
    if left:
        note += (f", but {len(left)} blob(s) are still missing or damaged (first: {left[0]}; run "
                 "`assetkit registry verify`)")
    return AddResult(record, False, notes=[note])


def not_split_note(kind: str, family: str | None) -> str:
    """What was not shared when the converter could not split an original-layout file (no config of
    the catalogue fits it), and how to have it split: ``add`` prints it, ``show`` repeats it."""
    configs = f"the catalogue's {family} configs" if family else "the catalogue's configs"
    if kind == "pipeline":
        what = ("stored whole as one blob: its UNet, VAE and text encoders are not shared with other pipelines "
                "or component files")
    else:
        what = (f"stored canonical in its original layout: not shared with the same {kind} inside a pipeline or "
                "a diffusers folder")
    return f"{what} (the converter cannot split it with {configs}); `--config DIR` (a diffusers folder " \
           "of its configs) lets it be split and shared"


def _store_header(reg: Registry, p: Path, data_start: int) -> tuple[str, int]:
    with open(p, "rb") as fh:
        header = fh.read(data_start)
    return reg.store.put_bytes(header), len(header)


def _fingerprint(asset: Any) -> str | None:
    try:
        return fingerprint((name, info.dtype, tuple(info.shape), lambda name=name: asset.tensor_bytes(name))
                           for name, info in asset.tensors.items())
    except (AssetkitError, ValueError, OSError):
        return None


# ---- splitting a full checkpoint (needs assetkit.convert.plan_single_file_to_diffusers) --------
def _plan_split(asset: Any, family: str | None, config_dir: Path | None = None) -> Any:
    """The converter's plan, or None when it does not know the file (or its shapes do not fit the
    configs): the file is then kept whole. With ``config_dir``, a refusal is the user's error."""
    try:
        from ..convert import plan_single_file_to_diffusers
    except ImportError:
        return None
    try:
        return plan_single_file_to_diffusers(asset, family=family, config_dir=config_dir)
    except AssetkitError:
        if config_dir is not None:
            raise
        return None


def _target_chunks(asset: Any, target: Any) -> Callable[[], Iterable[Any]]:
    """The bytes of one split target (:mod:`assetkit.convert.targets`), read from ``asset`` in place."""
    from ..convert.targets import part_in_memory, target_chunks

    return lambda: target_chunks(target, part_in_memory(asset))


def _store_split(reg: Registry, asset: Any, p: Path, planned: _Planned, split: Any, hashes: FileHashes,
                 data_start: int | None, relpath: str, progress: Progress | None) -> None:
    from ..formats.dtypes import DTYPES, nbytes_for

    size = planned.size
    placements: list[tuple[int, Placement]] = []
    with reg.lock.shared():
        for role, comp in split.components.items():
            files: list[FileRecord] = []
            blobs: dict[str, int] = {}
            cblob: CanonicalBlob | None = None
            if comp.tensors:
                tensors = [CanonicalTensor(t.name, t.dtype, tuple(t.shape), nbytes_for(t.dtype, _numel(t.shape)),
                                           _target_chunks(asset, t)) for t in comp.tensors]
                cblob = store_canonical(reg.store, tensors, progress)
                blobs[cblob.sha256] = cblob.size
                planned.blobs[cblob.sha256] = cblob.size  # the recipe of the file reads it too
                weights = DIFFUSERS_WEIGHTS if getattr(comp, "library", "diffusers") == "diffusers" \
                    else TRANSFORMERS_WEIGHTS
                files.append(FileRecord(weights, cblob.sha256, cblob.size, cblob.sha256, None))
                for t in comp.tensors:
                    t_offset = cblob.offsets[t.name][0]
                    if t.transform == "transpose":
                        (part,) = t.parts
                        info = asset.tensors[part.source]
                        placements.append((info.data_offset + part.start, Placement(
                            cblob.sha256, t_offset, part.stop - part.start, role, t.name, "transpose",
                            tuple(t.shape), DTYPES[t.dtype].itemsize)))
                        continue
                    position = 0
                    for part in t.parts:
                        info = asset.tensors[part.source]
                        length = part.stop - part.start
                        placements.append((info.data_offset + part.start,
                                           Placement(cblob.sha256, t_offset + position, length, role, t.name)))
                        position += length
            if comp.config is not None:
                files.append(_small_file(reg, "config.json", json.dumps(comp.config, indent=2, sort_keys=True).encode(),
                                         blobs))
            for fname, data in sorted(comp.files.items()):
                files.append(_small_file(reg, fname, data, blobs))
            fp = _fingerprint_targets(asset, comp.tensors) if comp.tensors else None
            planned.components[role] = _component_plan(planned, role, files, blobs, cblob, None, fp)
            planned.components[role].probe["dtypes"] = _count(t.dtype for t in comp.tensors)
        if split.extras:
            extra = store_canonical(reg.store, asset_tensors(asset, list(split.extras)), progress)
            planned.blobs[extra.sha256] = extra.size
            for tname in split.extras:
                info = asset.tensors[tname]
                placements.append((info.data_offset, Placement(extra.sha256, extra.offsets[tname][0], info.nbytes,
                                                               "extras", tname)))
        header_blob, header_size = _store_header(reg, p, data_start or 0)
        index = _small_file(reg, "model_index.json", json.dumps(split.model_index, indent=2).encode(), planned.blobs) \
            if split.model_index else None
    planned.blobs[header_blob] = header_size
    recipe = make_recipe(size=size, sha256=hashes.sha256, header_blob=header_blob, header_len=data_start or 0,
                         placements=placements)
    planned.storage = "components"
    planned.files = [FileRecord(relpath, hashes.sha256, size, None, recipe)]
    if planned.kind != "pipeline" and len(planned.components) == 1:  # a VAE/UNet file: its one component
        (only,) = planned.components.values()
        planned.canonical, planned.fingerprint = only.canonical, only.fingerprint
    planned.probe["registry"] = {"model_index_blob": index.blob if index else None, "pipeline_class": split.pipeline_class,
                                 "extras": list(split.extras)}


def _fingerprint_targets(asset: Any, targets: Iterable[Any]) -> str | None:
    def get(target: Any) -> Any:
        if target.transform is None and len(target.parts) == 1:  # a view: only the sampled pages are read
            part = target.parts[0]
            return memoryview(asset.tensor_bytes(part.source)).cast("B")[part.start:part.stop]
        return b"".join(bytes(chunk) for chunk in _target_chunks(asset, target)())

    try:
        return fingerprint((t.name, t.dtype, tuple(t.shape), lambda t=t: get(t)) for t in targets)
    except (AssetkitError, ValueError, OSError):
        return None


def _count(values: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return dict(sorted(counts.items()))


def _numel(shape: Iterable[int]) -> int:
    n = 1
    for dim in shape:
        n *= dim
    return n


def _small_file(reg: Registry, relpath: str, data: bytes, blobs: dict[str, int]) -> FileRecord:
    sha = reg.store.put_bytes(data)
    blobs[sha] = len(data)
    return FileRecord(relpath, sha, len(data), sha, None)


def _content_key(files: list[FileRecord]) -> str:
    lines = "".join(f"{f.relpath}\0{f.sha256}\n" for f in sorted(files, key=lambda f: f.relpath))
    return hashlib.sha256(lines.encode()).hexdigest()


def _component_plan(parent: _Planned, role: str, files: list[FileRecord], blobs: dict[str, int],
                    cblob: CanonicalBlob | None, probe_component: Any, fp: str | None = None,
                    hashes: list[tuple[str, str, str]] | None = None) -> _Planned:
    comp_kind = probe_component.kind if probe_component is not None else _role_kind(role)
    comp_family = (probe_component.family if probe_component is not None else None) or parent.family
    hash_rows = list(hashes or [])
    if cblob is not None:
        hash_rows.append(("canonical_sha256", cblob.sha256, ""))
    key = _content_key(files)
    return _Planned(name=f"{parent.name}.{role}", kind=comp_kind, family=comp_family,
                    probe=probe_component.to_dict() if probe_component is not None else {},
                    source_format=parent.source_format, storage="files", sha256=key,
                    size=sum(f.size for f in files), files=files, hashes=hash_rows, blobs=blobs,
                    fingerprint=fp, canonical=cblob.sha256 if cblob else None, content_key=key, auto=True)


def _role_kind(role: str) -> str:
    for known in ("text_encoder", "unet", "vae", "transformer", "controlnet", "tokenizer", "scheduler"):
        if role.startswith(known):
            return known
    return role


# ---------------------------------------------------------------------------------------------
# folders
# ---------------------------------------------------------------------------------------------
def walk_files(root: Path, follow_root: Path | None = None) -> list[Path]:
    """Every regular file under ``root`` (sorted); symbolic links are followed only when they
    resolve inside ``follow_root`` (default: ``root`` itself). Hidden folders (``.cache``...) skipped."""
    limit = (follow_root or root).resolve()
    found: list[Path] = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and
                         (not (Path(folder) / d).is_symlink() or _inside(Path(folder) / d, limit)))
        for fname in sorted(files):
            path = Path(folder) / fname
            if path.is_symlink() and not _inside(path, limit):
                continue
            if path.is_file() and not fname.startswith("."):
                found.append(path)
    return found


def _inside(path: Path, limit: Path) -> bool:
    try:
        path.resolve().relative_to(limit)
    except (ValueError, OSError):
        return False
    return True


def _add_folder(reg: Registry, root: Path, *, name: str | None, tags: tuple[str, ...], description: str,
                kind: str | None, family: str | None, progress: Progress | None,
                follow_root: Path | None = None) -> AddResult:
    from ..formats import open_asset, sniff_path
    from ..probe import probe

    files = walk_files(root, follow_root)
    if not files:
        raise UnsupportedFormatError("empty folder", where=str(root))
    all_hashes: dict[Path, FileHashes] = {}
    with reg.connection() as conn:
        for path in files:
            all_hashes[path] = file_hashes(conn, path, safetensors_data_start(path)
                                           if path.suffix == ".safetensors" else None, progress)
    folder_sha = hashlib.sha256("".join(
        f"{path.relative_to(root).as_posix()}\0{all_hashes[path].sha256}\n" for path in files).encode()).hexdigest()
    existing = reg._find_own(folder_sha, algos=("sha256",))
    if existing is not None and not reg._damaged(existing):
        return AddResult(existing, False, notes=["already registered (same files)"])
    notes: list[str] = []
    with open_asset(root) as asset:
        result = probe(asset)
        final_kind, final_family, overrides = _identity(result, kind, family)
        planned = _Planned(name=_unique_name(reg, name or name_from_path(root), name is not None and existing is None),
                           kind=final_kind,
                           family=final_family, probe=result.to_dict(), source_format="diffusers", storage="files",
                           sha256=folder_sha, size=sum(f.stat().st_size for f in files),
                           files=[], hashes=[("sha256", folder_sha, "")], blobs={}, description=description,
                           overrides=overrides, variant=result.variant, prediction_type=result.prediction_type,
                           layout=result.layout, tags=tags, explicit_name=name is not None)
        if asset.format == "diffusers":
            planned.storage = "components"
            roles = {role: comp for role, comp in asset.components.items()}
            taken: set[Path] = set()
            for role, comp_asset in roles.items():
                sub = root / role
                role_files = [f for f in files if sub in f.parents]
                taken.update(role_files)
                files_, blobs, cblob, fp, rows, more = _store_component(reg, sub, role_files, comp_asset, all_hashes,
                                                                        progress, sniff_path)
                notes.extend(f"{role}: {n}" for n in more)
                planned.components[role] = _component_plan(planned, role, files_, blobs, cblob,
                                                           result.components.get(role), fp, rows)
                planned.components[role].probe["dtypes"] = comp_asset.dtype_counts()
            rest = [f for f in files if f not in taken]
            files_, blobs, _, _, _, more = _store_component(reg, root, rest, None, all_hashes, progress, sniff_path)
            notes.extend(more)
            planned.files, planned.blobs = files_, blobs
        else:
            files_, blobs, cblob, fp, rows, more = _store_component(reg, root, files, asset, all_hashes, progress,
                                                                    sniff_path)
            notes.extend(more)
            planned.files, planned.blobs, planned.fingerprint = files_, blobs, fp
            planned.hashes.extend(rows)
            if cblob is not None:
                planned.canonical = cblob.sha256
                planned.storage = "canonical"
                planned.hashes.append(("canonical_sha256", cblob.sha256, ""))
    if existing is not None:
        return _repaired(reg, existing, "same files")
    record = reg._insert(planned)
    if planned.existing:
        return AddResult(record, False, notes=["already registered (added meanwhile by another process)"])
    reused = [role for role, comp in planned.components.items() if comp.reused]
    return AddResult(record, True, notes=notes, components_reused=reused)


def _store_component(reg: Registry, folder: Path, paths: list[Path], comp_asset: Any,
                     all_hashes: dict[Path, FileHashes], progress: Progress | None, sniff_path: Any
                     ) -> tuple[list[FileRecord], dict[str, int], CanonicalBlob | None, str | None,
                                list[tuple[str, str, str]], list[str]]:
    """Store the files of one component folder: its weights as a canonical blob plus a recipe per
    safetensors weight file, everything else as whole blobs (pickles are never stored)."""
    from ..formats.diffusers_folder import is_index_file

    records: list[FileRecord] = []
    blobs: dict[str, int] = {}
    rows: list[tuple[str, str, str]] = []
    notes: list[str] = []
    cblob: CanonicalBlob | None = None
    fp: str | None = None
    weight_files = {Path(f) for f in (comp_asset.files if comp_asset is not None else [])}
    has_tensors = comp_asset is not None and bool(comp_asset.tensors)
    pickled = any(sniff_path(f) in _PICKLE_KINDS for f in weight_files if not is_index_file(f.name))
    with reg.lock.shared():
        if has_tensors:
            if pickled:
                from ..check.scan import scan_path

                for f in weight_files:
                    if not is_index_file(f.name) and sniff_path(f) in _PICKLE_KINDS:
                        scan = scan_path(f)
                        if not scan.safe:
                            from ..errors import UnsafeInputError

                            raise UnsafeInputError(f"refusing to add: the pickle is {scan.verdict}", where=str(f),
                                                   findings=scan.findings)
            cblob = store_canonical(reg.store, asset_tensors(comp_asset), progress)
            blobs[cblob.sha256] = cblob.size
            fp = _fingerprint(comp_asset)
        if pickled and cblob is not None:
            lib = TRANSFORMERS_WEIGHTS if any(f.name.startswith("pytorch_model") for f in weight_files) \
                else DIFFUSERS_WEIGHTS
            records.append(FileRecord(lib, cblob.sha256, cblob.size, cblob.sha256, None))
            for f in weight_files:
                rows.append(("source_sha256", all_hashes[f].sha256, f.relative_to(folder).as_posix()))
            notes.append(f"pickle weights stored as {lib} (their sha256 recorded)")
        for path in paths:
            rel = path.relative_to(folder).as_posix()
            hashes = all_hashes[path]
            size = path.stat().st_size
            if path in weight_files and pickled:
                continue
            if path in weight_files and cblob is not None and not is_index_file(path.name):
                data_start = safetensors_data_start(path)
                tensors = {n: i for n, i in comp_asset.tensors.items() if Path(i.file) == path}
                if data_start is not None and _tiles(_Tensors(tensors), data_start, size):
                    header_blob, header_size = _store_header(reg, path, data_start)
                    blobs[header_blob] = header_size
                    placements = [(info.data_offset, Placement(cblob.sha256, cblob.offsets[n][0], info.nbytes,
                                                               folder.name, n)) for n, info in tensors.items()]
                    recipe = make_recipe(size=size, sha256=hashes.sha256, header_blob=header_blob,
                                         header_len=data_start, placements=placements)
                    records.append(FileRecord(rel, hashes.sha256, size, None, recipe))
                    rows.extend((algo, value, rel) for algo, value in hashes.as_rows())
                    continue
            if sniff_path(path) in _PICKLE_KINDS:
                notes.append(f"{rel}: a pickle outside the weights read; not stored (add it on its own)")
                continue
            blob = reg.store.put_file(path, expected_sha256=hashes.sha256)
            blobs[blob] = size
            records.append(FileRecord(rel, hashes.sha256, size, blob, None))
            if path.suffix == ".safetensors":
                rows.extend((algo, value, rel) for algo, value in hashes.as_rows())
    return records, blobs, cblob, fp, rows, notes


class _Tensors:
    def __init__(self, tensors: dict[str, Any]) -> None:
        self.tensors = tensors
