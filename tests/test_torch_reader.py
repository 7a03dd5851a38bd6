"""The no-execution torch reader: layouts, offsets, errors, container checks."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import torch

from assetkit.errors import FormatError, UnsupportedFormatError
from assetkit.formats.torch_pickle import check_torch_container, read_torch_file


def rewrite_zip(src: Path, dst: Path, *, rename_root: str | None = None, compress: bool = False,
                edit=None) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            name = info.filename
            if rename_root:
                name = rename_root + "/" + name.split("/", 1)[1]
            if edit:
                name, data = edit(name, data)
                if name is None:
                    continue
            zout.writestr(name, data, zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED)
    return dst


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    torch.save({"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(4).half()}, path)
    return path


def test_data_offsets_point_at_the_records(ckpt: Path):
    with read_torch_file(ckpt) as asset, zipfile.ZipFile(ckpt) as z:
        raw = ckpt.read_bytes()
        for info in asset.tensors.values():
            member = z.read(f"model/data/{info.storage_key}")
            assert raw[info.data_offset:info.data_offset + len(member)] == member
            assert info.data_offset % 64 == 0  # torch aligns records
            assert info.storage_nbytes == len(member)


@pytest.mark.parametrize("root", ["archive", "model", "weird name"])
def test_any_root_folder(ckpt: Path, tmp_path: Path, root: str):
    path = rewrite_zip(ckpt, tmp_path / "renamed.pt", rename_root=root)
    with read_torch_file(path) as asset:
        assert set(asset.tensors) == {"a", "b"}
        assert bytes(asset.tensor_bytes("a")) == torch.arange(6, dtype=torch.float32).numpy().tobytes()


def test_compressed_records_have_no_offset(ckpt: Path, tmp_path: Path):
    path = rewrite_zip(ckpt, tmp_path / "deflated.pt", compress=True)
    with read_torch_file(path) as asset:
        assert asset.tensors["a"].data_offset is None
        with pytest.raises(FormatError, match="not stored in place"):
            asset.tensor_bytes("a")
    assert any(f.code == "torch-zip-compressed" for f in check_torch_container(path))


def test_torchscript_is_unsupported(tmp_path: Path):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(UnsupportedFormatError, match="TorchScript"):
        read_torch_file(path)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "empty"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "not a torch checkpoint"),
        (b"\x80\x02}q\x00.", "no torch magic"),
        (b"\x80\x02}q\x00", "truncated"),
        (b"PK\x03\x04" + b"\x00" * 60, "broken zip"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, content: bytes, fragment: str):
    path = tmp_path / "bad.ckpt"
    path.write_bytes(content)
    with pytest.raises(FormatError) as info:
        read_torch_file(path)
    assert fragment in str(info.value) and "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_truncated_zip_and_legacy(ckpt: Path, tmp_path: Path):
    raw = ckpt.read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(FormatError):
        read_torch_file(tmp_path / "cut.pt")
    legacy = tmp_path / "legacy.pt"
    torch.save({"a": torch.ones(1000)}, legacy, _use_new_zipfile_serialization=False)
    (tmp_path / "cut_legacy.pt").write_bytes(legacy.read_bytes()[:-100])
    with pytest.raises(FormatError, match="runs past the end"):
        read_torch_file(tmp_path / "cut_legacy.pt")


def test_zip_without_data_pkl(tmp_path: Path):
    path = tmp_path / "x.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("folder/readme.txt", "hello")
    with pytest.raises(FormatError, match="no folder/data.pkl"):
        read_torch_file(path)


def test_container_checks_find_tampering(ckpt: Path, tmp_path: Path):
    assert check_torch_container(ckpt) == []

    def shrink(name, data):
        return name, data[:-4] if name.endswith("data/0") else data

    codes = {f.code for f in check_torch_container(rewrite_zip(ckpt, tmp_path / "short.pt", edit=shrink))}
    assert "torch-storage-size" in codes and "torch-view-bounds" in codes

    def extra(name, data):
        return name, data

    path = rewrite_zip(ckpt, tmp_path / "extra.pt", edit=extra)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("model/notes.txt", "x")
        z.writestr("other/data.pkl", "x")
    codes = {f.code for f in check_torch_container(path)}
    assert {"torch-zip-member", "torch-zip-roots"} <= codes

    def drop(name, data):
        return (None, None) if name.endswith("data/1") else (name, data)

    codes = {f.code for f in check_torch_container(rewrite_zip(ckpt, tmp_path / "missing.pt", edit=drop))}
    assert "torch-tensor" in codes or "torch-storage-missing" in codes


def test_legacy_views_and_trailing_bytes(tmp_path: Path):
    path = tmp_path / "legacy.pt"
    base = torch.randn(3, 4)
    torch.save({"a": base, "b": base[1:], "c": base.t()}, path, _use_new_zipfile_serialization=False)
    with open(path, "ab") as fh:
        fh.write(b"\x00" * 10)
    with read_torch_file(path) as asset:
        assert asset.format == "torch-legacy"
        assert bytes(asset.tensor_bytes("b")) == base[1:].contiguous().numpy().tobytes()
        assert bytes(asset.tensor_bytes("c")) == base.t().contiguous().numpy().tobytes()
        assert any("10 bytes" in note for note in asset.notes)
    assert [f.code for f in check_torch_container(path)] == ["torch-legacy-trailing"]


def test_nested_dicts_lists_and_metadata(tmp_path: Path):
    path = tmp_path / "nested.pt"
    obj = {"ema": {"decay": 0.999, "shadow": {"w": torch.ones(2)}}, "layers": [torch.zeros(1), torch.ones(1)],
           "name": "run-1", "hparams": {"lr": 1e-4, "betas": [0.9, 0.999]}}
    torch.save(obj, path)
    with read_torch_file(path) as asset:
        assert set(asset.tensors) == {"ema.shadow.w", "layers.0", "layers.1"}
        assert asset.metadata == {"ema.decay": 0.999, "name": "run-1", "hparams.lr": 1e-4,
                                  "hparams.betas": [0.9, 0.999]}


def test_model_wrapper_unwrapped_only_when_plain(tmp_path: Path):
    path = tmp_path / "wrapped.pt"
    torch.save({"model": {"w": torch.ones(2)}, "step": 3}, path)
    with read_torch_file(path) as asset:
        assert set(asset.tensors) == {"w"}
        assert asset.metadata == {"step": 3}
        assert any("'model'" in note for note in asset.notes)
    torch.save({"model": {"w": torch.ones(2)}, "ema": {"w": torch.ones(2)}}, path)
    with read_torch_file(path) as asset:
        assert set(asset.tensors) == {"model.w", "ema.w"}


def test_reader_never_imports_torch(ckpt: Path):
    import subprocess
    import sys

    code = ("import sys; from assetkit.formats.torch_pickle import read_torch_file; "
            f"read_torch_file({str(ckpt)!r}); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_buffer_roundtrip_with_bytesio_saved_checkpoint(tmp_path: Path):
    buf = io.BytesIO()
    torch.save({"x": torch.tensor([1, 2, 3])}, buf)
    path = tmp_path / "mem.pt"
    path.write_bytes(buf.getvalue())
    with read_torch_file(path) as asset:
        assert asset.tensors["x"].dtype == "I64"


def test_validate_reports_duplicate_members_and_exits_1(ckpt: Path, tmp_path: Path):
    """A zip with a member written twice (later one wins in many zip readers) is not what torch
    writes: `assetkit validate` names it and exits 1."""
    import json
    import warnings

    from click.testing import CliRunner

    from assetkit.cli import main

    path = rewrite_zip(ckpt, tmp_path / "dup.pt", edit=lambda name, data: (name, data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        with zipfile.ZipFile(path, "a") as z:
            z.writestr(next(n for n in z.namelist() if n.endswith("data.pkl")), b"\x80\x02}q\x00.")
    result = CliRunner().invoke(main, ["validate", "--json", str(path)])
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert report["ok"] is False
    assert "torch-zip-duplicate" in {p["code"] for p in report["problems"]}
