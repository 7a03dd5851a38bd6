"""``scan``: is it safe to load this file? An exact allowlist, never a blocklist.

Every pickle in a file goes through our own interpreter
(:class:`~assetkit.formats.pickle_vm.PickleVM`): nothing is imported or run. A file is ``safe``
only when every pickle in it ends properly and names nothing but the exact (module, name)
allowlist of inert tensor-rebuilding globals. Otherwise each global and opcode of concern becomes a
:class:`~assetkit.findings.Finding`:

* ``dangerous``: names that run code or touch the system (``os``, ``subprocess``,
  ``builtins.eval``/``exec``/``getattr``/``__import__``/``open``..., ``runpy``, ``importlib``,
  ``pickle``, ``marshal``, ``types``, ``operator``, ``functools``, ``torch.load``/``hub``/``jit``,
  ``shutil``, ``socket``, ``webbrowser``, ``pip``...), dotted names (attribute walking from an
  innocent module: ``torch.serialization`` + ``os.system``), EXT1/2/4 opcodes (the copyreg
  extension registry of the loading process decides what they name), BUILD states that set
  dunder attributes (``__setstate__`` tricks);
* ``suspicious``: any other name off the allowlist, persistent ids that are not torch storages,
  allowlisted names called with arguments they never take, zip tricks (encrypted flag, local and
  central names that differ, duplicate names, CRC mismatch on a pickle member, nested archives,
  bytes hidden between members);
* ``info``: known harmless training metadata, still never imported: pytorch_lightning's
  ``ModelCheckpoint`` (instantiated without arguments and given a state, as Lightning pickles
  it), numpy scalars, dtypes and arrays (numpy's reconstructors run no code; an object array's
  elements are pickled in the same stream and judged like everything else). Info never makes a
  file unsafe.

Verdicts: ``unsafe`` (any dangerous or suspicious finding; a pickle that breaks *after* such an
opcode is still unsafe), ``unsupported`` (7z/gzip/bzip2/xz/zstd/tar/rar wrappers, TorchScript
archives, zips that are not torch checkpoints, files that are not checkpoints: never extracted,
never safe), ``error`` (a broken pickle or zip with nothing dangerous before the break, a
malformed safetensors header, a cap exceeded), ``safe``.

What is scanned: every pickle of a legacy torch file and any bytes after its last storage record,
pickles concatenated after STOP, every zip member that is not a storage record named by
``data.pkl`` (detected by content, not by name), whatever the file extension: content decides.
A real safetensors file holds no code: it is ``safe`` when its header passes the strict reader,
``error`` when it does not. Scanning never reads tensor data.
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AssetkitError, FormatError
from ..findings import FAILING, SEVERITIES, Finding, sort_findings
from ..formats import require_file
from ..formats.pickle_vm import Limits, PersistentRef, PickleLimitError, PickleVM, PickleVMError, Trace
from ..formats.sniff import SCANNED_SUFFIXES, foreign_kind, is_pickle_head, is_safetensors_head, is_zip_head
from ..formats.torch_pickle import (
    LEGACY_MAGIC,
    MAX_PICKLE_MEMBER,
    ZipEntry,
    is_torchscript,
    read_member,
    read_zip_entries,
    zip_root,
)

__all__ = ["VERDICTS", "ScanResult", "classify_global", "scan_path", "scan_paths"]

VERDICTS = ("safe", "unsafe", "unsupported", "error")

#: File name suffixes collected when walking folders (any file whose magic is a pickle or zip is too).
CHECKPOINT_SUFFIXES = frozenset(SCANNED_SUFFIXES)

# ---------------------------------------------------------------------------------------------
# Classification of globals
# ---------------------------------------------------------------------------------------------
#: Modules (and their submodules) whose every name runs code or touches the system.
DANGEROUS_MODULES = frozenset({
    "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "_posixsubprocess", "_winapi", "pty",
    "runpy", "importlib", "pkgutil", "imp", "zipimport", "site", "pickle", "_pickle", "cPickle", "marshal",
    "types", "code", "codeop", "ctypes", "_ctypes", "cffi", "sys", "operator", "_operator", "functools",
    "_functools", "shutil", "socket", "_socket", "ssl", "webbrowser", "pip", "ensurepip", "venv",
    "multiprocessing", "_multiprocessing", "threading", "_thread", "asyncio", "signal", "tempfile", "io",
    "_io", "pathlib", "glob", "fileinput", "shelve", "dbm", "zipfile", "tarfile", "urllib", "http",
    "ftplib", "smtplib", "telnetlib", "xmlrpc", "requests", "httpx", "aiohttp", "bdb", "pdb", "profile",
    "cProfile", "trace", "timeit", "doctest", "distutils", "setuptools", "logging", "inspect", "gc",
    "dill", "cloudpickle", "joblib", "commands", "popen2", "platform", "sysconfig",
    "torch.hub", "torch.jit", "torch._C", "torch.package", "torch.serialization", "torch.utils.cpp_extension",
    "torch.ops", "torch._ops", "torch._dynamo", "torch._inductor", "torch.distributed", "torch.multiprocessing",
    "torch.utils.data", "numpy.lib.npyio", "numpy.f2py", "numpy.distutils", "numpy.testing", "numpy.ctypeslib",
})
#: Exact dangerous names in otherwise ordinary modules.
DANGEROUS_NAMES = frozenset({
    "torch.load", "torch.save", "torch.compile", "torch.hub", "torch.jit", "torch.from_file",
    "numpy.load", "numpy.save", "numpy.savez", "numpy.fromfile", "numpy.loadtxt", "numpy.genfromtxt",
    "numpy.memmap", "copyreg._reconstructor", "copyreg.__newobj__", "copyreg.__newobj_ex__",
})
#: builtins that evaluate code, reach attributes, import or open files.
DANGEROUS_BUILTINS = frozenset({
    "eval", "exec", "execfile", "compile", "getattr", "setattr", "delattr", "__import__", "open", "file",
    "input", "raw_input", "breakpoint", "globals", "locals", "vars", "help", "exit", "quit", "reload",
    "apply", "type", "super", "object", "classmethod", "staticmethod", "property", "memoryview", "print",
})
#: Known harmless training metadata: reported as info, never imported, never unsafe.
INFO_CLASSES = frozenset({  # instantiated with no arguments (NEWOBJ) and given a state (BUILD)
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint",
    "numpy.ndarray",
})
INFO_FUNCTIONS = frozenset({  # called (REDUCE) to rebuild numpy values
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.dtype",
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
})
INFO_GLOBALS = INFO_CLASSES | INFO_FUNCTIONS


def _in_module(module: str, modules: frozenset[str]) -> bool:
    parts = module.split(".")
    return any(".".join(parts[:i]) in modules for i in range(1, len(parts) + 1))


def _classify_name(module: str, name: str) -> str:
    qualname = f"{module}.{name}"
    if "." in name:
        return "dangerous"  # attribute walking: never resolved, never trusted
    if name.startswith("__") and name.endswith("__") and qualname not in DANGEROUS_NAMES:
        return "dangerous"
    if module in ("builtins", "__builtin__", "__builtins__", "exceptions"):
        return "dangerous" if name in DANGEROUS_BUILTINS else "suspicious"
    if qualname in DANGEROUS_NAMES or _in_module(module, DANGEROUS_MODULES):
        return "dangerous"
    if qualname in INFO_GLOBALS:
        return "info"
    return "suspicious"


def classify_global(module: str, name: str, canonical: tuple[str, str] | None = None) -> str:
    """Severity of a non-allowlisted global: ``dangerous``, ``suspicious`` or ``info``.

    Judged on the name as written *and* on the ``(module, name)`` pickle would resolve
    (``__builtin__.eval`` under protocol 2 is ``builtins.eval``); the worse of the two wins.
    """
    severities = [_classify_name(module, name)]
    if canonical and canonical != (module, name):
        severities.append(_classify_name(*canonical))
    return min(severities, key=SEVERITIES.index)


# ---------------------------------------------------------------------------------------------
# Result
# ---------------------------------------------------------------------------------------------
@dataclass
class ScanResult:
    path: Path
    verdict: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def safe(self) -> bool:
        return self.verdict == "safe"

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "verdict": self.verdict,
                "findings": [f.to_dict() for f in sort_findings(self.findings)]}


class _Scan:
    """Findings gathered while scanning one file, plus verdict flags."""

    def __init__(self, path: Path, limits: Limits) -> None:
        self.path = path
        self.where = str(path)
        self.limits = limits
        self.findings: list[Finding] = []
        self.unsupported = False
        self.pickles = 0

    def add(self, code: str, severity: str, message: str, where: str | None = None) -> None:
        self.findings.append(Finding(code, severity, message, where or self.where))

    def result(self) -> ScanResult:
        severities = {f.severity for f in self.findings}
        if severities & {"dangerous", "suspicious"}:
            verdict = "unsafe"
        elif self.unsupported:
            verdict = "unsupported"
        elif severities & FAILING:
            verdict = "error"
        else:
            verdict = "safe"
        return ScanResult(self.path, verdict, sort_findings(self.findings))

    # ---- one pickle ----------------------------------------------------------------------------
    def judge(self, trace: Trace, where: str) -> None:
        """Turn a trace into findings, one per distinct name/opcode (with a count)."""
        grouped: dict[tuple[str, str, str], list[int]] = {}
        severity_of: dict[str, str] = {}

        def note(code: str, severity: str, message: str, position: int) -> None:
            grouped.setdefault((code, severity, message), []).append(position)

        for ref in trace.globals:
            if ref.allowed:
                continue
            if ref.opcode == "EXT":
                severity_of[ref.qualname] = "dangerous"
                note("ext-opcode", "dangerous",
                     f"EXT opcode: {ref.name} resolved through the loader's copyreg registry", ref.position)
                continue
            severity = classify_global(ref.module, ref.name, (ref.canonical_module, ref.canonical_name))
            severity_of[ref.qualname] = severity
            shown = ref.qualname if ref.canonical == ref.qualname else f"{ref.qualname} (= {ref.canonical})"
            if "." in ref.name:
                message = f"dotted name {ref.name!r} under {ref.module!r} walks attributes: {shown}"
            else:
                message = f"global {shown}"
            code = {"dangerous": "unsafe-global", "suspicious": "unknown-global", "info": "known-global"}[severity]
            note(code, severity, message, ref.position)
        for event in trace.events:
            if event.kind == "ext":
                continue  # reported with its global
            severity = self._event_severity(event.kind, event.target, severity_of)
            note(f"pickle-{event.kind}", severity, event.detail, event.position)
        for (code, severity, message), positions in grouped.items():
            times = f" ({len(positions)} times)" if len(positions) > 1 else ""
            self.add(code, severity, message + times, f"{where}@{positions[0]}")

    @staticmethod
    def _event_severity(kind: str, target: str, severity_of: dict[str, str]) -> str:
        if kind in ("build-dunder", "ext"):
            return "dangerous"
        if kind in ("bad-call", "dangling-mark"):
            return "suspicious"
        if kind == "persid":
            return "warning"  # torch's loaders treat a non-storage id as an error, never as code
        if kind == "next-buffer":
            return "error"
        if target.startswith("result of "):
            inner = target[len("result of "):]
            if kind == "build-unknown" and inner in INFO_GLOBALS:
                return "info"
            return "dangerous" if severity_of.get(inner) == "dangerous" else "suspicious"
        severity = severity_of.get(target, "suspicious")
        if severity == "info":
            if kind in ("newobj-unknown", "build-unknown") and target in INFO_CLASSES:
                return "info"
            if kind == "call-unknown" and target in INFO_FUNCTIONS:
                return "info"
            return "suspicious"  # e.g. ModelCheckpoint called with arguments (its __init__ would run)
        return severity

    def pickle_chain(self, data: Any, start: int, end: int, where: str, base: int = 0,
                     first_required: bool = True) -> None:
        """Scan consecutive pickles from ``start``; torch legacy files are followed to their data
        records. Stops at the first stretch of bytes that is not a pickle (reported)."""
        pos = start
        index = 0
        legacy_step = 0  # 0: not legacy; n: next pickle is legacy pickle number n
        legacy_types: dict[str, int] = {}
        while pos < end:
            label = f"{where}@{pos + base}"
            vm = PickleVM(data, pos, end=end, where=label, limits=self.limits, base=base,
                          persistent_load=_storage_sizes(legacy_types) if legacy_step == 3 else None)
            try:
                value = vm.run()
                error = None
            except PickleVMError as exc:
                value, error = None, exc
            trace = vm.trace
            meaningful = error is None or bool(trace.globals) or any(e.kind != "persid" for e in trace.events)
            # Inside a legacy file's header pickles a break is a truncated file, not trailing data.
            if not meaningful and index > 0 and not legacy_step:
                self.add("trailing-data", "warning",
                         f"{end - pos} bytes after the last pickle are not a pickle", label)
                return
            if error is not None and index == 0 and not meaningful and not first_required:
                return  # not a pickle at all
            self.pickles += 1
            self.judge(trace, where)
            if error is not None:
                code = "pickle-limit" if isinstance(error, PickleLimitError) else "pickle-error"
                self.add(code, "error", error.message, label)
                return
            index += 1
            pos = vm.pos
            if index == 1 and value == LEGACY_MAGIC and not isinstance(value, bool):
                legacy_step = 1
            elif legacy_step:
                legacy_step += 1
            if legacy_step == 5:
                # value = storage keys: walk the records (8-byte count + bytes) without reading them
                pos = self._skip_legacy_records(data, pos, end, value, legacy_types, where, base)
                if pos is None:
                    return
                legacy_step = 0
        if legacy_step:
            self.add("legacy-truncated", "error",
                     f"legacy torch file ends after {legacy_step} of its 5 pickles, before its storage records"
                     " (truncated?)", f"{where}@{end + base}")

    def _skip_legacy_records(self, data: Any, pos: int, end: int, keys: Any, sizes: dict[str, int],
                             where: str, base: int) -> int | None:
        if not isinstance(keys, list):
            self.add("legacy-records", "error", "legacy storage-keys pickle is not a list", where)
            return None
        for key in keys:
            itemsize = sizes.get(key) if isinstance(key, str) else None
            if itemsize is None or pos + 8 > end:
                self.add("legacy-records", "error", f"cannot locate legacy storage record {key!r}",
                         f"{where}@{pos + base}")
                return None
            (numel,) = struct.unpack_from("<q", data, pos)
            if numel < 0 or pos + 8 + numel * itemsize > end:
                self.add("legacy-records", "error", f"legacy storage record {key!r} runs past the end",
                         f"{where}@{pos + base}")
                return None
            pos += 8 + numel * itemsize
        return pos


def _storage_sizes(sizes: dict[str, int]):
    """persistent_load for a legacy main pickle: remember each storage key's element size."""
    from ..formats.dtypes import DTYPES
    from ..formats.pickle_vm import StorageType

    def load(pid: Any, position: int) -> Any:
        if isinstance(pid, tuple) and len(pid) >= 5 and isinstance(pid[1], StorageType) and isinstance(pid[2], str):
            sizes[pid[2]] = DTYPES[pid[1].dtype or "U8"].itemsize
        return PersistentRef(pid, position)

    return load


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------
_WRAPPERS = {"7z archive", "gzip stream", "bzip2 stream", "xz stream", "zstd stream", "rar archive", "tar archive"}


def scan_path(path: str | os.PathLike[str], *, limits: Limits | None = None) -> ScanResult:
    """Scan one file. Raises :class:`AssetkitError` only when the path cannot be read at all."""
    p = require_file(path, "a file (scan_paths walks folders)")
    scan = _Scan(p, limits or Limits())
    try:
        with open(p, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                scan.unsupported = True
                scan.add("not-a-checkpoint", "error", "file is empty")
                return scan.result()
            head = os.pread(fh.fileno(), 512, 0)
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                _scan_file(scan, fh, mapped, size, head)
    except OSError as exc:
        raise AssetkitError(f"cannot read: {exc.strerror or exc}", where=str(p)) from None
    return scan.result()


def _scan_file(scan: _Scan, fh: Any, mapped: mmap.mmap, size: int, head: bytes) -> None:
    if is_zip_head(head):
        _scan_zip(scan, fh, mapped, size)
        return
    foreign = foreign_kind(head)
    if foreign in _WRAPPERS:
        scan.unsupported = True
        scan.add("unsupported-wrapper", "error", f"{foreign}: never extracted; unpack it and scan the contents")
        return
    safetensors = is_safetensors_head(head)
    # torch.load unpickles any non-zip file from byte 0, so every file is tried as a pickle.
    before = len(scan.findings)
    scan.pickle_chain(mapped, 0, size, scan.where, first_required=is_pickle_head(head) and not safetensors)
    if safetensors:
        # A safetensors header read as a pickle may name junk globals that cannot be imported;
        # only names that would really run something are kept.
        scan.findings[before:] = [f for f in scan.findings[before:] if f.severity == "dangerous"]
        _scan_safetensors(scan)
        return
    if scan.pickles == 0:
        if _zip_tail(mapped, size):
            scan.add("zip-polyglot", "suspicious", "a zip central directory follows non-zip content")
            _scan_zip(scan, fh, mapped, size)
            return
        scan.unsupported = True
        what = f"a {foreign}" if foreign else "neither safetensors, a torch zip nor a pickle"
        scan.add("not-a-checkpoint", "error", f"not a checkpoint: {what}")
    elif _zip_tail(mapped, size):
        scan.add("zip-polyglot", "suspicious", "a zip central directory follows the pickle")
        _scan_zip(scan, fh, mapped, size)


def _zip_tail(mapped: mmap.mmap, size: int) -> bool:
    tail_start = max(0, size - 65557)
    return mapped.rfind(b"PK\x05\x06", tail_start) >= 0


def _scan_safetensors(scan: _Scan) -> None:
    from ..formats.safetensors import read_safetensors

    try:
        read_safetensors(scan.path).close()
    except FormatError as exc:
        scan.add(f"safetensors-{exc.code}" if not exc.code.startswith("st-") else exc.code, "error",
                 f"malformed safetensors: {exc.message}")


def _scan_zip(scan: _Scan, fh: Any, mapped: mmap.mmap, size: int) -> None:
    where = scan.where
    try:
        entries = read_zip_entries(fh, size, where)
    except FormatError as exc:
        scan.add("zip-broken", "error", exc.message)
        return
    root = zip_root(entries)
    torchscript = is_torchscript(entries, root)
    _zip_hygiene(scan, entries, size)
    by_name: dict[str, ZipEntry] = {}
    for entry in entries:
        by_name.setdefault(entry.name, entry)
    storage_members: set[str] = set()
    data_pkl = by_name.get(f"{root}/data.pkl") if root else None
    ordered = sorted(entries, key=lambda e: (e is not data_pkl, e.header_offset))
    for entry in ordered:
        if entry.name in storage_members or entry.name.endswith("/"):
            continue
        member_where = f"{where}:{entry.name}"
        if entry.data_start is None or entry.encrypted:
            continue  # reported by the hygiene checks; content cannot be judged
        if entry.compress_type not in (0, 8):
            scan.add("zip-compression", "suspicious",
                     f"member compressed with method {entry.compress_type}: content not inspected", member_where)
            continue
        if entry.file_size > MAX_PICKLE_MEMBER:  # a storage record nobody names, or a hiding place
            scan.add("zip-large-member", "suspicious",
                     "large member that no torch data.pkl names as a storage: content not inspected",
                     member_where)
            continue
        try:
            data = read_member(fh, entry, where)
        except FormatError as exc:
            scan.add("zip-member-unreadable", "suspicious", exc.message, member_where)
            continue
        if zlib.crc32(data) != entry.crc:
            scan.add("zip-crc-mismatch", "suspicious", "CRC-32 does not match the central directory", member_where)
        if is_zip_head(data) or foreign_kind(data[:512]) in _WRAPPERS:
            scan.add("zip-nested-archive", "suspicious", "archive inside the zip: never extracted", member_where)
            continue
        base = entry.data_start if entry.stored else 0
        if entry is data_pkl:
            keys = _scan_data_pkl(scan, data, member_where, base)
            storage_members.update(f"{root}/data/{k}" for k in keys)
        else:  # any member may be a pickle: content decides, not the name
            strict = is_pickle_head(data[:2]) or entry.name.endswith((".pkl", ".pickle"))
            scan.pickle_chain(data, 0, len(data), member_where, base, first_required=strict)
    if torchscript:
        scan.unsupported = True
        scan.add("unsupported-torchscript", "error", "TorchScript archive (code/, constants.pkl): not scanned as "
                 "a checkpoint; TorchScript code runs when loaded")
    elif data_pkl is None:
        scan.unsupported = True
        scan.add("not-a-checkpoint", "error", "zip archive without a torch data.pkl")


def _scan_data_pkl(scan: _Scan, data: bytes, where: str, base: int) -> set[str]:
    """Scan the main pickle; return the storage keys it names (those members are raw data)."""
    keys: set[str] = set()

    def persistent_load(pid: Any, position: int) -> Any:
        if isinstance(pid, tuple) and len(pid) >= 3 and isinstance(pid[2], str):
            keys.add(pid[2])
        return PersistentRef(pid, position)

    vm = PickleVM(data, 0, where=where, limits=scan.limits, base=base, persistent_load=persistent_load)
    try:
        vm.run()
        error = None
    except PickleVMError as exc:
        error = exc
    scan.pickles += 1
    scan.judge(vm.trace, where)
    if error is not None:
        code = "pickle-limit" if isinstance(error, PickleLimitError) else "pickle-error"
        scan.add(code, "error", error.message, where)
    elif vm.pos < len(data):  # bytes after STOP: another pickle hidden in data.pkl?
        scan.pickle_chain(data, vm.pos, len(data), where, base, first_required=False)
    return keys


def _zip_hygiene(scan: _Scan, entries: list[ZipEntry], size: int) -> None:
    where = scan.where
    seen: set[str] = set()
    for entry in entries:
        at = f"{where}:{entry.name}"
        if entry.name in seen:
            scan.add("zip-duplicate-name", "suspicious", "two members share this name: loaders disagree on which "
                     "one counts", at)
        seen.add(entry.name)
        if entry.encrypted:
            scan.add("zip-encrypted", "suspicious", "member has the encrypted flag: content cannot be inspected", at)
        if entry.local_problem:
            scan.add("zip-bad-local-header", "suspicious", entry.local_problem, at)
        elif entry.local_name != entry.name:
            scan.add("zip-name-mismatch", "suspicious",
                     f"local header names it {entry.local_name!r}, the central directory {entry.name!r}", at)
    # Bytes between members (beyond a data descriptor) can hold a member only local-header
    # walkers see.
    spans = sorted((e.header_offset, e.data_start + e.compress_size) for e in entries if e.data_start is not None)
    for (_, end), (next_start, _) in zip(spans, spans[1:], strict=False):
        if next_start - end > 24:
            scan.add("zip-hidden-bytes", "suspicious",
                     f"{next_start - end} unaccounted bytes between members at {end}", where)
            break


# ---------------------------------------------------------------------------------------------
# Many paths
# ---------------------------------------------------------------------------------------------
def _wanted(path: Path) -> bool:
    if path.suffix.lower() in CHECKPOINT_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return False
    return is_zip_head(head) or is_pickle_head(head)


def iter_candidates(paths: Iterable[str | os.PathLike[str]], recursive: bool = True) -> Iterator[Path]:
    """Files named directly, plus checkpoint-like files found in folders (sorted, recursively).

    Symbolic links to files are followed (a Hugging Face cache snapshot is made of them), each
    file once per folder; links to folders are not walked into.
    """
    for raw in paths:
        p = Path(raw)
        if not p.is_dir():
            yield p
            continue
        walker = sorted(p.rglob("*")) if recursive else sorted(p.iterdir())
        seen: set[tuple[int, int]] = set()
        for child in walker:
            if not child.is_file() or not _wanted(child):
                continue
            stat = child.stat()
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                yield child


def scan_paths(paths: Iterable[str | os.PathLike[str]], recursive: bool = True,
               *, limits: Limits | None = None) -> list[ScanResult]:
    """Scan files and folders (folders walked for checkpoint-like files)."""
    return [scan_path(p, limits=limits) for p in iter_candidates(paths, recursive)]
