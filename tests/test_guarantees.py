"""Documented guarantees that mutation testing found no test holding (issue 7, part 3).

Each test fails when the guarantee's code is deleted or weakened: scan defences that would
otherwise let a malicious file scan ``safe``, caps and boundaries, rare byte paths, durability.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from assetkit.check.scan import scan_path
from assetkit.formats.pickle_vm import Limits, PickleLimitError, run_pickle

MARKER = "MARKER"


def _os_system_pickle(tmp: Path) -> bytes:
    command = f"touch {tmp / MARKER}".encode()
    return b"\x80\x02cos\nsystem\n(X" + struct.pack("<I", len(command)) + command + b"tR."


def _torch_zip_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.ones(4)}, buf)
    return buf.getvalue()


def _members(data: bytes) -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(info, z.read(info.filename)) for info in z.infolist()]


def _torch_zip_with(path: Path, name: str, data: bytes, compress_type: int = zipfile.ZIP_STORED) -> Path:
    """A real torch.save zip with one more member ``<root>/name``."""
    members = _members(_torch_zip_bytes())
    root = members[0][0].filename.split("/")[0]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for info, member in members:
            z.writestr(info.filename, member)
        z.writestr(f"{root}/{name}", data, compress_type=compress_type)
    return path


def _codes(path: Path) -> set[tuple[str, str]]:
    return {(f.code, f.severity) for f in scan_path(path).findings}


# ---- scan defences ------------------------------------------------------------------------------
def test_benign_pickle_followed_by_a_torch_zip_is_a_polyglot(tmp_path):
    path = tmp_path / "polyglot.ckpt"
    path.write_bytes(pickle.dumps({"step": 1}, protocol=2) + _torch_zip_bytes())
    result = scan_path(path)
    assert result.verdict != "safe"
    assert ("zip-polyglot", "suspicious") in {(f.code, f.severity) for f in result.findings}


def test_bytes_hidden_between_zip_members_are_found(tmp_path):
    path = tmp_path / "hidden.pt"
    members = _members(_torch_zip_bytes())
    with open(path, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as z:
        for i, (info, data) in enumerate(members):
            z.writestr(info.filename, data)
            if i == 0:
                z.fp.write(_os_system_pickle(tmp_path))  # a payload no member covers
                z.start_dir = z.fp.tell()
    assert torch.load(path, weights_only=True)["w"].tolist() == [1.0] * 4  # still a loadable checkpoint
    result = scan_path(path)
    assert result.verdict != "safe"
    assert any(code == "zip-hidden-bytes" for code, _ in _codes(path))
    assert not (tmp_path / MARKER).exists()


def test_a_member_with_non_stored_compression_is_not_trusted(tmp_path):
    path = _torch_zip_with(tmp_path / "bzip2.pt", "extra.pkl", _os_system_pickle(tmp_path), zipfile.ZIP_BZIP2)
    result = scan_path(path)
    assert result.verdict != "safe"
    assert ("zip-compression", "suspicious") in _codes(path)


def test_a_large_member_no_storage_names_is_not_trusted(tmp_path, monkeypatch):
    import assetkit.check.scan as scan_module

    monkeypatch.setattr(scan_module, "MAX_PICKLE_MEMBER", 1024)  # the cap, scaled down to a small file
    path = _torch_zip_with(tmp_path / "large.pt", "blob", _os_system_pickle(tmp_path) + b"\x00" * 4096)
    result = scan_path(path)
    assert result.verdict != "safe"
    assert ("zip-large-member", "suspicious") in _codes(path)


def test_trailing_bytes_after_a_legacy_checkpoint_are_reported(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    with open(path, "ab") as fh:
        fh.write(b"\x00" * 7)  # not a pickle
    codes = _codes(path)
    assert ("trailing-data", "warning") in codes
    assert scan_path(path).verdict == "safe"  # a warning, not a verdict change


def test_python2_names_mapped_to_python3_keep_their_danger(tmp_path):
    """``commands.getoutput`` is what protocol 2 maps to ``subprocess.getoutput`` (fix_imports)."""
    path = tmp_path / "py2.pt"
    path.write_bytes(b"\x80\x02ccommands\ngetoutput\n(X\x04\x00\x00\x00truetR.")
    result = scan_path(path)
    assert result.verdict == "unsafe"
    assert any(f.severity == "dangerous" and "subprocess" in f.message + f.where for f in result.findings), \
        result.to_dict()


# ---- caps and boundaries --------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [
    b"S'" + b"a" * 300 + b"'\n.",              # STRING (protocol 0)
    b"V" + b"a" * 300 + b"\n.",                # UNICODE (protocol 0)
], ids=["STRING", "UNICODE"])
def test_max_bytes_holds_for_text_protocol_strings(stream):
    limits = Limits(max_bytes=256)
    with pytest.raises(PickleLimitError, match="256-byte cap"):
        run_pickle(stream, limits=limits)
    value, _ = run_pickle(stream, limits=Limits(max_bytes=1024))
    assert len(value) == 300


@pytest.mark.slow
def test_header_of_exactly_the_cap_is_read_and_one_more_byte_is_refused(tmp_path):
    from assetkit.formats.safetensors import HEADER_CAP, read_safetensors
    from assetkit.formats.sniff import HEADER_CAP as SNIFF_CAP

    assert HEADER_CAP == SNIFF_CAP == 100_000_000
    for length, ok in ((HEADER_CAP, True), (HEADER_CAP + 1, False)):
        path = tmp_path / f"h{length}.safetensors"
        header = b'{"__metadata__":{"format":"pt"}}'
        with open(path, "wb") as fh:
            fh.write(struct.pack("<Q", length) + header + b" " * (length - len(header)))
        if ok:
            with read_safetensors(path) as asset:
                assert asset.tensors == {} and asset.metadata == {"format": "pt"}
        else:
            with pytest.raises(Exception, match="cap"):
                read_safetensors(path)
        path.unlink()


# ---- rare paths that give wrong bytes silently --------------------------------------------------------
def test_negative_fp8_nan_is_counted_by_numerics(tmp_path):
    from safetensors.torch import save_file

    from assetkit.check.validate import validate_path

    raw = torch.tensor([0x00, 0x38, 0xFF, 0x7F, 0x38], dtype=torch.uint8)  # 0, 1.0, -NaN, +NaN, 1.0
    save_file({"w": raw.view(torch.float8_e4m3fn)}, str(tmp_path / "f8.safetensors"))
    assert torch.isnan(raw.view(torch.float8_e4m3fn).float()).sum() == 2  # the oracle: both are NaN
    report = validate_path(tmp_path / "f8.safetensors", numerics=True)
    nan = [f for f in report.problems if f.code == "numerics-nan"]
    assert nan and "(2 value(s))" in nan[0].message, [f.to_dict() for f in report.problems]


def _legacy_with_sys_info(path: Path, tensor: torch.Tensor, *, big_endian: bool) -> None:
    """A legacy torch.save file, its sys_info (and storage records) rewritten for big-endian."""
    import pickletools

    buf = io.BytesIO()
    torch.save({"w": tensor}, buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    ends = []
    stream = io.BytesIO(data)
    for _ in range(5):  # magic, protocol, sys_info, main, storage keys: walked, never run
        for _op, _arg, pos in pickletools.genops(stream):
            end = pos
        ends.append(end + 1)
        stream.seek(end + 1)
    sys_info = {"protocol_version": 1001, "little_endian": not big_endian,
                "type_sizes": {"short": 2, "int": 4, "long": 4}}
    records = data[ends[4]:]
    numel = struct.unpack_from("<q", records)[0]
    payload = records[8:]
    if big_endian:
        records = struct.pack(">q", numel) + np.frombuffer(payload, "<f4").astype(">f4").tobytes()
    path.write_bytes(data[:ends[1]] + pickle.dumps(sys_info, protocol=2) + data[ends[2]:ends[4]] + records)


def test_legacy_big_endian_checkpoint_reads_as_the_same_values(tmp_path):
    from assetkit.formats.torch_pickle import read_torch_file

    tensor = torch.tensor([1.0, -2.5, 3.25, 1e-3])
    path = tmp_path / "be.pt"
    _legacy_with_sys_info(path, tensor, big_endian=True)
    with read_torch_file(path) as asset:
        got = np.frombuffer(bytes(asset.tensor_bytes("w")), dtype="<f4")
    assert got.tolist() == tensor.tolist()


def test_legacy_storage_view_reads_the_viewed_bytes(tmp_path):
    """A storage that is a view of another (``view_metadata``, old torch): the tensor reads the
    viewed slice of the root storage, not its start."""
    from assetkit.formats.torch_pickle import read_torch_file

    root = torch.arange(8, dtype=torch.float32)
    buf = io.BytesIO()
    torch.save({"w": root}, buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    # The main pickle holds persistent id ('storage', FloatStorage, key, 'cpu', 8, None): turn its
    # view_metadata into (key, 2, 4) -- a 4-element view at offset 2 -- and the tensor's size into 4.
    main_start = _nth_pickle_start(data, 3)
    main_end = _nth_pickle_start(data, 4)
    main = data[main_start:main_end]
    rebuilt = _with_view(main)
    if rebuilt is None:
        pytest.skip("this torch writes no view_metadata slot to rewrite")
    patched = data[:main_start] + rebuilt + data[main_end:]
    path = tmp_path / "view.pt"
    path.write_bytes(patched)
    with read_torch_file(path) as asset:
        got = np.frombuffer(bytes(asset.tensor_bytes("w")), dtype="<f4")
    assert got.tolist() == [2.0, 3.0, 4.0, 5.0]


def _nth_pickle_start(data: bytes, n: int) -> int:
    import pickletools

    stream = io.BytesIO(data)
    pos = 0
    for _ in range(n):
        for _op, _arg, at in pickletools.genops(stream):
            end = at
        pos = end + 1
        stream.seek(pos)
    return pos


def _with_view(main: bytes) -> bytes | None:
    """Rebuild the main pickle with a view_metadata of (key, 2, 4) and a 4-element tensor, by
    re-pickling the same structure with stand-in classes (opcodes only; nothing is loaded)."""
    import pickletools

    ops = list(pickletools.genops(main))
    key = next((arg for op, arg, _ in ops if op.name in ("BINUNICODE", "SHORT_BINUNICODE") and arg
                and arg.isdigit()), None)
    if key is None:
        return None

    class Storage:
        def __reduce__(self):
            return (torch._utils._rebuild_tensor, ())

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if obj is STORAGE:
                return ("storage", torch.FloatStorage, key, "cpu", 8, (key + "v", 2, 4))
            return None

    STORAGE = object()

    class Tensor:
        def __reduce__(self):
            return (torch._utils._rebuild_tensor_v2, (STORAGE, 0, (4,), (1,), False, {}))

    out = io.BytesIO()
    Pickler(out, protocol=2).dump({"w": Tensor()})
    return out.getvalue()


# ---- durability -----------------------------------------------------------------------------------
def test_atomic_write_fsyncs_the_file_before_the_rename(tmp_path, monkeypatch):
    from assetkit.formats import atomic

    events: list[tuple[str, object]] = []
    real_fsync, real_link, real_replace = os.fsync, os.link, os.replace

    def fsync(fd):
        events.append(("fsync", os.fstat(fd).st_ino))
        return real_fsync(fd)

    def link(src, dst, *a, **k):
        events.append(("place", os.stat(src).st_ino))
        return real_link(src, dst, *a, **k)

    def replace(src, dst, *a, **k):
        events.append(("place", os.stat(src).st_ino))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "link", link)
    monkeypatch.setattr(atomic.os, "replace", replace)
    for overwrite in (False, True):
        events.clear()
        dest = tmp_path / "out.bin"
        with atomic.atomic_write(dest, overwrite=overwrite) as fh:
            fh.write(b"data")
        placed = [i for i, (kind, _) in enumerate(events) if kind == "place"]
        assert placed, events
        inode = events[placed[0]][1]
        synced_before = [i for i, (kind, ino) in enumerate(events) if kind == "fsync" and ino == inode]
        assert synced_before and synced_before[0] < placed[0], events
        assert dest.read_bytes() == b"data" and dest.stat().st_ino == inode
