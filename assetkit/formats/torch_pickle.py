"""The no-execution torch checkpoint reader: zip format (any root folder) and the legacy format.

Nothing here imports torch or runs a pickle: ``data.pkl`` (or the legacy main pickle) goes
through :class:`~assetkit.formats.pickle_vm.PickleVM`, whose allowlisted stand-ins turn
``_rebuild_tensor_v2`` & co. into :class:`~assetkit.formats.pickle_vm.TensorRef` records. Storage
bytes are never read: each tensor gets the absolute file offset of its storage record.

Layouts handled:

* zip: ``<root>/data.pkl``, ``<root>/data/<key>`` (stored records, 64-byte aligned by torch),
  ``<root>/byteorder`` (``little``/``big``), ``<root>/version``, ``<root>/.data/...``. The root
  folder is whatever the first member is under (``archive``, the file stem, anything).
* legacy (``_use_new_zipfile_serialization=False``): magic-number pickle, protocol-version
  pickle, sys-info pickle, the main pickle, the storage-keys pickle, then per storage an 8-byte
  element count followed by the raw bytes.
"""

from __future__ import annotations

import mmap
import os
import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FormatError, UnsupportedFormatError
from ..findings import Finding
from .base import Asset, TensorInfo
from .dtypes import DTYPES
from .pickle_vm import (
    Inert,
    PickleVM,
    PickleVMError,
    StorageType,
    TensorRef,
    Trace,
    UnknownCall,
    UnknownGlobal,
)
from .sniff import ZIP_LOCAL_MAGIC, is_pickle_head, is_zip_head

__all__ = [
    "LEGACY_MAGIC",
    "StorageRecord",
    "ZipEntry",
    "check_torch_container",
    "read_torch_file",
    "read_zip_entries",
]

#: The first pickle of a legacy torch file holds this number.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
#: Member names (below the root folder) that torch itself writes, besides ``data/<key>``.
TORCH_ZIP_MEMBERS = frozenset(
    {"data.pkl", "byteorder", "version", ".format_version", ".storage_alignment",
     ".data/serialization_id", ".data/version"}
)
#: Largest non-storage member we read into memory (data.pkl of a huge model is a few MB).
MAX_PICKLE_MEMBER = 256 * 1024 * 1024
#: Wrapper dict keys unwrapped when they hold the only tensors of the file.
WRAPPER_KEYS = ("model", "module", "model_state_dict")
MAX_NESTING = 64


# ---------------------------------------------------------------------------------------------
# zip directory
# ---------------------------------------------------------------------------------------------
@dataclass
class ZipEntry:
    """One central-directory record plus what its local header says.

    ``data_start`` is the absolute offset of the member's (possibly compressed) bytes, None
    when the local header is unusable; ``local_name`` is the name the local header carries.
    """

    name: str
    header_offset: int
    flag_bits: int
    compress_type: int
    crc: int
    compress_size: int
    file_size: int
    local_name: str | None = None
    data_start: int | None = None
    local_problem: str | None = None

    @property
    def encrypted(self) -> bool:
        return bool(self.flag_bits & 0x1)

    @property
    def stored(self) -> bool:
        return self.compress_type == zipfile.ZIP_STORED and not self.encrypted

    @property
    def data_offset(self) -> int | None:
        """Where the member's bytes can be used in place (stored, unencrypted), else None."""
        return self.data_start if self.stored else None


def read_zip_entries(fh: Any, size: int, where: str) -> list[ZipEntry]:
    """Central directory of the zip open as ``fh`` (metadata only) with each local header.

    Raises :class:`FormatError` when the central directory cannot be parsed.
    """
    try:
        infos = zipfile.ZipFile(fh).infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, struct.error, OverflowError,
            EOFError, UnicodeDecodeError, NotImplementedError) as exc:
        raise FormatError(f"broken zip archive: {exc}", where, "torch-zip") from None
    entries = []
    for info in infos:
        entry = ZipEntry(info.orig_filename, info.header_offset, info.flag_bits, info.compress_type,
                         info.CRC, info.compress_size, info.file_size)
        _read_local_header(fh, size, entry, bool(info.flag_bits & 0x800))
        entries.append(entry)
    return entries


def _read_local_header(fh: Any, size: int, entry: ZipEntry, utf8: bool) -> None:
    offset = entry.header_offset
    if offset < 0 or offset + 30 > size:
        entry.local_problem = "local header lies outside the file"
        return
    header = os.pread(fh.fileno(), 30, offset)
    if header[:4] != ZIP_LOCAL_MAGIC:
        entry.local_problem = "no local header signature where the central directory points"
        return
    name_len, extra_len = struct.unpack_from("<HH", header, 26)
    raw_name = os.pread(fh.fileno(), name_len, offset + 30)
    entry.local_name = raw_name.decode("utf-8" if utf8 else "cp437", errors="replace")
    start = offset + 30 + name_len + extra_len
    if start + entry.compress_size > size:
        entry.local_problem = "member data runs past the end of the file"
        return
    entry.data_start = start


def read_member(fh: Any, entry: ZipEntry, where: str, limit: int = MAX_PICKLE_MEMBER) -> bytes:
    """The uncompressed bytes of a small member (stored or deflated), at most ``limit`` bytes."""
    if entry.data_start is None:
        raise FormatError(f"member {entry.name}: {entry.local_problem}", where, "torch-zip")
    if entry.encrypted:
        raise FormatError(f"member {entry.name} is encrypted", where, "torch-zip")
    if entry.file_size > limit or entry.compress_size > limit:
        raise FormatError(f"member {entry.name} is larger than {limit} bytes", where, "torch-zip")
    raw = os.pread(fh.fileno(), entry.compress_size, entry.data_start)
    if len(raw) != entry.compress_size:
        raise FormatError(f"member {entry.name} is truncated", where, "torch-zip")
    if entry.compress_type == zipfile.ZIP_STORED:
        return raw
    if entry.compress_type == zipfile.ZIP_DEFLATED:
        inflater = zlib.decompressobj(-15)
        try:
            out = inflater.decompress(raw, limit + 1)
        except zlib.error as exc:
            raise FormatError(f"member {entry.name}: bad deflate data ({exc})", where, "torch-zip") from None
        if len(out) > limit:
            raise FormatError(f"member {entry.name} inflates past {limit} bytes", where, "torch-zip")
        return out
    raise FormatError(f"member {entry.name} uses unsupported compression {entry.compress_type}", where,
                      "torch-zip")


def zip_root(entries: list[ZipEntry]) -> str | None:
    """The root folder torch uses: the first member's top folder."""
    if not entries or "/" not in entries[0].name:
        return None
    return entries[0].name.split("/", 1)[0]


def is_torchscript(entries: list[ZipEntry], root: str | None) -> bool:
    prefix = f"{root}/" if root else ""
    return any(e.name == f"{prefix}constants.pkl" or e.name.startswith(f"{prefix}code/") for e in entries)


# ---------------------------------------------------------------------------------------------
# storages
# ---------------------------------------------------------------------------------------------
class StorageRecord(Inert):
    """A storage named by a persistent id, located in the file (absolute offsets)."""

    __slots__ = ("key", "dtype", "numel", "location", "data_offset", "nbytes", "present", "view_offset",
                 "root_key")

    def __init__(self, key: str, dtype: str, numel: int, location: str) -> None:
        self.key, self.dtype, self.numel, self.location = key, dtype, numel, location
        self.data_offset: int | None = None
        self.nbytes: int | None = None  #: bytes actually present in the file for this record
        self.present = False
        self.view_offset = 0  #: legacy storage views: element offset into the root storage
        self.root_key: str | None = None  #: legacy storage views: key of the root storage

    @property
    def expected_nbytes(self) -> int:
        return self.numel * DTYPES[self.dtype].itemsize


def _parse_storage_pid(pid: Any, legacy: bool) -> tuple[str, str, int, str, Any]:
    """``('storage', storage_type, key, location, numel[, view_metadata])`` -> its fields."""
    if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] not in ("storage", b"storage"):
        raise ValueError("persistent id is not a torch storage reference")
    storage_type, key, location, numel = pid[1:5]
    if not isinstance(storage_type, StorageType):
        raise ValueError("persistent id names no torch storage class")
    if not isinstance(key, str) or not key or "/" in key or "\\" in key or key in (".", ".."):
        raise ValueError("persistent id has a bad storage key")
    if type(numel) is not int or numel < 0:
        raise ValueError("persistent id has a bad element count")
    view = pid[5] if legacy and len(pid) > 5 else None
    if len(pid) > (6 if legacy else 5):
        raise ValueError("persistent id has extra fields")
    return storage_type.dtype or "U8", key, numel, str(location), view


class _StorageTable:
    """persistent_load for the VM: one :class:`StorageRecord` per key."""

    def __init__(self, legacy: bool, where: str) -> None:
        self.legacy = legacy
        self.where = where
        self.records: dict[str, StorageRecord] = {}

    def __call__(self, pid: Any, position: int) -> Any:
        try:
            dtype, key, numel, location, view = _parse_storage_pid(pid, self.legacy)
        except ValueError as exc:
            raise PickleVMError(f"{exc} (byte {position})", self.where, position=position) from None
        record = self.records.get(key)
        if record is None:
            record = self.records[key] = StorageRecord(key, dtype, numel, location)
        elif record.dtype != dtype and not self.legacy:
            raise PickleVMError(f"storage {key} is named with two dtypes (byte {position})", self.where,
                                position=position)
        if view is None:
            return record
        # Legacy storage view: (view_key, element offset, element count) of the root storage.
        if not (isinstance(view, tuple) and len(view) == 3 and type(view[1]) is int and type(view[2]) is int
                and view[1] >= 0 and view[2] >= 0):
            raise PickleVMError(f"bad storage view metadata (byte {position})", self.where, position=position)
        sub = StorageRecord(str(view[0]), dtype, view[2], location)
        sub.view_offset = view[1]
        sub.root_key = key
        return sub


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------
@dataclass
class _Parsed:
    format: str
    root: Any
    trace: Trace
    storages: dict[str, StorageRecord]
    byteorder: str = "little"
    notes: list[str] = field(default_factory=list)
    entries: list[ZipEntry] = field(default_factory=list)
    zip_root: str | None = None
    legacy_end: int | None = None  #: legacy: offset after the last storage record


@contextmanager
def _open(path: Path) -> Iterator[tuple[Any, int]]:
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise FormatError(f"cannot read: {exc.strerror or exc}", str(path), "unreadable") from None
    with fh:
        yield fh, os.fstat(fh.fileno()).st_size


def _parse_file(path: Path) -> _Parsed:
    where = str(path)
    with _open(path) as (fh, size):
        if size == 0:
            raise FormatError("file is empty", where, "torch-empty")
        head = os.pread(fh.fileno(), 8, 0)
        if is_zip_head(head):
            return _parse_zip(fh, size, where)
        if is_pickle_head(head):
            return _parse_legacy(fh, size, where)
        raise FormatError("not a torch checkpoint: neither a zip archive nor a pickle", where, "torch-format")


def _parse_zip(fh: Any, size: int, where: str) -> _Parsed:
    entries = read_zip_entries(fh, size, where)
    root = zip_root(entries)
    if is_torchscript(entries, root):
        raise UnsupportedFormatError("TorchScript archive (code/ or constants.pkl): not a plain checkpoint", where)
    if root is None:
        raise FormatError("zip archive is not a torch checkpoint: members are not under a root folder", where,
                          "torch-zip")
    by_name: dict[str, ZipEntry] = {}
    for entry in entries:
        by_name.setdefault(entry.name, entry)
    pkl = by_name.get(f"{root}/data.pkl")
    if pkl is None:
        raise FormatError(f"zip archive is not a torch checkpoint: no {root}/data.pkl", where, "torch-zip")
    data = read_member(fh, pkl, where)
    byteorder = "little"
    order_entry = by_name.get(f"{root}/byteorder")
    if order_entry is not None:
        text = read_member(fh, order_entry, where, 64).decode("ascii", "replace").strip()
        if text not in ("little", "big"):
            raise FormatError(f"{root}/byteorder says {text!r}, expected 'little' or 'big'", where, "torch-zip")
        byteorder = text
    table = _StorageTable(legacy=False, where=f"{where}:{pkl.name}")
    vm = PickleVM(data, where=f"{where}:{pkl.name}", persistent_load=table)
    value = vm.run()
    for key, record in table.records.items():
        entry = by_name.get(f"{root}/data/{key}")
        if entry is None:
            continue
        record.present = True
        record.nbytes = entry.file_size
        record.data_offset = entry.data_offset
    return _Parsed("torch-zip", value, vm.trace, table.records, byteorder, entries=entries, zip_root=root)


def _parse_legacy(fh: Any, size: int, where: str) -> _Parsed:
    try:
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as exc:
        raise FormatError(f"cannot map file: {exc}", where, "unreadable") from None
    with mapped:
        pos = 0
        magic, pos, _ = _legacy_pickle(mapped, pos, where, "magic number")
        if magic != LEGACY_MAGIC:
            raise FormatError("pickle is not a torch checkpoint (no torch magic number)", where, "torch-format")
        protocol, pos, _ = _legacy_pickle(mapped, pos, where, "protocol version")
        if protocol != LEGACY_PROTOCOL:
            raise FormatError(f"unsupported legacy torch protocol {protocol!r}", where, "torch-format")
        sys_info, pos, _ = _legacy_pickle(mapped, pos, where, "system info")
        byteorder = "little"
        if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
            byteorder = "big"
        table = _StorageTable(legacy=True, where=where)
        value, pos, trace = _legacy_pickle(mapped, pos, where, "main", table)
        keys, pos, _ = _legacy_pickle(mapped, pos, where, "storage keys")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise FormatError("legacy storage-keys pickle is not a list of strings", where, "torch-legacy")
        pos = _locate_legacy_records(mapped, pos, size, keys, table, byteorder, where)
    notes = []
    if pos < size:
        notes.append(f"{size - pos} bytes after the last storage record are ignored")
    return _Parsed("torch-legacy", value, trace, table.records, byteorder, notes, legacy_end=pos)


def _legacy_pickle(mapped: mmap.mmap, pos: int, where: str, what: str,
                   table: _StorageTable | None = None) -> tuple[Any, int, Trace]:
    vm = PickleVM(mapped, pos, where=where, persistent_load=table)
    try:
        value = vm.run()
    except PickleVMError as exc:
        raise PickleVMError(f"legacy {what} pickle: {exc.message}", where, position=exc.position) from None
    return value, vm.pos, vm.trace


def _locate_legacy_records(mapped: mmap.mmap, pos: int, size: int, keys: list[str], table: _StorageTable,
                           byteorder: str, where: str) -> int:
    """Walk the storage records (8-byte element count + bytes) by seeking, never reading data."""
    count_format = "<q" if byteorder == "little" else ">q"
    for key in keys:
        record = table.records.get(key)
        if pos + 8 > size:
            raise FormatError(f"legacy storage record {key} is truncated", where, "torch-legacy")
        (numel,) = struct.unpack_from(count_format, mapped, pos)
        pos += 8
        itemsize = DTYPES[record.dtype].itemsize if record is not None else None
        if itemsize is None:
            raise FormatError(f"legacy storage record {key} is not referenced by the main pickle", where,
                              "torch-legacy")
        nbytes = numel * itemsize
        if numel < 0 or pos + nbytes > size:
            raise FormatError(f"legacy storage record {key} runs past the end of the file", where, "torch-legacy")
        record.present = True
        record.data_offset = pos
        record.nbytes = nbytes
        pos += nbytes
    return pos


def read_torch_file(path: str | os.PathLike[str]) -> Asset:
    """Open a torch checkpoint (zip or legacy) lazily, without running its pickle.

    Raises :class:`FormatError` (one line naming the problem) for anything that is not a readable
    torch file, :class:`UnsupportedFormatError` for TorchScript archives.
    """
    path = Path(path)
    parsed = _parse_file(path)
    asset = Asset(path=path, format=parsed.format, files=[path])
    asset.notes.extend(parsed.notes)
    asset.unknown_globals = parsed.trace.unknown_names()
    builder = _Flattener(asset, parsed, str(path))
    builder.build(parsed.root)
    return asset


class _Flattener:
    """Turn the object graph into ``Asset.tensors`` (dotted names) and ``Asset.metadata``."""

    def __init__(self, asset: Asset, parsed: _Parsed, where: str) -> None:
        self.asset = asset
        self.parsed = parsed
        self.where = where

    def build(self, root: Any) -> None:
        asset = self.asset
        if isinstance(root, dict):
            asset.top_level_keys = [str(key) for key in root]
            unwrapped = self._unwrap(root)
            if unwrapped is not None:
                key, inner = unwrapped
                asset.unwrapped_key = key
                asset.notes.append(f"unwrapped the {key!r} dict")
                self._walk(inner, "", tensors=True, metadata=False, depth=0, seen=set())
                rest = {k: v for k, v in root.items() if k != key}
                dropped = self._count_tensors(rest, 0, set())
                if dropped:
                    asset.notes.append(f"{dropped} tensor(s) outside {key!r} (optimizer state...) not indexed")
                self._walk(rest, "", tensors=False, metadata=True, depth=0, seen=set())
                return
            self._walk(root, "", tensors=True, metadata=True, depth=0, seen=set())
        elif isinstance(root, TensorRef):
            asset.notes.append("the file holds a single tensor, indexed as 'tensor'")
            self._tensor("tensor", root)
        elif isinstance(root, (list, tuple)):
            self._walk(root, "", tensors=True, metadata=True, depth=0, seen=set())
        else:
            asset.notes.append(f"the pickle holds a {type(root).__name__}, not a dict of tensors")

    def _unwrap(self, root: dict) -> tuple[str, dict] | None:
        inner = root.get("state_dict")
        if isinstance(inner, dict) and self._count_tensors(inner, 0, set()):
            return "state_dict", inner
        holders = [k for k, v in root.items() if self._count_tensors(v, 0, set())]
        if len(holders) == 1 and holders[0] in WRAPPER_KEYS and isinstance(root[holders[0]], dict):
            inner = root[holders[0]]
            # Only a plain dict of tensors (no further wrapping) is unwrapped.
            if all(isinstance(v, TensorRef) for v in inner.values()):
                return holders[0], inner
        return None

    def _count_tensors(self, value: Any, depth: int, seen: set[int]) -> int:
        if isinstance(value, TensorRef):
            return 1
        if depth > MAX_NESTING or id(value) in seen:
            return 0
        if isinstance(value, dict):
            seen.add(id(value))
            return sum(self._count_tensors(v, depth + 1, seen) for v in value.values())
        if isinstance(value, (list, tuple)):
            seen.add(id(value))
            return sum(self._count_tensors(v, depth + 1, seen) for v in value)
        return 0

    def _walk(self, value: Any, name: str, *, tensors: bool, metadata: bool, depth: int, seen: set[int]) -> None:
        if depth > MAX_NESTING:
            raise FormatError(f"{name or 'the checkpoint'}: nested deeper than {MAX_NESTING} levels", self.where,
                              "torch-structure")
        if isinstance(value, TensorRef):
            if tensors:
                self._tensor(name, value)
            return
        if isinstance(value, (dict, list, tuple)):
            if id(value) in seen:
                return
            seen.add(id(value))
            items = value.items() if isinstance(value, dict) else enumerate(value)
            if isinstance(value, (list, tuple)) and not self._count_tensors(value, 0, set()):
                if metadata and name and _plain_list(value):
                    self.asset.metadata[name] = list(value)
                return
            for key, child in items:
                child_name = f"{name}.{_key_name(key)}" if name else _key_name(key)
                self._walk(child, child_name, tensors=tensors, metadata=metadata, depth=depth + 1, seen=seen)
            return
        if not metadata or not name:
            return
        if value is None or isinstance(value, (bool, int, float, str)):
            self.asset.metadata[name] = value
        elif isinstance(value, (UnknownGlobal, UnknownCall)):
            self.asset.notes.append(f"{name}: inert placeholder for {value.qualname} (never imported)")

    def _tensor(self, name: str, ref: TensorRef) -> None:
        where = self.where
        storage = ref.storage
        if not isinstance(storage, StorageRecord):
            raise FormatError(f"tensor {name}: storage is not a torch storage reference", where, "torch-tensor")
        size, stride, offset = ref.size, ref.stride, ref.storage_offset
        if not _int_tuple(size):
            raise FormatError(f"tensor {name}: size is not a tuple of non-negative ints", where, "torch-tensor")
        if not isinstance(stride, (tuple, list)) or len(stride) != len(size) or not all(
            type(s) is int and 0 <= s < 2**62 for s in stride
        ):
            raise FormatError(f"tensor {name}: stride does not match its size", where, "torch-tensor")
        if type(offset) is not int or not 0 <= offset < 2**62:
            raise FormatError(f"tensor {name}: bad storage offset", where, "torch-tensor")
        dtype = ref.dtype.dtype if ref.dtype is not None else storage.dtype
        if dtype not in DTYPES:
            raise FormatError(f"tensor {name}: unknown dtype {dtype}", where, "torch-tensor")
        if name in self.asset.tensors:
            raise FormatError(f"two tensors are named {name}", where, "torch-tensor")
        root = self._root_record(storage)
        if root.dtype != dtype and ref.dtype is None:
            raise FormatError(f"tensor {name}: dtype differs from its storage", where, "torch-tensor")
        if not root.present:
            raise FormatError(f"tensor {name}: storage record {root.key} is missing", where, "torch-tensor")
        nbytes = root.nbytes
        itemsize = DTYPES[dtype].itemsize
        storage_offset = offset + (storage.view_offset * DTYPES[root.dtype].itemsize) // itemsize
        self.asset.tensors[name] = TensorInfo(
            name=name, dtype=dtype, shape=tuple(size), file=self.asset.path, data_offset=root.data_offset,
            storage_key=root.key, storage_nbytes=nbytes, storage_offset=storage_offset, stride=tuple(stride),
            byteorder=self.parsed.byteorder,
        )

    def _root_record(self, storage: StorageRecord) -> StorageRecord:
        """Legacy storage views share their root storage's record."""
        if storage.root_key is None:
            return storage
        return self.parsed.storages[storage.root_key]


def _int_tuple(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and all(type(d) is int and 0 <= d < 2**62 for d in value)


def _plain_list(value: list | tuple) -> bool:
    return len(value) <= 1024 and all(v is None or isinstance(v, (bool, int, float, str)) for v in value)


def _key_name(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, (UnknownGlobal, UnknownCall)):
        return key.qualname
    if isinstance(key, bytes):
        return key.decode("utf-8", "replace")
    if isinstance(key, Inert):
        return type(key).__name__
    return str(key)


# ---------------------------------------------------------------------------------------------
# container checks (validate)
# ---------------------------------------------------------------------------------------------
def check_torch_container(path: str | os.PathLike[str]) -> list[Finding]:
    """Every container-level problem of a torch checkpoint, as findings (never raises for bad input).

    zip: one root folder, only member names torch writes, no duplicate names, no encryption, local
    and central names agree, data records stored uncompressed, CRC of the small members, record
    size == numel x itemsize, every tensor view inside its storage. legacy: record sizes and
    trailing bytes. A file that cannot be parsed at all gives one ``error`` finding.
    """
    path = Path(path)
    where = str(path)
    findings: list[Finding] = []
    try:
        parsed = _parse_file(path)
    except (FormatError, UnsupportedFormatError) as exc:
        code = getattr(exc, "code", "torch-unsupported")
        return [Finding(code, "error", exc.message, exc.where or where)]
    if parsed.format == "torch-zip":
        with _open(path) as (fh, _size):
            findings.extend(_check_zip_members(fh, parsed, where))
    else:
        for note in parsed.notes:
            findings.append(Finding("torch-legacy-trailing", "warning", note, where))
    findings.extend(_check_records(parsed, where))
    findings.extend(_check_views(path, parsed, where))
    return findings


def _check_zip_members(fh: Any, parsed: _Parsed, where: str) -> list[Finding]:
    findings: list[Finding] = []
    root = parsed.zip_root or ""
    roots = sorted({e.name.split("/", 1)[0] for e in parsed.entries})
    if len(roots) > 1 or any("/" not in e.name for e in parsed.entries):
        findings.append(Finding("torch-zip-roots", "error",
                                f"members lie under more than one root folder: {', '.join(roots[:5])}", where))
    seen: set[str] = set()
    for entry in parsed.entries:
        at = f"{where}:{entry.name}"
        if entry.name in seen:
            findings.append(Finding("torch-zip-duplicate", "error", "member name appears twice", at))
        seen.add(entry.name)
        rel = entry.name[len(root) + 1:] if entry.name.startswith(root + "/") else None
        is_record = rel is not None and rel.startswith("data/") and rel[5:] in parsed.storages
        if rel is None or not (rel in TORCH_ZIP_MEMBERS or is_record):
            findings.append(Finding("torch-zip-member", "error", "member name torch never writes", at))
        if entry.encrypted:
            findings.append(Finding("torch-zip-encrypted", "error", "member has the encrypted flag", at))
        if entry.local_problem:
            findings.append(Finding("torch-zip-local-header", "error", entry.local_problem, at))
        elif entry.local_name != entry.name:
            findings.append(Finding("torch-zip-name-mismatch", "error",
                                    f"local header names it {entry.local_name!r}", at))
        if is_record and not entry.stored:
            findings.append(Finding("torch-zip-compressed", "error",
                                    "data record is not stored uncompressed (cannot be used in place)", at))
        if not is_record and entry.data_start is not None and not entry.encrypted:
            try:
                data = read_member(fh, entry, where)
            except FormatError as exc:
                findings.append(Finding("torch-zip-member-unreadable", "error", exc.message, at))
                continue
            if zlib.crc32(data) != entry.crc:
                findings.append(Finding("torch-zip-crc", "error", "CRC-32 does not match the central directory", at))
    return findings


def _check_records(parsed: _Parsed, where: str) -> list[Finding]:
    findings = []
    for key, record in sorted(parsed.storages.items()):
        at = f"{where}:storage {key}"
        if not record.present:
            findings.append(Finding("torch-storage-missing", "error", "storage record is missing", at))
        elif record.nbytes != record.expected_nbytes:
            findings.append(Finding(
                "torch-storage-size", "error",
                f"record holds {record.nbytes} bytes, {record.numel} x {DTYPES[record.dtype].itemsize}"
                f" = {record.expected_nbytes} expected", at))
    return findings


def _check_views(path: Path, parsed: _Parsed, where: str) -> list[Finding]:
    """Every tensor view must lie inside its storage."""
    findings = []
    asset = Asset(path=path, format=parsed.format)
    try:
        _Flattener(asset, parsed, where).build(parsed.root)
    except FormatError as exc:
        return [Finding(exc.code, "error", exc.message, where)]
    for name, info in asset.tensors.items():
        if info.numel == 0:
            continue
        last = info.last_element
        capacity = (info.storage_nbytes or 0) // DTYPES[info.dtype].itemsize
        if last >= capacity:
            findings.append(Finding("torch-view-bounds", "error",
                                    f"view reaches element {last} of a storage of {capacity}", f"{where}:{name}"))
    return findings
