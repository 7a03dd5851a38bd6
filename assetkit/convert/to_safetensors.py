"""Pickle checkpoints (and safetensors files) to safetensors: streaming, exact, never executed.

How one conversion runs (:func:`convert_file`):

1. **Refuse code.** A pickle input is scanned first (:func:`assetkit.check.scan.scan_path`);
   an unsafe file raises :class:`UnsafeInputError` with the findings, unless ``salvage`` keeps
   its tensors only. Our reader interprets the pickle, it never runs it.
2. **Plan.** The tensor index of the source (headers only) is narrowed by ``state_dict_key``,
   ``only`` and ``strip_prefix``; tied weights (the very same view of one storage) are written
   once and their other names recorded in the metadata as ``{alias: kept_name}``, the way the
   Hub's ``convert.py`` and ``safetensors.torch.save_model`` record removed duplicates; the
   output header is fixed before a byte of data moves.
3. **Stream.** Tensors are copied in source order with ``pread`` into one reused 16 MiB buffer
   (:class:`~assetkit.formats.tensor_source.TensorSource`: no memory map for the copy, so touched
   pages never pile up in RSS); strided views and big-endian records are materialised one tensor
   at a time by :meth:`Asset.tensor_bytes`.
   ``dtype`` casts floating tensors chunk by chunk (:mod:`.dtype_cast`). Meanwhile a thread
   hashes the whole source file (sha256, recorded as provenance in the header).
4. **Verify** (default). The temporary output is re-read with the strict reader and every
   tensor's bytes compared with the source, read through an independent path (memory-mapped
   :func:`read_tensor_bytes`, cast again where a dtype changed); once the hash is known, the
   final header is checked again. Only then is the file fsynced and renamed into place; a
   failure raises :class:`VerificationError` and leaves nothing at ``dst``. A write-back
   thread pushes data to disk during the copy so that the final fsync is short.

Peak memory is about three chunks (16 MiB each) plus the largest *non-contiguous* tensor, never
the model.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import AssetkitError, FormatError, UnsafeInputError, UnsupportedFormatError, VerificationError
from ..findings import Finding, capped
from ..formats.base import Asset, TensorInfo, read_tensor_bytes
from ..formats.dtypes import CLI_DTYPES, DTYPES
from ..formats.sniff import PICKLE_SUFFIXES as _PICKLE_SUFFIXES
from ..formats.tensor_source import TensorSource, source_start
from .dtype_cast import cast_bytes, output_dtype
from .options import ConvertOptions

#: Source bytes cast per step (the cast result is a new array: keep it small).
CAST_CHUNK_BYTES = 4 * 1024 * 1024
#: Output names that torch.load / diffusers would take for a pickle: refused for a safetensors output.
PICKLE_SUFFIXES = frozenset(_PICKLE_SUFFIXES)
#: Metadata keys written by assetkit.
META_FORMAT = "format"
META_SOURCE_SHA256 = "assetkit.source_sha256"
META_SOURCE_NAME = "assetkit.source"
META_VERSION = "assetkit.version"
#: Placeholder of the final sha256 hex digest's length; the real value replaces it in place.
_SHA256_PLACEHOLDER = "0" * 64

ProgressCallback = Callable[[int], None]


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
@dataclass
class ConvertReport:
    """What one conversion did; :meth:`to_dict` is the ``--json`` form."""

    src: Path
    dst: Path
    source_format: str
    source_sha256: str = ""
    source_bytes: int = 0
    tensors: int = 0  #: tensors written
    bytes: int = 0  #: tensor data bytes written
    file_bytes: int = 0  #: size of the output file
    dtype_changes: dict[str, int] = field(default_factory=dict)  #: "F32->F16": count
    tied: dict[str, str] = field(default_factory=dict)  #: alias -> kept name (not written twice)
    materialized: list[str] = field(default_factory=list)  #: strided / big-endian tensors copied alone
    metadata: dict[str, str] = field(default_factory=dict)  #: the output's ``__metadata__``
    verified: bool = False
    salvaged: bool = False
    warnings: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)  #: scan findings (salvage) worth showing
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "src": str(self.src),
            "dst": str(self.dst),
            "source_format": self.source_format,
            "source_sha256": self.source_sha256,
            "source_bytes": self.source_bytes,
            "tensors": self.tensors,
            "bytes": self.bytes,
            "file_bytes": self.file_bytes,
            "dtype_changes": dict(self.dtype_changes),
            "tied": dict(self.tied),
            "materialized": list(self.materialized),
            "metadata": dict(self.metadata),
            "verified": self.verified,
            "salvaged": self.salvaged,
            "warnings": list(self.warnings),
            "findings": [f.to_dict() for f in self.findings],
            "seconds": round(self.seconds, 3),
        }


# ---------------------------------------------------------------------------------------------
# Plan
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlannedTensor:
    """One tensor of the output: its name there, where it comes from and its output dtype."""

    name: str
    info: TensorInfo
    dtype: str

    @property
    def cast(self) -> bool:
        return self.dtype != self.info.dtype

    @property
    def nbytes(self) -> int:
        return DTYPES[self.dtype].bits * self.info.numel // 8


@dataclass
class ConversionPlan:
    """The output, fixed before any data moves: tensors in write order, aliases, metadata."""

    tensors: list[PlannedTensor]
    tied: dict[str, str]
    metadata: dict[str, str]

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def specs(self) -> list:
        from ..formats.safetensors_writer import TensorSpec

        return [TensorSpec(t.name, t.dtype, tuple(t.info.shape)) for t in self.tensors]


def resolve_dtype(dtype: str | None) -> str | None:
    """``fp16``/``bf16``/``fp32`` (or a safetensors id ``F16``...) -> safetensors id; None stays None."""
    if dtype is None:
        return None
    wanted = CLI_DTYPES.get(dtype.lower()) or (dtype.upper() if dtype.upper() in ("F16", "BF16", "F32") else None)
    if wanted is None:
        raise AssetkitError(f"unknown --dtype {dtype!r}: use fp16, bf16 or fp32")
    return wanted


def _top_prefixes(names: list[str], limit: int = 8) -> str:
    counts = Counter(name.split(".", 1)[0] + ("." if "." in name else "") for name in names)
    shown = [f"{prefix} ({count})" for prefix, count in counts.most_common(limit)]
    return ", ".join(shown) + (", ..." if len(counts) > limit else "")


def select_tensors(asset: Asset, *, state_dict_key: str | None = None, only: str | None = None,
                   strip_prefix: str | None = None,
                   edit: Callable[[dict[str, TensorInfo]], dict[str, TensorInfo]] | None = None
                   ) -> dict[str, TensorInfo]:
    """Output name -> source tensor, after ``state_dict_key``, ``edit``, ``only`` and ``strip_prefix``.

    ``edit`` sees the whole checkpoint (after ``state_dict_key``), so that a hygiene edit can put
    the EMA copies in place of the model's weights before ``only`` picks a part of the model.

    Raises :class:`AssetkitError` (one line, naming what the file does hold) when a selection
    matches nothing or renaming makes two tensors collide.
    """
    where = str(asset.path)
    names = list(asset.tensors)
    if not names:
        raise AssetkitError("holds no tensors", where=where)
    selected: dict[str, TensorInfo] = {name: asset.tensors[name] for name in names}
    if state_dict_key and state_dict_key.rstrip(".") != asset.unwrapped_key:
        prefix = state_dict_key.rstrip(".") + "."
        selected = {name[len(prefix):]: info for name, info in selected.items() if name.startswith(prefix)}
        if not selected:
            keys = capped(asset.top_level_keys, 12) if asset.top_level_keys else _top_prefixes(names)
            raise AssetkitError(f"--state-dict-key {state_dict_key!r} matches no tensors; top-level keys: "
                                f"{keys}", where=where)
    if edit is not None:  # e.g. convert.hygiene: drop, rename, or point a tensor at replacement bytes
        selected = edit(selected)
    if only:
        pool = list(selected)
        selected = {name: info for name, info in selected.items() if name.startswith(only)}
        if not selected:
            raise AssetkitError(f"--only {only!r} matches no tensors; prefixes present: {_top_prefixes(pool)}",
                                where=where)
    if strip_prefix:
        pool = list(selected)
        if not any(name.startswith(strip_prefix) for name in pool):
            raise AssetkitError(f"--strip-prefix {strip_prefix!r} matches no tensors; prefixes present: "
                                f"{_top_prefixes(pool)}", where=where)
        renamed: dict[str, TensorInfo] = {}
        for name, info in selected.items():
            new_name = name[len(strip_prefix):] if name.startswith(strip_prefix) else name
            if not new_name:
                raise AssetkitError(f"--strip-prefix {strip_prefix!r} would leave tensor {name!r} without a name",
                                    where=where)
            if new_name in renamed:
                raise AssetkitError(f"--strip-prefix {strip_prefix!r} makes two tensors both named {new_name!r}",
                                    where=where)
            renamed[new_name] = info
        selected = renamed
    return selected


def plan_conversion(asset: Asset, *, dtype: str | None = None, state_dict_key: str | None = None,
                    only: str | None = None, strip_prefix: str | None = None,
                    metadata: dict[str, str] | None = None,
                    edit: Callable[[dict[str, TensorInfo]], dict[str, TensorInfo]] | None = None) -> ConversionPlan:
    """Fix the output: which tensors, in which order, with which dtype, names and metadata.

    Tensors that are the very same view of one storage (:attr:`TensorInfo.view_key`) are tied:
    the lexicographically first name is written, the others go to ``plan.tied`` and into the
    metadata as ``alias: kept_name`` (the Hub converter's convention). Different views of one
    storage stay separate tensors.
    """
    target = resolve_dtype(dtype)
    selected = select_tensors(asset, state_dict_key=state_dict_key, only=only, strip_prefix=strip_prefix, edit=edit)
    groups: dict[tuple, list[str]] = defaultdict(list)
    for name, info in selected.items():
        groups[info.view_key].append(name)
    tied: dict[str, str] = {}
    planned: list[PlannedTensor] = []
    for names in groups.values():
        kept, *aliases = sorted(names)
        for alias in aliases:
            tied[alias] = kept
        info = selected[kept]
        if info.data_offset is None:
            raise FormatError("tensor data is not stored in place (compressed zip record)", where=kept)
        planned.append(PlannedTensor(kept, info, output_dtype(info.dtype, target)))
    planned.sort(key=lambda t: (str(t.info.file), source_start(t.info), t.name))
    out_metadata = dict(metadata or {})
    for alias, kept in sorted(tied.items()):
        out_metadata.setdefault(alias, kept)
    return ConversionPlan(planned, tied, out_metadata)


def _cast_chunks(chunks: Iterator[memoryview], src_dtype: str, dst_dtype: str) -> Iterator[memoryview]:
    """Cast element-aligned chunks, in pieces of :data:`CAST_CHUNK_BYTES` to keep results small."""
    if src_dtype == dst_dtype:
        yield from chunks
        return
    step = max(1, CAST_CHUNK_BYTES // DTYPES[src_dtype].itemsize) * DTYPES[src_dtype].itemsize
    for chunk in chunks:
        for start in range(0, len(chunk), step):
            yield cast_bytes(chunk[start: start + step], src_dtype, dst_dtype)


# ---------------------------------------------------------------------------------------------
# Source hash (provenance), computed while the copy runs
# ---------------------------------------------------------------------------------------------
class _FileHasher(threading.Thread):
    """sha256 of a whole file in a background thread (hashlib and reads release the GIL)."""

    def __init__(self, path: Path, chunk_bytes: int = 8 * 1024 * 1024) -> None:
        super().__init__(name=f"sha256:{path.name}", daemon=True)
        self.path = path
        self.chunk_bytes = chunk_bytes
        self._digest: str | None = None
        self._error: BaseException | None = None
        self._stop_requested = threading.Event()

    def run(self) -> None:
        try:
            digest = hashlib.sha256()
            buffer = bytearray(self.chunk_bytes)
            view = memoryview(buffer)
            with open(self.path, "rb", buffering=0) as fh:
                while not self._stop_requested.is_set():
                    got = fh.readinto(buffer)
                    if not got:
                        break
                    digest.update(view[:got])
            self._digest = digest.hexdigest()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller in result()
            self._error = exc

    def stop(self) -> None:
        self._stop_requested.set()

    def result(self) -> str:
        self.join()
        if self._error is not None:
            if isinstance(self._error, OSError):
                raise AssetkitError(f"cannot read: {self._error.strerror or self._error}",
                                    where=str(self.path)) from None
            raise self._error
        if self._digest is None:
            raise AssetkitError("hashing was stopped", where=str(self.path))
        return self._digest


class _WriteBack(threading.Thread):
    """Push written data to disk while the conversion goes on, so the final fsync has little left.

    ``fdatasync`` works on the file, whatever descriptor calls it; this thread holds its own
    read-only one. Durability is still given by the writer's fsync before the rename.
    """

    def __init__(self, path: Path | None, interval: float = 0.25) -> None:
        super().__init__(name="write-back", daemon=True)
        self.path = path
        self.interval = interval
        self._stop_requested = threading.Event()

    def run(self) -> None:
        if self.path is None or not hasattr(os, "fdatasync"):
            return
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return
        try:
            while not self._stop_requested.wait(self.interval):
                os.fdatasync(fd)
        except OSError:  # an optimisation only: the writer's own fsync reports real problems
            pass
        finally:
            os.close(fd)

    def stop(self) -> None:
        self._stop_requested.set()
        if self.is_alive():
            self.join()


# ---------------------------------------------------------------------------------------------
# Opening and safety
# ---------------------------------------------------------------------------------------------
def open_source(src: Path, *, salvage: bool = False, report: ConvertReport | None = None) -> Asset:
    """Open a checkpoint file for conversion, refusing unsafe pickles unless ``salvage``.

    safetensors files go to the strict reader; anything else is scanned first. Unsupported
    containers (7z, TorchScript...) raise :class:`UnsupportedFormatError` (exit 2).
    """
    from ..formats import not_a_checkpoint_error, open_asset, reads_as_safetensors, require_file, sniff_path

    require_file(src, "a checkpoint file (or a diffusers folder with --variant)")
    kind = sniff_path(src)
    if not reads_as_safetensors(kind, src):
        if kind not in ("zip", "pickle"):
            raise not_a_checkpoint_error(kind, src)  # the same line (and exit 2) as inspect and validate
        _check_safety(src, salvage=salvage, report=report)
    asset = open_asset(src)
    if asset.format not in ("safetensors", "torch-zip", "torch-legacy"):
        asset.close()
        raise UnsupportedFormatError(f"cannot convert a {asset.format} asset as one file", where=str(src))
    return asset


def _check_safety(src: Path, *, salvage: bool, report: ConvertReport | None) -> None:
    from ..check.scan import scan_path

    result = scan_path(src)
    failing = [f for f in result.findings if f.failing]
    if result.verdict == "safe":
        return
    unsupported = [f for f in result.findings if f.code.startswith(("unsupported", "not-a-checkpoint"))]
    if result.verdict == "unsupported" or unsupported:
        # TorchScript archives are code as well as weights: not a checkpoint to convert (nor salvage).
        reason = (unsupported or failing or [None])[0]
        message = reason.message if reason else "not a checkpoint format assetkit reads"
        raise UnsupportedFormatError(f"unsupported input: {message}", where=str(src))
    if result.verdict == "error":
        reason = failing[0].message if failing else "cannot be read"
        raise FormatError(reason, where=str(src), code=failing[0].code if failing else "scan-error")
    # unsafe
    if not salvage:
        names = ", ".join(sorted({f.message if len(f.message) < 60 else f.code for f in failing})[:3])
        raise UnsafeInputError(
            f"refusing to convert: the pickle holds {len(failing)} unsafe item(s) ({names}); "
            "--salvage keeps its tensors only", where=str(src), findings=result.findings)
    if report is not None:
        report.salvaged = True
        report.findings = list(result.findings)
        report.warnings.append(
            f"SALVAGE: {src.name} is unsafe ({len(failing)} unsafe item(s)); nothing was executed and only "
            "its tensors are kept, every other object is dropped")


# ---------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------
def _plain_metadata(asset: Asset) -> dict[str, str]:
    """Plain values (``global_step``, ``epoch``...) of the source as strings."""
    carried: dict[str, str] = {}
    for key, value in asset.metadata.items():
        if isinstance(value, bool | int | float | str) and isinstance(key, str):
            carried[key] = value if isinstance(value, str) else str(value)
    return carried


def carries_metadata_by_default(asset: Asset, *, only: str | None, strip_prefix: str | None,
                                state_dict_key: str | None) -> bool:
    """A whole safetensors file keeps its ``__metadata__`` (ModelSpec, kohya ``ss_*``...) through a
    conversion such as a dtype change; an extract (``--only``...) would contradict it, so it keeps
    it only with ``--keep-metadata``, as pickles do."""
    return asset.format == "safetensors" and not (only or strip_prefix or state_dict_key)


def build_metadata(asset: Asset, src: Path, *, keep_metadata: bool, salvaged: bool,
                   extra: dict[str, str] | None) -> dict[str, str]:
    """The output ``__metadata__``: carried values, then ``format: pt`` and provenance, then ``extra``."""
    metadata: dict[str, str] = {}
    if keep_metadata and not salvaged:
        metadata.update(_plain_metadata(asset))
    metadata[META_FORMAT] = "pt"
    metadata[META_SOURCE_NAME] = src.name
    metadata[META_VERSION] = __version__
    metadata[META_SOURCE_SHA256] = _SHA256_PLACEHOLDER
    for key, value in (extra or {}).items():
        if key == META_SOURCE_SHA256:
            raise AssetkitError(f"metadata key {key!r} is set by assetkit")
        metadata[key] = value
    return metadata


def convert_file(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, dtype: str | None = None,
                 only: str | None = None, strip_prefix: str | None = None, state_dict_key: str | None = None,
                 keep_metadata: bool = False, metadata: dict[str, str] | None = None, salvage: bool = False,
                 verify: bool = True, overwrite: bool = False, progress: ProgressCallback | None = None,
                 warn: Callable[[str], None] | None = None,
                 on_start: Callable[[int], None] | None = None,
                 options: ConvertOptions | None = None,
                 edit: Callable[[dict[str, TensorInfo]], dict[str, TensorInfo]] | None = None) -> ConvertReport:
    """Convert one checkpoint (torch zip, legacy torch, or safetensors) to a safetensors file.

    See the module docstring for the steps. ``dtype`` is ``fp16``/``bf16``/``fp32`` (floating
    tensors only); ``metadata`` adds or overrides header entries; ``progress(n)`` is called with
    the number of bytes just written, after ``on_start(total_bytes_to_write)`` once the output is
    planned; ``warn(line)`` receives salvage warnings (default: stderr).
    Raises :class:`UnsafeInputError` (exit 1), :class:`VerificationError` (exit 1),
    :class:`OutputExistsError`, :class:`UnsupportedFormatError` and other :class:`AssetkitError`
    (exit 2). Nothing is ever left at ``dst`` unless the conversion succeeded.

    ``options`` (:class:`ConvertOptions`) replaces the keyword arguments ``dtype`` to
    ``overwrite`` when given (batches build it once and pass it to every file).
    """
    if options is None:
        options = ConvertOptions(dtype=dtype, only=only, strip_prefix=strip_prefix, state_dict_key=state_dict_key,
                                 keep_metadata=keep_metadata, metadata=metadata or {}, salvage=salvage,
                                 verify=verify, overwrite=overwrite)
    return _convert(Path(src), Path(dst), options, progress=progress, warn=warn, on_start=on_start, edit=edit)


def _convert(src: Path, dst: Path, options: ConvertOptions, *, progress: ProgressCallback | None,
             warn: Callable[[str], None] | None, on_start: Callable[[int], None] | None,
             edit: Callable[[dict[str, TensorInfo]], dict[str, TensorInfo]] | None = None) -> ConvertReport:
    """:func:`convert_file` with its options object: open and scan, plan, stream, verify."""
    from ..formats.atomic import check_destination
    from ..formats.safetensors_writer import SafetensorsWriter

    started = time.perf_counter()
    report = ConvertReport(src=src, dst=dst, source_format="?")
    if src.exists() and dst.exists() and src.resolve() == dst.resolve():
        raise AssetkitError("output is the input file: choose another output path", where=str(dst))
    if dst.suffix.lower() in PICKLE_SUFFIXES:
        raise AssetkitError(f"output name ends in {dst.suffix}, which loaders open as a pickle; "
                            "give it a .safetensors name", where=str(dst))
    if dst.is_dir():
        raise AssetkitError("output is an existing folder: give a file name (e.g. "
                            f"{dst / src.with_suffix('.safetensors').name})", where=str(dst))
    # An unsafe or unreadable source is the news; "output exists" only after it (nothing written either way).
    asset = open_source(src, salvage=options.salvage, report=report)
    try:
        check_destination(dst, options.overwrite)
    except BaseException:
        asset.close()
        raise
    for line in report.warnings:
        (warn or _warn_stderr)(line)
    source = TensorSource()
    hasher = _FileHasher(src)
    try:
        report.source_format = asset.format
        report.source_bytes = src.stat().st_size
        plan = plan_conversion(
            asset, dtype=options.dtype, state_dict_key=options.state_dict_key, only=options.only,
            strip_prefix=options.strip_prefix,
            metadata=build_metadata(asset, src, keep_metadata=options.keep_metadata or carries_metadata_by_default(
                asset, only=options.only, strip_prefix=options.strip_prefix, state_dict_key=options.state_dict_key),
                salvaged=report.salvaged, extra=dict(options.metadata)), edit=edit)
        hasher.start()
        if on_start is not None:
            on_start(plan.nbytes)
        with SafetensorsWriter(dst, plan.specs(), plan.metadata, overwrite=options.overwrite) as writer:
            # The sha256 thread, the copy and the disk write-back run side by side; only the header's
            # digest waits for the hash, and it has the placeholder's length, so offsets never move.
            flusher = _WriteBack(writer.temp_path)
            flusher.start()
            try:
                for tensor in plan.tensors:
                    if not source.is_direct(tensor.info) and tensor.info.numel:
                        report.materialized.append(tensor.name)
                    for chunk in _cast_chunks(source.copy_chunks(tensor.info), tensor.info.dtype, tensor.dtype):
                        writer.write(chunk)
                        if progress is not None:
                            progress(len(chunk))
                writer.flush()  # everything written reaches the OS before it is re-read
                if options.verify:
                    verify_data(writer.temp_path, plan, source)
                plan.metadata[META_SOURCE_SHA256] = hasher.result()
                writer.replace_metadata(plan.metadata)
                if options.verify:
                    verify_header(writer.temp_path, plan)
                    report.verified = True
            finally:
                flusher.stop()
            report.file_bytes = len(writer.header) + writer.total_bytes
    finally:
        hasher.stop()
        source.close()
        asset.close()
    report.source_sha256 = plan.metadata[META_SOURCE_SHA256]
    report.tensors = len(plan.tensors)
    report.bytes = plan.nbytes
    report.tied = dict(plan.tied)
    report.metadata = dict(plan.metadata)
    changes = Counter(f"{t.info.dtype}->{t.dtype}" for t in plan.tensors if t.cast)
    report.dtype_changes = dict(sorted(changes.items()))
    report.seconds = time.perf_counter() - started
    return report


def _warn_stderr(line: str) -> None:
    print(f"assetkit: warning: {line}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------------
def verify_data(path: Path, plan: ConversionPlan, source: TensorSource) -> None:
    """Re-read ``path`` strictly and compare every tensor, byte for byte, with the source.

    The source side is read through :func:`read_tensor_bytes` (not the copy's pread path) and
    cast again where the dtype changed; the output side at the offsets its own header gives.
    Both are memory-mapped, compared without copying, and their pages dropped chunk by chunk.
    Raises :class:`VerificationError` naming the first difference.
    """
    output = _strict_read(path)
    written = TensorSource(source.chunk_bytes)
    try:
        _check_names(output, plan, str(path))
        for tensor in plan.tensors:
            _verify_tensor(written, output.tensors[tensor.name], tensor, source, str(path))
    finally:
        written.close()
        output.close()


def verify_header(path: Path, plan: ConversionPlan) -> None:
    """The final header re-reads strictly, with every tensor and exactly the planned metadata."""
    output = _strict_read(path)
    try:
        _check_names(output, plan, str(path))
        if output.metadata != plan.metadata:
            raise VerificationError("metadata differs from what was written", where=str(path))
    finally:
        output.close()


def _strict_read(path: Path) -> Asset:
    """The output through the strict reader: its first broken rule (the one ``check_safetensors``
    would list first: both run the same parser) is a :class:`VerificationError`."""
    from ..formats.safetensors import read_safetensors

    try:
        return read_safetensors(path)
    except FormatError as exc:
        raise VerificationError(f"output is not valid safetensors: {exc.message}", where=str(path)) from None


def _check_names(output: Asset, plan: ConversionPlan, where: str) -> None:
    expected = {t.name for t in plan.tensors}
    if set(output.tensors) != expected:
        missing = sorted(expected - set(output.tensors))[:3]
        extra = sorted(set(output.tensors) - expected)[:3]
        raise VerificationError(f"tensor names differ (missing {missing}, unexpected {extra})", where=where)


def _verify_tensor(written: TensorSource, info: TensorInfo, tensor: PlannedTensor, source: TensorSource,
                   where: str) -> None:
    if info.dtype != tensor.dtype or tuple(info.shape) != tuple(tensor.info.shape):
        raise VerificationError(f"tensor {tensor.name!r} reads back as {info.dtype}{list(info.shape)}, "
                                f"expected {tensor.dtype}{list(tensor.info.shape)}", where=where)
    if info.nbytes != tensor.nbytes:
        raise VerificationError(f"tensor {tensor.name!r} has {info.nbytes:,} bytes, expected {tensor.nbytes:,}",
                                where=where)
    if not tensor.nbytes:
        return
    assert info.data_offset is not None
    written.fd(info.file)
    got = memoryview(read_tensor_bytes(info, written.map)).cast("B")
    total = 0
    try:
        for expected in _cast_chunks(source.mapped_chunks(tensor.info), tensor.info.dtype, tensor.dtype):
            size = len(expected)
            if total + size > len(got) or not _same_bytes(expected, got[total: total + size]):
                raise VerificationError(f"tensor {tensor.name!r} differs from the source after byte {total:,}",
                                        where=where)
            written.drop_pages(info.file, info.data_offset + total, info.data_offset + total + size)
            total += size
    finally:
        got.release()
    if total != tensor.nbytes:
        raise VerificationError(f"tensor {tensor.name!r} has {total:,} bytes from the source, expected "
                                f"{tensor.nbytes:,}", where=where)


def _same_bytes(left, right) -> bool:
    """Byte equality of two buffers without copying them (numpy compares 8 bytes at a time)."""
    a = np.frombuffer(left, dtype=np.uint8)
    b = np.frombuffer(right, dtype=np.uint8)
    if a.size != b.size:
        return False
    whole = a.size - a.size % 8
    if whole and not np.array_equal(a[:whole].view(np.uint64), b[:whole].view(np.uint64)):
        return False
    return bool(np.array_equal(a[whole:], b[whole:]))
