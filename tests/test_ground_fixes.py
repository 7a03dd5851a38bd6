"""Regression tests for what a new user hit (issue 7, part 1): no wrong result with exit 0, exit
codes scripts can rely on, one-line messages that name the problem, feedback on long work."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _tiny_diffusers import copy_folder, saved_pipelines
from click.testing import CliRunner, Result

from assetkit.cli import main
from assetkit.errors import AssetkitError
from assetkit.factory import make_fixture

REPO = Path(__file__).resolve().parents[1]
UNET_FP16_INDEX = "diffusion_pytorch_model.safetensors.index.fp16.json"


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def cli_process(*args: str | Path, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    return subprocess.Popen([sys.executable, "-c", "from assetkit.cli import main; main()", *map(str, args)],
                            env=env, **kwargs)


def run_on_terminal(*args: str | Path, timeout: float = 120) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a real pseudo-terminal; returns (exit code, what it drew)."""
    leader, follower = pty.openpty()
    proc = cli_process(*args, stdout=follower, stderr=follower, stdin=subprocess.DEVNULL)
    os.close(follower)
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([leader], [], [], timeout)
        if not ready:
            proc.kill()
            raise AssertionError("no output from the command on the terminal")
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return proc.wait(timeout=timeout), b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture(scope="module")
def folders() -> dict[str, Path]:
    return saved_pipelines()


def _sharded_without_variant(folders: dict[str, Path], dst: Path) -> Path:
    """The sharded pipeline with its fp16 files removed: only plain (sharded) weights."""
    root = copy_folder(folders["sharded"], dst)
    for path in root.rglob("*"):
        if ".fp16" in path.name:
            path.unlink()
    return root


# ---- wrong results that exit 0 ---------------------------------------------------------------------
def test_variant_of_a_sharded_folder_with_a_missing_shard_fails_and_writes_nothing(folders, tmp_path):
    root = _sharded_without_variant(folders, tmp_path / "p")
    shard = sorted((root / "unet").glob("diffusion_pytorch_model-*-of-*.safetensors"))[1]
    shard.unlink()
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    result = invoke("convert", root, "--variant", "fp16")
    assert result.exit_code == 1, result.output
    assert f"unet/{shard.name}" in result.stderr and "missing" in result.stderr
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing written, not even temporaries
    assert not (root / "unet" / UNET_FP16_INDEX).exists()


def test_variant_with_a_contradicting_dtype_is_a_usage_error(folders, tmp_path):
    root = copy_folder(folders["plain"], tmp_path / "p")
    result = invoke("convert", root, "--variant", "fp16", "--dtype", "bf16")
    assert result.exit_code == 2 and "--variant fp16" in result.stderr and "BF16" in result.stderr
    assert not list(root.rglob("*.fp16.safetensors"))
    # the variant's own dtype, said twice, is fine
    assert invoke("convert", root, "--variant", "fp16", "--dtype", "fp16").exit_code == 0


def test_validate_variant_whose_files_are_not_that_dtype_fails(folders, tmp_path):
    root = copy_folder(folders["plain"], tmp_path / "p")
    assert invoke("convert", root, "--variant", "bf16").exit_code == 0
    for path in root.rglob("*.bf16.safetensors"):  # bf16 data under fp16 names
        path.rename(path.with_name(path.name.replace(".bf16.", ".fp16.")))
    result = invoke("validate", root, "--variant", "fp16", "--json")
    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    mismatches = [p for p in document["problems"] if p["code"] == "variant-dtype-mismatch"]
    assert mismatches and all(p["severity"] == "error" for p in mismatches)


def test_inspect_of_a_folder_with_a_missing_shard_is_a_finding_and_exit_1(folders, tmp_path):
    root = copy_folder(folders["sharded"], tmp_path / "p")
    shard = sorted((root / "unet").glob("diffusion_pytorch_model-*-of-*.safetensors"))[0]
    shard.unlink()
    result = invoke("inspect", root)
    assert result.exit_code == 1, result.output
    assert "findings    none" not in result.stdout
    assert f"shard-missing: shard file named by the index is missing [unet/{shard.name}]" in result.stdout
    document = json.loads(invoke("inspect", root, "--json").stdout)
    assert {"code": "shard-missing", "severity": "error", "message": "shard file named by the index is missing",
            "where": f"unet/{shard.name}"} in document["findings"]
    assert invoke("inspect", folders["sharded"]).exit_code == 0  # the complete folder still passes


# ---- exit codes and signals ---------------------------------------------------------------------------
def test_a_closed_stdout_ends_the_command_quietly(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    source = make_fixture("vae_sd", tmp_path, "safetensors")
    for i in range(3):
        shutil.copy(source, folder / f"f{i}.safetensors")
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line: every write meets a broken pipe
    proc = cli_process("scan", folder, stdout=write, stderr=subprocess.PIPE)
    os.close(write)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141 and err == b"", err


def test_debug_is_accepted_after_the_subcommand(tmp_path):
    result = invoke("inspect", tmp_path / "missing.safetensors", "--debug")
    assert isinstance(result.exception, AssetkitError), result.output  # the traceback is let through
    assert invoke("inspect", tmp_path / "missing.safetensors").exit_code == 2


# ---- one rule for "not a checkpoint" ------------------------------------------------------------------
@pytest.mark.parametrize("content", [b'{"a": 1}\n', b"version https://git-lfs.github.com/spec/v1\n", b""],
                         ids=["json", "lfs-pointer", "empty"])
def test_the_same_bad_bytes_get_the_same_exit_code_under_any_name(tmp_path, content):
    codes = {}
    for name in ("x.ckpt", "x.safetensors", "x.pt"):
        (tmp_path / name).write_bytes(content)
        result = invoke("validate", tmp_path / name)
        codes[name] = result.exit_code
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert set(codes.values()) == {2}, codes


def test_text_named_safetensors_is_not_a_safetensors_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_text('{"a": 1}\n')
    for command in ("inspect", "validate", "convert"):
        args = [command, path] + ([tmp_path / "out.safetensors"] if command == "convert" else [])
        result = invoke(*args)
        assert result.exit_code == 2
        assert result.stderr.strip() == f"assetkit: error: {path}: not a safetensors file (starts with '{{\"a\": 1}}\\n')"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file: no permission error to provoke")
def test_an_unreadable_file_says_permission_denied(tmp_path):
    path = make_fixture("vae_sd", tmp_path, "safetensors")
    path.chmod(0)
    try:
        for command in ("inspect", "validate"):
            result = invoke(command, path)
            assert result.exit_code == 2 and result.stderr.strip() == f"assetkit: error: {path}: permission denied"
    finally:
        path.chmod(0o644)


# ---- convert messages ------------------------------------------------------------------------------
def test_state_dict_key_lists_the_pickles_real_top_level_keys(tmp_path):
    path = tmp_path / "m.ckpt"
    torch.save({"model_ema": {"w": torch.zeros(2)}, "weights": {"v": torch.zeros(2)}, "global_step": 7}, path)
    result = invoke("convert", path, tmp_path / "o.safetensors", "--state-dict-key", "nope")
    assert result.exit_code == 2
    assert "top-level keys: model_ema, weights, global_step" in result.stderr


def test_an_existing_folder_as_output_says_so(tmp_path):
    source = make_fixture("vae_sd", tmp_path, "torch-zip")
    (tmp_path / "out").mkdir()
    result = invoke("convert", source, tmp_path / "out")
    assert result.exit_code == 2 and "output is an existing folder" in result.stderr


def test_an_unsafe_source_is_reported_before_output_exists(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"w": Evil()}, protocol=2))
    existing = tmp_path / "out.safetensors"
    existing.write_bytes(b"old")
    result = invoke("convert", evil, existing)
    assert result.exit_code == 1 and "refusing to convert" in result.stderr and "exists" not in result.stderr
    assert existing.read_bytes() == b"old"


# ---- feedback on long work ---------------------------------------------------------------------------
def test_single_file_convert_draws_a_byte_bar_on_a_terminal_only(tmp_path):
    source = make_fixture("vae_sd", tmp_path, "torch-zip")
    code, screen = run_on_terminal("convert", source, tmp_path / "a.safetensors")
    assert code == 0 and "converting" in screen and "%" in screen, screen
    code, screen = run_on_terminal("convert", source, tmp_path / "b.safetensors", "--json")
    assert code == 0 and "converting" not in screen and "%" not in screen.split("{", 1)[0]
    # not a terminal: no bar
    result = invoke("convert", source, tmp_path / "c.safetensors")
    assert result.exit_code == 0 and "converting" not in result.stderr and "%" not in result.stderr


@pytest.mark.slow
def test_validate_of_a_folder_says_it_loads_the_model_classes_first(folders):
    code, screen = run_on_terminal("validate", folders["plain"])
    assert code == 0, screen
    assert screen.index("loading the model classes") < screen.index("OK ")


# ---- correctness details -----------------------------------------------------------------------------
def test_rerunning_a_batch_counts_existing_outputs_as_skipped(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    make_fixture("vae_sd", src, "torch-zip")
    assert invoke("convert", src, tmp_path / "out").exit_code == 0
    again = invoke("convert", src, tmp_path / "out", "--json")
    assert again.exit_code == 0
    summary = json.loads(again.stdout)["summary"]
    assert (summary["converted"], summary["skipped"], summary["failed"]) == (0, 1, 0)


def test_failed_batch_items_leave_no_empty_output_folders(tmp_path):
    src = tmp_path / "src"
    (src / "deep" / "er").mkdir(parents=True)
    (src / "deep" / "er" / "broken.ckpt").write_bytes(b"\x80\x02garbage")
    result = invoke("convert", src, tmp_path / "out")
    assert result.exit_code == 1
    assert not (tmp_path / "out" / "deep").exists()


def test_inspect_text_has_no_python_reprs_and_counts_right(tmp_path):
    lora = make_fixture("lora_sd15_kohya", tmp_path)
    text = invoke("inspect", lora).stdout
    assert "['" not in text and "{'" not in text
    embedding = make_fixture("ti_sd15_a1111_pt", tmp_path)
    assert "1 tensor," in invoke("inspect", embedding).stdout


def test_inspect_candidates_table_names_the_prober(folders):
    text = invoke("inspect", folders["plain"] / "vae").stdout
    table = text.split("candidates\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert table[0].split() == ["score", "kind", "family", "layout", "prober"]
    header_starts = [table[0].index(word) for word in ("kind", "family", "layout", "prober")]
    for row in table[1:]:
        assert len(row.split()) == 5
        assert all(row[start - 1] == " " and row[start] != " " for start in header_starts), table
