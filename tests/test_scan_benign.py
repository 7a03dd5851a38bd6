"""Benign checkpoints written by real ``torch.save`` must scan ``safe`` and read back exactly.

Tensor bytes from :func:`read_torch_file` are compared with what ``torch.load(weights_only=False)``
returns for the same file (allowed here: the test wrote the file itself).
"""

from __future__ import annotations

import io
import json
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from assetkit.check.scan import scan_path
from assetkit.cli import main
from assetkit.formats.torch_pickle import check_torch_container, read_torch_file


def raw(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def flat(obj, prefix=""):
    """name -> tensor, the way the reader names them (dicts joined with '.', lists by index)."""
    out = {}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for key, value in items:
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, torch.Tensor):
            out[name] = value
        elif isinstance(value, (dict, list, tuple)):
            out.update(flat(value, name))
    return out


def assert_same_tensors(path: Path, expected: dict[str, torch.Tensor]) -> None:
    loaded = flat(torch.load(path, weights_only=False))
    loaded = {k: v for k, v in loaded.items() if k in expected} if expected else loaded
    with read_torch_file(path) as asset:
        assert set(asset.tensors) == set(expected), sorted(set(asset.tensors) ^ set(expected))
        for name, ref in expected.items():
            info = asset.tensors[name]
            assert info.shape == tuple(ref.shape), name
            assert bytes(asset.tensor_bytes(name)) == raw(ref), name
            assert raw(loaded.get(name, ref)) == raw(ref)


def assert_safe(path: Path) -> None:
    result = scan_path(path)
    assert result.verdict == "safe", result.to_dict()
    assert not any(f.failing for f in result.findings)


def save(obj, path: Path, legacy: bool = False) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_plain_state_dict(tmp_path: Path, legacy: bool):
    sd = {"conv.weight": torch.randn(4, 3, 3, 3), "conv.bias": torch.randn(4), "fc.weight": torch.randn(2, 8)}
    path = save(sd, tmp_path / "plain.pt", legacy)
    assert_safe(path)
    assert_same_tensors(path, sd)
    assert check_torch_container(path) == []
    assert read_torch_file(path).format == ("torch-legacy" if legacy else "torch-zip")


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_lightning_style_dict(tmp_path: Path, legacy: bool):
    sd = {"model.diffusion_model.out.0.weight": torch.randn(4), "first_stage_model.decoder.conv_out.bias": torch.ones(3)}
    ckpt = {"epoch": 6, "global_step": 470000, "pytorch-lightning_version": "1.4.2", "state_dict": sd,
            "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(4)}}}], "lr_schedulers": []}
    path = save(ckpt, tmp_path / "lightning.ckpt", legacy)
    assert_safe(path)
    with read_torch_file(path) as asset:
        assert asset.metadata["global_step"] == 470000
        assert asset.metadata["epoch"] == 6
        assert asset.metadata["pytorch-lightning_version"] == "1.4.2"
        assert asset.unwrapped_key == "state_dict"
        assert any("state_dict" in note for note in asset.notes)
    assert_same_tensors_wrapped(path, sd)


def assert_same_tensors_wrapped(path: Path, sd: dict[str, torch.Tensor]) -> None:
    with read_torch_file(path) as asset:
        assert set(asset.tensors) == set(sd)
        for name, ref in sd.items():
            assert bytes(asset.tensor_bytes(name)) == raw(ref)


DTYPE_CASES = {
    "fp16": torch.randn(3, 5).half(),
    "bf16": torch.randn(7).bfloat16(),
    "fp32": torch.randn(2, 2),
    "fp64": torch.randn(3).double(),
    "bool": torch.tensor([True, False, True]),
    "int64": torch.arange(6).reshape(2, 3),
    "int32": torch.arange(4, dtype=torch.int32),
    "uint8": torch.arange(9, dtype=torch.uint8),
    "int8": torch.tensor([-1, 2], dtype=torch.int8),
    "empty": torch.zeros(0, 4),
    "zero_dim": torch.tensor(3.5),
    "uint16": torch.arange(5, dtype=torch.int32).to(torch.uint16),
    "fp8": torch.randn(4).to(torch.float8_e4m3fn),
}


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_dtypes_and_shapes(tmp_path: Path, legacy: bool):
    cases = dict(DTYPE_CASES)
    if legacy:  # the legacy writer has no untyped storages for the newest dtypes
        cases = {k: v for k, v in cases.items() if k not in ("uint16", "fp8")}
    path = save(cases, tmp_path / "dtypes.pt", legacy)
    assert_safe(path)
    assert_same_tensors(path, cases)
    with read_torch_file(path) as asset:
        assert asset.tensors["bf16"].dtype == "BF16"
        assert asset.tensors["zero_dim"].shape == ()
        assert asset.tensors["empty"].shape == (0, 4)
        assert asset.tensors["bool"].dtype == "BOOL"


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_shared_storage_views_and_tied_weights(tmp_path: Path, legacy: bool):
    base = torch.randn(4, 6)
    sd = {"a": base, "tied": base, "rows": base[1:3], "transposed": base.t(), "flat_slice": base.view(-1)[5:17],
          "column": base[:, 2], "strided": base[::2, ::3]}
    path = save(sd, tmp_path / "views.pt", legacy)
    assert_safe(path)
    assert_same_tensors(path, sd)
    assert check_torch_container(path) == []
    with read_torch_file(path) as asset:
        assert asset.tensors["a"].view_key == asset.tensors["tied"].view_key
        assert asset.tensors["rows"].storage_key == asset.tensors["a"].storage_key
        assert asset.tensors["rows"].storage_offset == 6
        assert not asset.tensors["transposed"].is_contiguous


def test_parameters_and_module_state_dict(tmp_path: Path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    obj = {"param": torch.nn.Parameter(torch.randn(2, 2)), "model": model.state_dict()}
    path = save(obj, tmp_path / "params.pt")
    assert_safe(path)
    expected = {"param": obj["param"], **{f"model.{k}": v for k, v in model.state_dict().items()}}
    assert_same_tensors(path, expected)


def test_numpy_scalars_in_metadata(tmp_path: Path):
    obj = {"w": torch.ones(2), "global_step": np.int64(1234), "lr": np.float32(0.5), "best": np.float64(1.25)}
    path = save(obj, tmp_path / "np.ckpt")
    result = scan_path(path)
    assert result.verdict == "safe"
    assert {f.code for f in result.findings} == {"known-global"}
    assert all(f.severity == "info" for f in result.findings)
    with read_torch_file(path) as asset:
        assert asset.metadata["global_step"] == 1234
        assert asset.metadata["lr"] == 0.5
        assert asset.metadata["best"] == 1.25
        assert any("numpy" in name for name in asset.unknown_globals)


def test_a1111_textual_inversion(tmp_path: Path):
    emb = torch.randn(2, 768)
    obj = {"string_to_token": {"*": 265}, "string_to_param": {"*": torch.nn.Parameter(emb)}, "name": "my-style",
           "step": 3000, "sd_checkpoint": "4bc8a2b1", "sd_checkpoint_name": "v1-5-pruned-emaonly"}
    path = save(obj, tmp_path / "my-style.pt")
    assert_safe(path)
    assert_same_tensors(path, {"string_to_param.*": emb})
    with read_torch_file(path) as asset:
        assert asset.metadata["name"] == "my-style"
        assert asset.metadata["step"] == 3000
        assert asset.metadata["sd_checkpoint_name"] == "v1-5-pruned-emaonly"


@pytest.fixture
def fake_lightning():
    """A stand-in ``pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint`` so that
    ``torch.save`` pickles it under its real name."""
    names = ["pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"]
    saved = {n: sys.modules.get(n) for n in names}
    modules = {n: types.ModuleType(n) for n in names}

    class ModelCheckpoint:
        def __init__(self) -> None:
            self.monitor = "val/loss"
            self.best_model_score = torch.tensor(0.123)
            self.save_top_k = 1

    ModelCheckpoint.__module__ = names[-1]
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    modules[names[-1]].ModelCheckpoint = ModelCheckpoint
    sys.modules.update(modules)
    yield ModelCheckpoint
    for n, m in saved.items():
        if m is None:
            sys.modules.pop(n, None)
        else:
            sys.modules[n] = m


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_sd1_checkpoint_with_lightning_callback(tmp_path: Path, fake_lightning, legacy: bool):
    sd = {"model.diffusion_model.input_blocks.0.0.weight": torch.randn(8, 4, 3, 3)}
    ckpt = {"epoch": 0, "global_step": 470000, "state_dict": sd,
            "callbacks": {fake_lightning: {"best_model_score": None, "monitor": "val/loss"}},
            "callback_instance": fake_lightning()}
    path = save(ckpt, tmp_path / "sd-v1-4.ckpt", legacy)
    result = scan_path(path)
    assert result.verdict == "safe", result.to_dict()
    info = [f for f in result.findings if f.code == "known-global"]
    assert info and all(f.severity == "info" for f in info)
    assert any("ModelCheckpoint" in f.message for f in info)
    with read_torch_file(path) as asset:
        assert asset.unknown_globals == ["pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"]
        assert set(asset.tensors) == set(sd)
        assert asset.metadata["global_step"] == 470000
    assert_same_tensors_wrapped(path, sd)


def test_big_endian_byteorder_record(tmp_path: Path):
    sd = {"w": torch.randn(3, 4), "h": torch.randn(5).half(), "i": torch.arange(4), "t": torch.randn(4, 2)}
    sd["view"] = sd["w"].t()
    little = save(sd, tmp_path / "little.pt")
    big = tmp_path / "big.pt"
    itemsize = {}
    with read_torch_file(little) as asset:
        for info in asset.tensors.values():
            itemsize[info.storage_key] = {"F32": 4, "F16": 2, "I64": 8}[info.dtype]
    with zipfile.ZipFile(little) as src, zipfile.ZipFile(big, "w", zipfile.ZIP_STORED) as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            rel = item.filename.split("/", 1)[1]
            if rel == "byteorder":
                data = b"big"
            elif rel.startswith("data/"):
                size = itemsize[rel[5:]]
                data = np.frombuffer(data, dtype=f"<u{size}").astype(f">u{size}").tobytes()
            dst.writestr(item, data)
    reloaded = torch.load(big, weights_only=False)  # torch swaps big-endian records to native order
    for name, ref in sd.items():
        assert torch.equal(reloaded[name], ref)
    assert_safe(big)
    with read_torch_file(big) as asset:
        assert asset.tensors["w"].byteorder == "big"
        for name, ref in sd.items():
            assert bytes(asset.tensor_bytes(name)) == raw(ref), name


def test_real_safetensors_is_safe(tmp_path: Path):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({"a": torch.randn(3, 3), "b": torch.zeros(2, dtype=torch.int64)}, str(path))
    assert_safe(path)


def test_cli_on_benign_folder(tmp_path: Path):
    folder = tmp_path / "models"
    folder.mkdir()
    save({"w": torch.ones(2)}, folder / "a.pt")
    save({"w": torch.ones(2)}, folder / "b.ckpt", legacy=True)
    (folder / "notes.txt").write_text("not a model")
    junit = tmp_path / "scan.xml"
    out = CliRunner().invoke(main, ["scan", "--json", "--junit", str(junit), str(folder)])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert [Path(r["path"]).name for r in doc["results"]] == ["a.pt", "b.ckpt"]
    assert doc["summary"]["safe"] == 2
    assert b"<testsuite" in junit.read_bytes() and b'failures="0"' in junit.read_bytes()


def test_sd_scale_data_pkl_interprets_completely(tmp_path: Path):
    """An SD-1.x-sized data.pkl (1,143 tensors) interprets to every tensor (its speed: bench/bench_parse.py)."""
    from assetkit.formats.pickle_vm import TensorRef, run_pickle

    layout = json.loads((Path(__file__).resolve().parents[2] / "shared/layouts/sd15.json").read_text())["keys"]
    buf = io.BytesIO()
    torch.save({"state_dict": {k: torch.zeros(1, dtype=torch.float16) for k in layout}}, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    value, _trace = run_pickle(data)
    assert list(value["state_dict"]) == list(layout)
    assert all(isinstance(t, TensorRef) for t in value["state_dict"].values())
