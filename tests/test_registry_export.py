"""Getting assets out of the registry safely: ``export`` hands out independent files, a blob damaged
through a hard link is repaired by adding the original again, UI trees put components where the UI
reads them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from _registry_helpers import run, sha256_of, tiny_pipeline  # noqa: F401

from assetkit import Registry
from assetkit.factory import make_fixture


def _blob_inodes(root: Path) -> set[tuple[int, int]]:
    reg = Registry(root)
    try:
        return {(st.st_dev, st.st_ino) for st in (reg.store.path(sha).stat() for sha in reg.store.iter_blobs())}
    finally:
        reg.close()


def _files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())


def _damage(path: Path, data: bytes | None = None) -> None:
    """What a user editing a hard-linked file does (as root, or after chmod): the bytes change in place."""
    os.chmod(path, 0o644)
    with open(path, "r+b" if data is not None else "ab") as fh:
        fh.write(data if data is not None else b"edited")


def test_export_gives_independent_files_by_default(tmp_path: Path, tiny_pipeline: Path) -> None:  # noqa: F811
    root = tmp_path / "reg"
    whole = make_fixture("sd15", tmp_path / "in", "safetensors")  # tiny shapes: stored whole, one blob
    run(root, "add", str(whole), "--name", "ck")
    run(root, "add", str(tiny_pipeline), "--name", "pipe")
    run(root, "add", str(make_fixture("ti_sd15_a1111", tmp_path / "in", "safetensors")), "--name", "emb")
    blobs = _blob_inodes(root)
    exported = [Path(run(root, "export", name, str(tmp_path / f"out-{name}"), "--json")["path"])
                for name in ("ck", "pipe", "emb")]
    for path in exported:
        for f in _files(path):
            st = os.lstat(f)
            assert stat.S_ISREG(st.st_mode) and st.st_nlink == 1, f
            assert (st.st_dev, st.st_ino) not in blobs, f
            _damage(f)  # the user's file is theirs: editing it leaves the registry intact
    assert run(root, "verify", "--json")["ok"]
    # a hard link is still there when asked for, and says so
    linked = run(root, "export", "ck", str(tmp_path / "linked.safetensors"), "--link", "hardlink", "--json")
    assert linked["how"] == "hardlink" and os.stat(linked["path"]).st_nlink == 2


def test_readding_the_original_repairs_a_blob_edited_through_a_hard_link(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    original = make_fixture("sd15", tmp_path / "in", "safetensors")
    run(root, "add", str(original), "--name", "ck")
    view = Path(run(root, "path", "ck", "--json")["path"])  # a view: a hard link to the blob
    linked = Path(run(root, "export", "ck", str(tmp_path / "ck.safetensors"), "--link", "hardlink", "--json")["path"])
    _damage(linked)
    text = run(root, "verify", code=1)
    assert "blob-corrupt" in text and "add the original file again" in text
    again = run(root, "add", str(original), "--json")
    assert again["created"] is False and any("repaired 1 damaged blob" in n for n in again["notes"])
    assert run(root, "verify", "--json")["ok"]
    assert sha256_of(Path(run(root, "path", "ck", "--json")["path"])) == sha256_of(original)
    assert not view.exists() or sha256_of(view) == sha256_of(original)  # the stale view was dropped
    out = run(root, "export", "ck", str(tmp_path / "again.safetensors"), "--json")
    assert sha256_of(Path(out["path"])) == sha256_of(original)


def test_readding_a_folder_repairs_its_damaged_blobs(tmp_path: Path, tiny_pipeline: Path) -> None:  # noqa: F811
    root = tmp_path / "reg"
    run(root, "add", str(tiny_pipeline), "--name", "pipe")
    reg = Registry(root)
    config_sha = sha256_of(tiny_pipeline / "vae" / "config.json")
    reg.close()
    view = Path(run(root, "path", "pipe", "--json")["path"])
    _damage(view / "vae" / "config.json")  # a view holds hard links: this edits the blob
    assert not run(root, "verify", "--json", code=1)["ok"]
    again = run(root, "add", str(tiny_pipeline), "--json")
    assert again["created"] is False and again["asset"]["name"] == "pipe"
    assert run(root, "verify", "--json")["ok"]
    fresh = Path(run(root, "path", "pipe", "--json")["path"])
    assert sha256_of(fresh / "vae" / "config.json") == config_sha
    # damage that keeps the size is not seen by add's stat: verify says how to repair it
    reg = Registry(root)
    _damage(reg.store.path(config_sha), b"X")
    reg.close()
    text = run(root, "verify", code=1)
    assert "does not hash to its name" in text and "assetkit registry rm" in text and "gc" in text


def _yaml_folders(snippet: str) -> list[str]:
    return [line.split(":", 1)[0].strip() for line in snippet.splitlines()[2:] if line.strip()]


def test_export_tree_gives_component_folders_as_one_weights_file(tmp_path: Path,
                                                                 tiny_pipeline: Path) -> None:  # noqa: F811
    """ComfyUI's ControlNet and VAE loaders read one .safetensors file (and convert diffusers names
    themselves); only full pipelines belong under diffusers/. A1111 converts a diffusers ControlNet,
    not a diffusers VAE."""
    import torch
    from diffusers import AutoencoderKL, ControlNetModel
    from safetensors.numpy import load_file

    from assetkit.factory.pipeline_assets import save_tiny_controlnet, save_tiny_vae_folder

    cn_dir = save_tiny_controlnet(tiny_pipeline, tmp_path / "in" / "cn")
    vae_dir = save_tiny_vae_folder(tmp_path / "in" / "vf", seed=5)
    root = tmp_path / "reg"
    run(root, "add", str(cn_dir), "--name", "cn")
    run(root, "add", str(vae_dir), "--name", "vf")
    run(root, "add", str(tiny_pipeline), "--name", "pipe")
    tree = tmp_path / "comfy"
    doc = run(root, "export-tree", str(tree), "--layout", "comfyui", "--json")
    assert doc["linked"] == 3 and doc["skipped"] == []
    assert sorted(p.name for p in (tree / "diffusers").iterdir()) == ["pipe"]
    for folder in _yaml_folders(doc["extra_model_paths_yaml"]):
        assert (tree / folder).is_dir(), folder
    for rel, source, cls in (("controlnet/cn.safetensors", cn_dir, ControlNetModel),
                             ("vae/vf.safetensors", vae_dir, AutoencoderKL)):
        path = tree / rel
        assert path.is_file(), rel
        got, want = load_file(path), load_file(source / "diffusion_pytorch_model.safetensors")
        assert got.keys() == want.keys() and all((got[k] == want[k]).all() for k in want)
        model = cls.from_config(cls.load_config(source))  # diffusers takes the file's names as they are
        missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in got.items()}, strict=False)
        assert not missing and not unexpected
    a1111 = tmp_path / "webui"
    doc = run(root, "export-tree", str(a1111), "--layout", "a1111", "--json")
    assert (a1111 / "models" / "ControlNet" / "cn.safetensors").is_file()
    assert not any((a1111 / "models" / "VAE").iterdir())
    reasons = {item.split(" ", 1)[0]: item for item in doc["skipped"]}
    assert set(reasons) == {"vf", "pipe"} and "--as single-file" in reasons["vf"]


def test_export_of_a_split_folder_with_link_hardlink_links_blobs_and_rebuilds_recipes(tmp_path: Path) -> None:
    """--link hardlink on a folder whose files are partly rebuilt from recipes (a checkpoint split
    into components) links what it can and rebuilds the rest (it refused the whole export)."""
    root = tmp_path / "reg"
    pipe = tmp_path / "pipe"
    from assetkit.factory.diffusers_models import save_tiny_sd1_pipeline

    save_tiny_sd1_pipeline(pipe)
    run(root, "add", str(pipe), "--name", "pipe")
    out = run(root, "export", "pipe", str(tmp_path / "out"), "--as", "diffusers", "--link", "hardlink", "--json")
    assert set(out["how"]) <= {"hardlink", "rebuilt"} and out["how"].get("hardlink")
    for f in _files(tmp_path / "out"):
        assert sha256_of(f) == sha256_of(pipe / f.relative_to(tmp_path / "out")), f
