"""The registry API on single files: add, byte-exact export, hashes, names, verbs, verify, gc, du."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from _registry_helpers import EVIL_PICKLE, sha256_of
from safetensors.numpy import load_file

from assetkit import Registry
from assetkit.errors import AssetkitError, UnsafeInputError
from assetkit.factory import make_fixture


@pytest.fixture()
def reg(tmp_path: Path) -> Registry:
    registry = Registry(tmp_path / "reg")
    yield registry
    registry.close()


def _autov1(path: Path) -> str:
    with open(path, "rb") as fh:
        fh.seek(0x100000)
        return hashlib.sha256(fh.read(0x10000)).hexdigest()[:8]


@pytest.mark.parametrize("fixture_id", ["lora_sd15_kohya", "vae_sd", "ti_sd15_a1111", "te_clip_l"])
def test_added_single_file_exports_byte_for_byte(reg: Registry, tmp_path: Path, fixture_id: str) -> None:
    src = make_fixture(fixture_id, tmp_path / "in", "safetensors")
    result = reg.add(src)
    assert result.created
    record = result.record
    assert record.sha256 == sha256_of(src)
    out = reg.export(record.name, tmp_path / "out.safetensors", form="file")
    exported = Path(out["path"])
    assert sha256_of(exported) == sha256_of(src)
    # the safetensors library agrees, tensor by tensor
    a, b = load_file(src), load_file(exported)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_hashes_are_recorded_and_found(reg: Registry, tmp_path: Path) -> None:
    src = make_fixture("lora_sd15_kohya", tmp_path, "safetensors")
    record = reg.add(src, name="my-lora").record
    full = sha256_of(src)
    raw = src.read_bytes()
    data_start = 8 + int.from_bytes(raw[:8], "little")
    tensor_hash = hashlib.sha256(raw[data_start:]).hexdigest()  # kohya sshs_model_hash
    assert record.hashes["sha256"] == [full]
    assert record.hashes["autov2"] == [full[:10]]
    assert record.hashes["autov1"] == [_autov1(src)]
    assert record.hashes["tensor_sha256"] == [tensor_hash]
    for value in (full, full[:10], _autov1(src), tensor_hash, tensor_hash[:12]):
        assert reg.resolve(value).name == "my-lora"
        assert [m["asset"] for m in reg.find(value)] == ["my-lora"]
    assert reg.find("abcdef0123") == []


def test_re_adding_never_rehashes_and_returns_the_existing_record(reg: Registry, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_fixture("vae_sd", tmp_path, "safetensors")
    first = reg.add(src)
    from assetkit.registry import hashes

    def no_hashing(*args: object, **kwargs: object) -> None:
        raise AssertionError("an unchanged file was hashed again")

    monkeypatch.setattr(hashes, "hash_path", no_hashing)
    again = reg.add(src)
    assert not again.created and again.record.id == first.record.id
    assert len(reg.ls()) == 1


def test_pickle_is_scanned_stored_as_safetensors_and_found_by_its_sha256(reg: Registry, tmp_path: Path) -> None:
    src = make_fixture("vae_sd", tmp_path, "torch-zip")
    record = reg.add(src).record
    pickle_sha = sha256_of(src)
    assert record.hashes["source_sha256"] == [pickle_sha]
    assert reg.resolve(pickle_sha).id == record.id
    out = Path(reg.export(record.name, tmp_path / "out.safetensors", form="file")["path"])
    assert out.read_bytes()[:8] != b"PK\x03\x04"
    import torch

    original = torch.load(src, map_location="cpu", weights_only=True)  # our own fixture: the oracle
    state = original.get("state_dict", original)
    exported = load_file(out)
    assert set(exported) == set(state)
    assert all(np.array_equal(exported[k], state[k].numpy()) for k in exported)
    assert not reg.add(src).created  # the pickle's sha256 answers for it


def test_unsafe_pickle_is_refused_and_nothing_is_recorded(reg: Registry, tmp_path: Path) -> None:
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(EVIL_PICKLE)
    with pytest.raises(UnsafeInputError):
        reg.add(evil)
    assert reg.ls(include_parts=True) == []
    assert reg.verify().ok


@pytest.mark.parametrize("name", ["", "a/b", "..", ".", "x\\y", "-rf", "a\x00b", " padded", "c:d"])
def test_names_cannot_escape(reg: Registry, tmp_path: Path, name: str) -> None:
    src = make_fixture("ti_sd15_a1111", tmp_path, "safetensors")
    with pytest.raises(AssetkitError, match="invalid name"):
        reg.add(src, name=name)
    assert reg.ls() == []


def test_ls_tag_rename_rm_and_overrides(reg: Registry, tmp_path: Path) -> None:
    lora = reg.add(make_fixture("lora_sd15_kohya", tmp_path, "safetensors"), tags=["style"]).record
    vae = reg.add(make_fixture("vae_sd", tmp_path, "safetensors"), name="vae-a", kind="vae", family="sd1",
                  description="the usual one").record
    assert vae.family == "sd1" and vae.overrides["family"] == {"given": "sd1", "probe": None}
    assert [a["name"] for a in reg.ls(kind="lora")] == [lora.name]
    assert [a["name"] for a in reg.ls(tag="style")] == [lora.name]
    assert [a["name"] for a in reg.ls(pattern="vae-*")] == ["vae-a"]
    assert reg.tag("vae-a", add=["fav"]).tags == ["fav"]
    assert reg.tag("vae-a", remove=["fav"]).tags == []
    reg.rename("vae-a", "vae-b")
    with pytest.raises(AssetkitError, match="taken"):
        reg.rename("vae-b", lora.name)
    with pytest.raises(AssetkitError, match="taken"):
        reg.add(make_fixture("ti_sd15_a1111", tmp_path, "safetensors"), name="vae-b")
    assert reg.show("vae-b")["description"] == "the usual one"
    assert reg.rm("vae-b") == ["vae-b"]
    with pytest.raises(AssetkitError, match="no asset"):
        reg.resolve("vae-b")
    assert reg.verify().ok


def test_verify_reports_corrupt_and_missing_blobs(reg: Registry, tmp_path: Path) -> None:
    record = reg.add(make_fixture("vae_sd", tmp_path, "safetensors")).record
    assert reg.verify().ok
    blob = record.canonical_sha256
    path = reg.store.path(blob)
    os.chmod(path, 0o644)
    with open(path, "r+b") as fh:
        fh.seek(200)
        fh.write(b"\xff\xff")
    report = reg.verify()
    assert not report.ok and [f.code for f in report.findings] == ["blob-corrupt"]
    assert record.name in report.findings[0].message
    assert reg.verify(quick=True).ok  # same size: only a rehash sees it
    path.unlink()
    assert [f.code for f in reg.verify(quick=True).findings] == ["blob-missing"]
    with pytest.raises(AssetkitError, match="missing"):
        reg.export(record.name, tmp_path / "out.safetensors", form="file")
    assert not (tmp_path / "out.safetensors").exists()


def test_gc_removes_only_unreferenced_blobs_with_a_dry_run_and_a_grace_period(reg: Registry, tmp_path: Path) -> None:
    keep = reg.add(make_fixture("vae_sd", tmp_path, "safetensors")).record
    drop = reg.add(make_fixture("lora_sd15_kohya", tmp_path, "safetensors")).record
    stray = reg.store.put_bytes(b"written by an add that was killed before indexing")
    reg.rm(drop.name)
    young = reg.gc(grace_seconds=3600, dry_run=True)
    assert stray not in young.blobs and young.kept_young == 1
    dry = reg.gc(dry_run=True, grace_seconds=0)
    assert stray in dry.blobs and len(dry.blobs) == 3  # canonical + header of the LoRA, the stray
    assert reg.store.has(stray)
    done = reg.gc(grace_seconds=0)
    assert set(done.blobs) == set(dry.blobs) and not reg.store.has(stray)
    assert reg.verify().ok
    out = reg.export(keep.name, tmp_path / "still.safetensors", form="file")
    assert out["sha256"] == keep.sha256


def test_du_and_manifest_round_trip(reg: Registry, tmp_path: Path) -> None:
    src = make_fixture("lora_sd15_kohya", tmp_path, "safetensors")
    record = reg.add(src, tags=["x"]).record
    report = reg.du()
    assert report.disk_bytes == sum(reg.store.size(s) for s in reg.store.iter_blobs())
    assert report.added_bytes == src.stat().st_size
    manifest = json.loads(json.dumps(reg.manifest(record.name)))
    assert set(manifest["blobs"]) == set(reg.store.iter_blobs())
    other = Registry(tmp_path / "other")
    with pytest.raises(AssetkitError, match="not in the store"):
        other.import_manifest(manifest)
    for sha in manifest["blobs"]:
        other.store.put_file(reg.store.path(sha), expected_sha256=sha)
    imported = other.import_manifest(manifest)
    assert other.import_manifest(manifest).id == imported.id  # idempotent
    assert imported.sha256 == record.sha256 and imported.tags == ["x"]
    out = other.export(imported.name, tmp_path / "copy.safetensors", form="file")
    assert sha256_of(Path(out["path"])) == sha256_of(src)
    assert other.verify().ok


def test_path_gives_a_loadable_file(reg: Registry, tmp_path: Path) -> None:
    src = make_fixture("lora_sd15_kohya", tmp_path, "safetensors")
    reg.add(src, name="lora")
    path = reg.path("lora", layout="file")
    assert path.suffix == ".safetensors" and sha256_of(path) == sha256_of(src)
    assert reg.path("lora", layout="file") == path  # built once
    assert reg.path("lora") == path  # the default: a file for a single-file asset
    with pytest.raises(AssetkitError, match="layout 'file'"):
        reg.path("lora", layout="diffusers")
