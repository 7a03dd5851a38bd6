"""``assetkit registry ...`` end to end: JSON output, exit codes, import-dir, export-tree link safety."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from _registry_helpers import EVIL_PICKLE, run, sha256_of, tiny_pipeline  # noqa: F401
from click.testing import CliRunner

from assetkit import Registry
from assetkit.cli import main
from assetkit.factory import make_fixture

README = Path(__file__).resolve().parents[1] / "README.md"


def test_cli_verbs_with_json(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    lora = make_fixture("lora_sd15_kohya", tmp_path / "in", "safetensors")
    added = run(root, "add", str(lora), "--name", "ink", "--tag", "style", "--json")
    assert added["ok"] and added["created"] and added["asset"]["kind"] == "lora"
    assert [a["name"] for a in run(root, "ls", "--kind", "lora", "--json")["assets"]] == ["ink"]
    shown = run(root, "show", "ink", "--json")
    assert shown["sha256"] == sha256_of(lora) and shown["tags"] == ["style"]
    assert run(root, "find", sha256_of(lora)[:10], "--json")["matches"][0]["asset"] == "ink"
    assert run(root, "find", "0123456789", "--json", code=1)["ok"] is False
    run(root, "tag", "ink", "fav", "--json")
    run(root, "rename", "ink", "ink2", "--json")
    path = Path(run(root, "path", "ink2", "--json")["path"])
    assert sha256_of(path) == sha256_of(lora)
    out = run(root, "export", "ink2", str(tmp_path / "x.safetensors"), "--json")
    assert sha256_of(Path(out["path"])) == sha256_of(lora)
    assert run(root, "verify", "--json")["ok"]
    du = run(root, "du", "--json")
    assert du["assets"][0]["name"] == "ink2"
    assert run(root, "rm", "ink2", "--json")["removed"] == ["ink2"]
    assert run(root, "gc", "--grace", "0", "--json")["blobs_removed"] == 2
    text = run(root, "ls")
    assert text == ""


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    out = run(root, "show", "nothing", code=2)
    assert out.strip().splitlines() == ["assetkit: error: no asset named or hashed 'nothing'"]
    bad = run(root, "add", str(tmp_path / "missing.safetensors"), "--json", code=2)
    assert bad["ok"] is False and "no such file" in bad["error"]
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(EVIL_PICKLE)
    refused = run(root, "add", str(evil), "--json", code=1)
    assert "refusing" in refused["error"]
    (root / "objects").mkdir(parents=True, exist_ok=True)
    make = make_fixture("ti_sd15_a1111", tmp_path, "safetensors")
    run(root, "add", str(make), "--name", "../escape", code=2)


def test_verify_exits_1_on_a_corrupt_blob(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    run(root, "add", str(make_fixture("ti_sd15_a1111", tmp_path, "safetensors")), "--json")
    reg = Registry(root)
    sha = next(iter(reg.store.iter_blobs()))
    os.chmod(reg.store.path(sha), 0o644)
    reg.store.path(sha).write_bytes(b"garbage")
    doc = run(root, "verify", "--json", code=1)
    assert doc["ok"] is False and doc["findings"][0]["code"] == "blob-corrupt"


def _a1111_tree(base: Path) -> Path:
    models = base / "models"
    make_fixture("sd15", models / "Stable-diffusion", "safetensors")
    make_fixture("lora_sd15_kohya", models / "Lora", "safetensors")
    make_fixture("vae_sd", models / "VAE", "torch-zip")
    (models / "Lora" / "evil.ckpt").write_bytes(EVIL_PICKLE)
    outside = base / "outside"
    make_fixture("ti_sd15_a1111", outside, "safetensors")
    os.symlink(outside / "ti_sd15_a1111.safetensors", models / "Lora" / "linked.safetensors")
    return models


def test_import_dir_a1111_skips_known_refuses_unsafe_and_stays_in_the_tree(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    models = _a1111_tree(tmp_path)
    doc = run(root, "import-dir", str(models), "--json", code=1)
    assert doc["layout"] == "a1111"
    status = {Path(i["path"]).name: i["status"] for i in doc["items"]}
    assert status == {"sd15.safetensors": "added", "lora_sd15_kohya.safetensors": "added",
                      "vae_sd.ckpt": "added", "evil.ckpt": "unsafe"}  # the link out of the tree: not followed
    again = run(root, "import-dir", str(models), "--json", code=1)
    assert again["added"] == 0 and again["skipped"] == 3
    followed = run(root, "import-dir", str(models), "--follow-links", "--json", code=1)
    assert followed["added"] == 1


def test_import_dir_hf_cache_reads_snapshots_through_blob_links(tmp_path: Path, tiny_pipeline: Path) -> None:  # noqa: F811
    repo = tmp_path / "hub" / "models--tiny--sd1"
    blobs, snap = repo / "blobs", repo / "snapshots" / "abc123"
    blobs.mkdir(parents=True)
    for f in tiny_pipeline.rglob("*"):
        if f.is_file():
            sha = sha256_of(f)
            shutil.copyfile(f, blobs / sha)
            link = snap / f.relative_to(tiny_pipeline)
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(blobs / sha, link.parent), link)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    root = tmp_path / "reg"
    doc = run(root, "import-dir", str(tmp_path / "hub"), "--json")
    assert doc["layout"] == "hf-cache" and doc["added"] == 1
    shown = run(root, "show", "tiny--sd1", "--json")
    assert shown["kind"] == "pipeline" and set(shown["components"]) >= {"unet", "vae", "text_encoder"}
    assert run(root, "import-dir", str(tmp_path / "hub"), "--json")["skipped"] == 1


def test_export_tree_never_deletes_through_a_link_or_a_real_folder(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    run(root, "add", str(make_fixture("lora_sd15_kohya", tmp_path / "in", "safetensors")), "--name", "ink")
    run(root, "add", str(make_fixture("ti_sd15_a1111", tmp_path / "in", "safetensors")), "--name", "emb")
    tree = tmp_path / "comfy"
    doc = run(root, "export-tree", str(tree), "--layout", "comfyui", "--json")
    assert doc["linked"] == 2 and "loras: loras" in doc["extra_model_paths_yaml"]
    lora_link = tree / "loras" / "ink.safetensors"
    emb_link = tree / "embeddings" / "emb.safetensors"
    assert sha256_of(lora_link) == sha256_of(tmp_path / "in" / "lora_sd15_kohya.safetensors")
    # the user replaces one link by a real folder holding their own file, the other by a real file
    lora_link.unlink()
    lora_link.mkdir()
    (lora_link / "mine.txt").write_text("keep me")
    emb_link.unlink()
    emb_link.write_bytes(b"my own copy")
    again = run(root, "export-tree", str(tree), "--layout", "comfyui", "--json")
    assert (lora_link / "mine.txt").read_text() == "keep me"
    assert emb_link.read_bytes() == b"my own copy"
    assert sorted(again["kept_not_ours"]) == ["embeddings/emb.safetensors", "loras/ink.safetensors"]
    assert again["removed"] == 0
    # a rebuild of an untouched tree removes and recreates only its own links
    tree2 = tmp_path / "a1111"
    run(root, "export-tree", str(tree2), "--layout", "a1111", "--json")
    third = run(root, "export-tree", str(tree2), "--layout", "a1111", "--json")
    assert third["removed"] == 2 and third["linked"] == 2
    assert (tree2 / "models" / "Lora" / "ink.safetensors").is_file()
    assert (tree2 / "embeddings" / "emb.safetensors").is_file()


def test_rm_never_deletes_through_a_link(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    run(root, "add", str(make_fixture("ti_sd15_a1111", tmp_path / "in", "safetensors")), "--name", "emb")
    view = Path(run(root, "path", "emb", "--json")["path"]).parent
    shutil.rmtree(view)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data.txt").write_text("mine")
    os.symlink(precious, view)
    run(root, "rm", "emb")
    run(root, "gc", "--grace", "0")
    assert (precious / "data.txt").read_text() == "mine"


def test_every_registry_verb_is_documented_in_the_readme() -> None:
    from assetkit.cli.registry_cmd import command

    text = README.read_text()
    assert "## The registry" in text
    section = text.split("## The registry", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"assetkit registry ([a-z-]+)", section))
    assert set(command.commands) <= documented, set(command.commands) - documented


def test_unknown_kind_or_family_is_a_usage_error_listing_the_ids(tmp_path: Path) -> None:
    from assetkit.ids import Family, Kind, ids

    root = tmp_path / "reg"
    lora = make_fixture("lora_sd15_kohya", tmp_path / "in", "safetensors")
    for option, value, literal in (("--kind", "bogus", Kind), ("--family", "nonsense", Family)):
        out = run(root, "add", str(lora), option, value, code=2)
        assert out.strip().splitlines() == [f"assetkit: error: unknown {option[2:]} {value!r}: choose one of "
                                            f"{', '.join(ids(literal))}"]
        assert run(root, "ls", option, value, "--json", code=2)["ok"] is False
    assert run(root, "ls", "--all", "--json")["assets"] == []  # nothing was stored
    added = run(root, "add", str(lora), "--kind", "lora", "--family", "sd1", "--json")
    assert added["asset"]["kind"] == "lora" and added["asset"]["family"] == "sd1"


def test_du_says_plainly_when_sharing_saved_nothing(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    run(root, "add", str(make_fixture("lora_sd15_kohya", tmp_path / "in", "safetensors")), "--name", "ink")
    doc = run(root, "du", "--json")
    assert doc["saved_bytes"] < 0 and doc["disk_bytes"] > doc["added_bytes"]  # its original header is kept too
    last = run(root, "du").strip().splitlines()[-1]
    assert "nothing saved" in last and "more than the files as added" in last and "-" not in last.split(";")[-1]


def test_find_needs_hex_digits_and_a_long_enough_prefix(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    run(root, "add", str(make_fixture("lora_sd15_kohya", tmp_path / "in", "safetensors")), "--name", "ink")
    assert run(root, "find", "abc", code=2).strip().splitlines() == [
        "assetkit: error: 'abc' is too short: a hash prefix needs at least 6 hex digits (it has 3)"]
    assert "not a hash" in run(root, "find", "ink", "--json", code=2)["error"]
    assert run(root, "find", "abcdef", "--json", code=1)["matches"] == []


def test_rename_to_the_same_name_does_nothing(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    run(root, "add", str(make_fixture("lora_sd15_kohya", tmp_path / "in", "safetensors")), "--name", "ink")
    assert run(root, "rename", "ink", "ink", "--json")["name"] == "ink"
    run(root, "add", str(make_fixture("ti_sd15_a1111", tmp_path / "in", "safetensors")), "--name", "emb")
    assert "is taken" in run(root, "rename", "emb", "ink", code=2)


def test_a_name_that_is_a_hash_prefix_of_another_asset_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    lora = make_fixture("lora_sd15_kohya", tmp_path / "in", "safetensors")
    sha = run(root, "add", str(lora), "--name", "ink", "--json")["asset"]["sha256"]
    emb = make_fixture("ti_sd15_a1111", tmp_path / "in", "safetensors")
    for args in (("add", str(emb), "--name", sha[:8]), ("add", str(emb), "--name", sha[:6].upper())):
        out = run(root, *args, code=2)
        assert "looks like a hash prefix of ink" in out and len(out.strip().splitlines()) == 1
    run(root, "add", str(emb), "--name", "emb")
    assert "looks like a hash prefix of ink" in run(root, "rename", "emb", sha[:12], code=2)
    assert run(root, "rename", "emb", sha[:5], "--json")["name"] == sha[:5]  # under 6 digits: a plain name
    # a name taken from a file name that would shadow a hash gets a suffix instead
    named = tmp_path / "other" / f"{sha[:8]}.safetensors"
    named.parent.mkdir()
    shutil.copyfile(make_fixture("lora_sdxl_kohya", tmp_path / "in3", "safetensors"), named)
    assert run(root, "add", str(named), "--json")["asset"]["name"] == f"{sha[:8]}-2"
    assert run(root, "show", sha[:8], "--json")["name"] == "ink"


def test_export_of_a_folder_asset_to_a_file_name_is_refused(tmp_path: Path, tiny_pipeline: Path) -> None:  # noqa: F811
    root = tmp_path / "reg"
    run(root, "add", str(tiny_pipeline), "--name", "pipe")
    out = run(root, "export", "pipe", str(tmp_path / "x.safetensors"), code=2)
    assert out.strip().splitlines() == ["assetkit: error: pipe is a folder asset and x.safetensors names a file: "
                                        "pass --as single-file for one file, or give a folder name"]
    assert not (tmp_path / "x.safetensors").exists()
    assert Path(run(root, "export", "pipe", str(tmp_path / "x"), "--json")["path"]).is_dir()


def test_remote_group_takes_json_and_root(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    assert run(root, "remote", "--json") == {"ok": True, "default": None, "remotes": []}
    assert run(root, "remote", "ls", "--json")["remotes"] == []
    result = CliRunner().invoke(main, ["registry", "remote", "--json", "ls", "--root", str(root)])
    assert result.exit_code == 2 and "go after the subcommand" in json.loads(result.stdout)["error"]


def test_gc_removes_blobs_of_removed_assets_whatever_the_grace_period(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    run(root, "add", str(make_fixture("lora_sd15_kohya", tmp_path / "in", "safetensors")), "--name", "ink")
    run(root, "rm", "ink")
    assert run(root, "gc", "--grace", "1000000", "--json")["blobs_removed"] == 2
    text = README.read_text()
    gc_doc = text.split("- `assetkit registry gc", 1)[1].split("\n- ", 1)[0]
    assert "Blobs of\n  removed assets" in gc_doc and "whatever their age" in gc_doc
    help_text = CliRunner().invoke(main, ["registry", "gc", "--help"]).output
    assert "Blobs of removed assets go whatever their age" in " ".join(help_text.split())
