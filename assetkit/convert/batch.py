"""Many conversions at once: a folder tree of checkpoints, or the precision variant of a diffusers folder.

Both return a :class:`BatchReport`: one :class:`BatchItem` per file (converted, unsafe, failed
or skipped) and a summary. A failure of one file never stops the others; the caller turns
``report.ok`` into the exit code.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import (
    AssetkitError,
    IncompleteInputError,
    OutputExistsError,
    UnsafeInputError,
)
from ..findings import capped
from ..formats.dtypes import VARIANT_DTYPES
from ..formats.sniff import PICKLE_SUFFIXES as _PICKLE_SUFFIXES
from .options import ConvertOptions
from .to_safetensors import ConvertReport, ProgressCallback, convert_file, resolve_dtype

#: Files a folder conversion picks up (pickle checkpoints); ``.safetensors`` only with a transformation.
PICKLE_SUFFIXES = _PICKLE_SUFFIXES


@dataclass
class BatchItem:
    """The outcome for one file: ``converted``, ``unsafe``, ``failed`` or ``skipped``."""

    src: Path
    dst: Path | None
    status: str
    error: str | None = None
    report: ConvertReport | None = None
    findings: list = field(default_factory=list)
    hygiene: Any = None  #: the :class:`~assetkit.convert.hygiene.HygienePlan` applied (--prune, --ema...)

    @property
    def nbytes(self) -> int:
        return self.report.bytes if self.report else 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"src": str(self.src), "dst": str(self.dst) if self.dst else None,
                               "status": self.status, "error": self.error}
        if self.report is not None:
            out["report"] = self.report.to_dict()
        if self.findings:
            out["findings"] = [f.to_dict() for f in self.findings]
        if self.hygiene is not None:
            out["hygiene"] = self.hygiene.to_dict()
        return out


@dataclass
class BatchReport:
    """Every file's outcome plus totals; ``ok`` is false when any file was unsafe or failed."""

    items: list[BatchItem] = field(default_factory=list)
    seconds: float = 0.0
    extra_files: list[Path] = field(default_factory=list)  #: index files written (variants)

    @property
    def ok(self) -> bool:
        """No file unsafe or failed, and at least one file: a batch with nothing to convert is not a
        success (exit 1, as ``scan`` of a folder with no checkpoint)."""
        return bool(self.items) and all(item.status in ("converted", "skipped") for item in self.items)

    def summary(self) -> dict[str, Any]:
        counts = Counter(item.status for item in self.items)
        return {
            "files": len(self.items),
            "converted": counts.get("converted", 0),
            "unsafe": counts.get("unsafe", 0),
            "failed": counts.get("failed", 0),
            "skipped": counts.get("skipped", 0),
            "bytes": sum(item.nbytes for item in self.items),
            "seconds": round(self.seconds, 3),
            "ok": self.ok,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"results": [item.to_dict() for item in self.items],
                "index_files": [str(p) for p in self.extra_files], "summary": self.summary()}


def _convert_one(src: Path, dst: Path, options: ConvertOptions, progress: ProgressCallback | None,
                 hygiene: Mapping[str, bool] | None = None) -> BatchItem:
    """Run one conversion, turning every expected failure into an item instead of an exception.
    ``hygiene`` (``prune``, ``keep_ema``, ``ema``, ``fix_position_ids``) is applied to the file as
    :func:`~assetkit.convert.hygiene.hygiene_edit` says."""

    def reason(exc: AssetkitError) -> str:
        # The item already names its source: repeat a location only when it says something new.
        return exc.message if exc.where in (None, str(src)) else str(exc)

    plan = None
    try:
        with contextlib.ExitStack() as stack:
            edit = None
            if hygiene and any(hygiene.values()):
                from .hygiene import hygiene_edit

                edit, plan = stack.enter_context(hygiene_edit(src, **hygiene))
            report = convert_file(src, dst, progress=progress, options=options, edit=edit)
    except UnsafeInputError as exc:
        return BatchItem(src, dst, "unsafe", error=reason(exc), findings=list(exc.findings))
    except OutputExistsError:
        # A re-run of a batch: what is there already was converted before.
        return BatchItem(src, dst, "skipped", error="output exists (--overwrite replaces it)")
    except AssetkitError as exc:
        return BatchItem(src, dst, "failed", error=reason(exc))
    except OSError as exc:
        return BatchItem(src, dst, "failed", error=f"{exc.filename or src}: {exc.strerror or exc}")
    return BatchItem(src, dst, "converted", report=report, hygiene=plan)


def _tensor_bytes(item: BatchItem) -> int:
    """Tensor data bytes of an item's output: from its report, or (skipped: written before) its header."""
    if item.report is not None:
        return item.report.bytes
    from ..formats.safetensors import read_safetensors

    assert item.dst is not None
    with read_safetensors(item.dst) as asset:
        return sum(info.nbytes for info in asset.tensors.values())


def find_checkpoints(root: Path, *, include_safetensors: bool = False) -> list[Path]:
    """Checkpoint files under ``root``, recursively, sorted (hidden files and folders skipped)."""
    suffixes = PICKLE_SUFFIXES + ((".safetensors",) if include_safetensors else ())
    found: list[Path] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and name.lower().endswith(suffixes):
                found.append(Path(folder) / name)
    return found


def _make_folders(folder: Path) -> list[Path]:
    """``mkdir -p folder``; returns the folders created, outermost first."""
    missing: list[Path] = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        new.mkdir(exist_ok=True)
    return list(reversed(missing))


def convert_tree(src_root: str | os.PathLike[str], dst_root: str | os.PathLike[str], *,
                 on_start: Callable[[int], None] | None = None, progress: ProgressCallback | None = None,
                 options: ConvertOptions | None = None, hygiene: Mapping[str, bool] | None = None,
                 **settings: Any) -> BatchReport:
    """Convert every checkpoint under ``src_root`` to ``dst_root``, keeping relative paths.

    ``a/b.ckpt`` becomes ``dst_root/a/b.safetensors``. ``.safetensors`` inputs are included when
    a transformation (``dtype``, ``only``, ``strip_prefix``, ``state_dict_key``, or a ``hygiene``
    edit: ``prune``, ``keep_ema``, ``ema``, ``fix_position_ids``) is asked for; the hygiene edit is
    applied to every file (``ema`` on a file without EMA weights fails that file).
    ``on_start(total_source_bytes)`` is called once before the first file (for a progress bar).
    ``options`` (:class:`ConvertOptions`), or ``convert_file``'s keyword arguments, say how.
    """
    options = options or ConvertOptions.from_kwargs(**settings)
    started = time.perf_counter()
    src_root, dst_root = Path(src_root), Path(dst_root)
    if not src_root.is_dir():
        raise AssetkitError("not a folder", where=str(src_root))
    if dst_root.exists() and not dst_root.is_dir():
        raise AssetkitError("output must be a folder when the input is a folder", where=str(dst_root))
    if dst_root.resolve() == src_root.resolve():
        raise AssetkitError("output folder is the input folder: choose another one", where=str(dst_root))
    if hygiene:
        from .hygiene import check_hygiene_options

        check_hygiene_options(**hygiene)  # once for the batch, not once per file
    edits = bool(hygiene and any(hygiene.values()))
    sources = [p for p in find_checkpoints(src_root, include_safetensors=options.transforms or edits)
               if dst_root.resolve() not in p.resolve().parents]
    if on_start is not None:
        on_start(sum(p.stat().st_size for p in sources))
    report = BatchReport()
    taken: dict[Path, Path] = {}
    created: list[Path] = []
    for src in sources:
        dst = dst_root / src.relative_to(src_root).with_suffix(".safetensors")
        if dst in taken:
            report.items.append(BatchItem(src, dst, "failed",
                                          error=f"{dst}: also the output of {taken[dst]}; rename one of them"))
            continue
        taken[dst] = src
        try:
            created.extend(_make_folders(dst.parent))
        except OSError as exc:
            report.items.append(BatchItem(src, dst, "failed", error=f"{dst.parent}: {exc.strerror or exc}"))
            continue
        report.items.append(_convert_one(src, dst, options, progress, hygiene))
    for folder in reversed(created):  # folders made for outputs that failed: no empty folders left
        with contextlib.suppress(OSError):
            folder.rmdir()
    report.seconds = time.perf_counter() - started
    return report


# ---------------------------------------------------------------------------------------------
# diffusers precision variants
# ---------------------------------------------------------------------------------------------
def variant_name(file_name: str, variant: str) -> str | None:
    """The name diffusers/transformers give ``file_name``'s ``variant`` (always ``.safetensors``).

    None when ``file_name`` already is a variant file (``model.fp16.safetensors``).

    ``diffusion_pytorch_model.safetensors`` -> ``diffusion_pytorch_model.fp16.safetensors``;
    ``model-00001-of-00002.safetensors`` -> ``model.fp16-00001-of-00002.safetensors``;
    ``pytorch_model.bin`` -> ``model.fp16.safetensors`` (the name transformers looks for).
    """
    stem = file_name.rsplit(".", 1)[0]
    if "." in stem:
        return None
    if stem.startswith("pytorch_model"):
        stem = "model" + stem[len("pytorch_model"):]
    base, dash, shard = stem.partition("-")
    return f"{base}.{variant}{dash}{shard}.safetensors"


def variant_index_name(index_name: str, variant: str) -> str:
    """``X.safetensors.index.json`` / ``X.bin.index.json`` -> ``X.safetensors.index.<variant>.json``."""
    base = index_name.split(".", 1)[0]
    if base == "pytorch_model":
        base = "model"
    return f"{base}.safetensors.index.{variant}.json"


def convert_variant_folder(folder: str | os.PathLike[str], variant: str, *, dtype: str | None = None,
                           overwrite: bool = False, verify: bool = True,
                           on_start: Callable[[int], None] | None = None,
                           progress: ProgressCallback | None = None) -> BatchReport:
    """Write ``*.<variant>.safetensors`` beside each component's plain weights, as diffusers expects.

    ``dtype`` defaults to the variant name (``fp16``, ``bf16``, ``fp32``). Sharded weights get
    variant shards and a variant index (``*.safetensors.index.<variant>.json``) with the
    updated ``weight_map`` and ``total_size``.
    """
    from ..formats.atomic import atomic_write
    from ..formats.diffusers_folder import is_index_file, load_json, read_diffusers_folder, shard_files

    started = time.perf_counter()
    root = Path(folder)
    if not variant or not variant.replace("_", "").isalnum():
        raise AssetkitError(f"invalid variant name {variant!r}: use letters, digits and _ (e.g. fp16)")
    named = VARIANT_DTYPES.get(variant)
    target = resolve_dtype(dtype) if dtype else named
    if target is None:
        raise AssetkitError(f"variant {variant!r} does not name a dtype: add --dtype fp16|bf16|fp32")
    if named is not None and target != named:
        raise AssetkitError(f"--variant {variant} names {named} files; --dtype {dtype} would write {target} data "
                            f"into them: drop --dtype or choose --variant {dtype}")
    pipeline = read_diffusers_folder(root)
    try:
        components = pipeline.components if pipeline.format == "diffusers" else {root.name: pipeline}
        jobs: list[tuple[Path, Path]] = []
        indexes: list[tuple[Path, Path]] = []
        skipped: list[BatchItem] = []
        missing: list[Path] = []
        for component in components.values():
            for file in component.files:
                if is_index_file(file.name):
                    if file.name.count(".") == 3:  # plain ``X.<ext>.index.json``; a variant index has one more part
                        indexes.append((file, file.parent / variant_index_name(file.name, variant)))
                        missing.extend(p for p in shard_files(file) if not p.is_file())
                    continue
                target_name = variant_name(file.name, variant)
                if target_name is None:
                    skipped.append(BatchItem(file, None, "skipped", error="already a variant file (no plain weights)"))
                else:
                    jobs.append((file, file.parent / target_name))
    finally:
        pipeline.close()
    if missing:
        # A variant with a shard left out would load nowhere: fail before writing anything.
        raise IncompleteInputError(
            f"{len(missing)} shard file(s) named by the index are missing: "
            f"{capped([str(p.relative_to(root)) for p in missing], 5)}; nothing was written", where=str(root))
    if not jobs and not skipped:
        raise IncompleteInputError("no component weights to convert", where=str(root))
    if on_start is not None:
        on_start(sum(src.stat().st_size for src, _ in jobs))
    report = BatchReport(items=skipped)
    options = ConvertOptions(dtype=target, overwrite=overwrite, verify=verify, keep_metadata=True)
    renamed: dict[str, str] = {}
    for src, dst in jobs:
        item = _convert_one(src, dst, options, progress)
        report.items.append(item)
        renamed[src.name] = dst.name
    for index, dst in indexes:
        if any(item.status not in ("converted", "skipped") for item in report.items if item.src.parent == index.parent):
            continue  # a shard failed: writing an index that points at it would only mislead
        if dst.exists() and not overwrite:
            report.items.append(BatchItem(index, dst, "skipped", error="output exists (--overwrite replaces it)"))
            continue
        document = load_json(index)
        weight_map = {name: renamed.get(shard, shard) for name, shard in document.get("weight_map", {}).items()}
        sizes = {item.dst.name: _tensor_bytes(item) for item in report.items
                 if item.dst is not None and item.src.parent == index.parent and item.status in ("converted", "skipped")}
        document["weight_map"] = weight_map
        document.setdefault("metadata", {})["total_size"] = sum(sizes.get(s, 0) for s in set(weight_map.values()))
        try:
            with atomic_write(dst, overwrite=overwrite) as fh:
                fh.write((json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8"))
        except AssetkitError as exc:
            report.items.append(BatchItem(index, dst, "failed", error=str(exc)))
            continue
        report.extra_files.append(dst)
    report.seconds = time.perf_counter() - started
    return report
