"""``assetkit convert`` as a user runs it: exit codes, --json, interrupted runs, folders, variants."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import load_file

from assetkit.cli import main

REPO = Path(__file__).resolve().parent.parent


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["convert", *map(str, args)])
    return result.exit_code, result.stdout, result.stderr


def assetkit_process(*args: str, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", "from assetkit.cli import main; main()", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def raw(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"first_stage_model.decoder.w": torch.randn(4, 4), "model.x": torch.randn(3),
                               "cond_stage_model.position_ids": torch.arange(77)[None]},
                "global_step": 10}, path)
    return path


def test_convert_one_file_with_json(checkpoint: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.safetensors"
    code, out, err = run(checkpoint, dst, "--json", "--keep-metadata")
    assert code == 0, err
    document = json.loads(out)
    assert document["ok"] is True and document["verified"] is True
    assert document["tensors"] == 3 and document["dst"] == str(dst)
    assert document["metadata"]["global_step"] == "10"
    assert len(document["source_sha256"]) == 64
    reference = torch.load(checkpoint, weights_only=False)["state_dict"]
    got = load_file(dst)
    assert {k: raw(v) for k, v in got.items()} == {k: raw(v) for k, v in reference.items()}


def test_default_output_name_and_text_report(checkpoint: Path) -> None:
    code, out, err = run(checkpoint)
    assert code == 0, err
    assert checkpoint.with_suffix(".safetensors").is_file()
    assert "verified" in out and "3 tensors" in out


def test_existing_output_exit_2_and_untouched(checkpoint: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.safetensors"
    dst.write_bytes(b"keep me")
    code, out, err = run(checkpoint, dst)
    assert code == 2
    assert "exists" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert dst.read_bytes() == b"keep me"
    code, _, _ = run(checkpoint, dst, "--overwrite")
    assert code == 0 and dst.read_bytes() != b"keep me"


def test_unsafe_input_exit_1_with_findings_and_salvage(tmp_path: Path) -> None:
    marker = tmp_path / "marker"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    src = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(3), "x": Payload()}, src)
    dst = tmp_path / "evil.safetensors"
    code, out, err = run(src, dst, "--json")
    assert code == 1
    document = json.loads(out)
    assert document["ok"] is False and any(f["severity"] == "dangerous" for f in document["findings"])
    assert not dst.exists()
    code, out, err = run(src, dst)
    assert code == 1 and "dangerous" in err
    code, out, err = run(src, dst, "--salvage")
    assert code == 0 and "SALVAGE" in err
    assert list(load_file(dst)) == ["w"]
    assert not marker.exists()


def test_vae_extraction_and_dtype(checkpoint: Path, tmp_path: Path) -> None:
    dst = tmp_path / "vae.safetensors"
    code, out, err = run(checkpoint, dst, "--only", "first_stage_model.", "--strip-prefix", "first_stage_model.",
                         "--dtype", "fp16", "--json")
    assert code == 0, err
    got = load_file(dst)
    reference = torch.load(checkpoint, weights_only=False)["state_dict"]["first_stage_model.decoder.w"]
    assert list(got) == ["decoder.w"] and raw(got["decoder.w"]) == raw(reference.half())
    code, _, err = run(checkpoint, tmp_path / "x.safetensors", "--only", "vae.")
    assert code == 2 and "matches no tensors" in err


def test_position_ids_keep_int64_under_dtype(checkpoint: Path, tmp_path: Path) -> None:
    dst = tmp_path / "half.safetensors"
    assert run(checkpoint, dst, "--dtype", "bf16")[0] == 0
    got = load_file(dst)
    assert got["cond_stage_model.position_ids"].dtype == torch.int64
    assert got["model.x"].dtype == torch.bfloat16


def test_unreadable_and_unsupported_inputs_exit_2(tmp_path: Path) -> None:
    assert run(tmp_path / "missing.ckpt", tmp_path / "o.safetensors")[0] == 2
    wrapped = tmp_path / "model.ckpt"
    wrapped.write_bytes(b"7z\xbc\xaf\x27\x1c" + bytes(100))
    code, _, err = run(wrapped, tmp_path / "o.safetensors")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.safetensors").exists()


def test_folder_batch_keeps_relative_paths_and_reports_unsafe(tmp_path: Path) -> None:
    src, dst = tmp_path / "in", tmp_path / "out"
    (src / "sub").mkdir(parents=True)
    torch.save({"a": torch.randn(3)}, src / "one.ckpt")
    torch.save({"b": torch.arange(4)}, src / "sub" / "two.pth", _use_new_zipfile_serialization=False)
    torch.save({"c": torch.ones(2)}, src / "sub" / "three.bin")
    (src / "notes.txt").write_text("not a checkpoint")

    class Payload:
        def __reduce__(self):
            return (os.system, ("true",))

    torch.save({"d": torch.ones(1), "e": Payload()}, src / "evil.pt")
    code, out, err = run(src, dst, "--json")
    assert code == 1
    document = json.loads(out)
    by_name = {Path(item["src"]).name: item for item in document["results"]}
    assert by_name["evil.pt"]["status"] == "unsafe" and by_name["evil.pt"]["findings"]
    assert {by_name[n]["status"] for n in ("one.ckpt", "two.pth", "three.bin")} == {"converted"}
    assert document["summary"] == {**document["summary"], "files": 4, "converted": 3, "unsafe": 1, "ok": False}
    assert (dst / "one.safetensors").is_file() and (dst / "sub" / "two.safetensors").is_file()
    assert raw(load_file(dst / "sub" / "two.safetensors")["b"]) == raw(torch.arange(4))
    assert not (dst / "evil.safetensors").exists()
    # clean folder: exit 0, text summary
    (src / "evil.pt").unlink()
    code, out, err = run(src, tmp_path / "out2")
    assert code == 0, out + err
    assert "3 converted" in out


def _big_checkpoint(path: Path) -> Path:
    """About 192 MiB of tensors (the streaming memory test)."""
    torch.save({f"layer{i}.weight": torch.full((1024, 1024 * 4), float(i)) for i in range(12)}, path)
    return path


def _checkpoint_of_many_tensors(path: Path) -> Path:
    """Twelve 256 KiB tensors: the copy reports progress after each one."""
    torch.save({f"layer{i}.weight": torch.full((256, 256), float(i)) for i in range(12)}, path)
    return path


#: Runs the real CLI in a child process that sends itself ``SIG`` right after the first tensor's
#: bytes reached the temporary output (the progress callback): the signal lands at a known point,
#: mid-conversion, every time.
_SIGNAL_AFTER_FIRST_CHUNK = """
import os, signal, sys
from assetkit.cli import convert_cmd, main
sig = getattr(signal, sys.argv.pop(1))
def advance(self, nbytes):
    os.kill(os.getpid(), sig)
convert_cmd._ByteProgress.advance = advance
main()
"""


def _convert_signalled(sig_name: str, src: Path, dst: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", _SIGNAL_AFTER_FIRST_CHUNK, sig_name, "convert", str(src), str(dst)],
                          env=env, capture_output=True, timeout=120)


def test_killed_conversion_leaves_nothing_at_destination_and_the_next_run_removes_its_temporary(
        tmp_path: Path) -> None:
    src = _checkpoint_of_many_tensors(tmp_path / "big.ckpt")
    out = tmp_path / "out"
    out.mkdir()
    dst = out / "big.safetensors"
    killed = _convert_signalled("SIGKILL", src, dst)
    assert killed.returncode == -signal.SIGKILL
    assert not dst.exists()
    stale = [p.name for p in out.iterdir()]
    assert len(stale) == 1 and stale[0].startswith(".big.safetensors.") and stale[0].endswith(".tmp"), stale
    # another writer's live temporary (this test process's own pid) is left alone
    live = out / f".big.safetensors.{'a' * 12}-{os.getpid()}.tmp"
    live.write_bytes(b"in progress")
    rerun = assetkit_process("convert", src, dst)
    _, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted(["big.safetensors", live.name])


@pytest.mark.parametrize(("sig", "code", "word"), [("SIGINT", 130, b"interrupted"), ("SIGTERM", 143, b"terminated")])
def test_interrupted_conversion_exits_128_plus_signal_and_removes_its_temporary_file(
        tmp_path: Path, sig: str, code: int, word: bytes) -> None:
    src = _checkpoint_of_many_tensors(tmp_path / "big.ckpt")
    out = tmp_path / "out"
    out.mkdir()
    result = _convert_signalled(sig, src, out / "big.safetensors")
    assert result.returncode == code, result.stderr
    assert result.stderr.strip() == b"assetkit: error: " + word
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_diffusers_fp16_variant_loads_in_diffusers(tmp_path: Path) -> None:
    import warnings

    from _tiny_diffusers import build_pipeline
    from diffusers import StableDiffusionPipeline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = build_pipeline()
        plain, sharded, pickled = tmp_path / "plain", tmp_path / "sharded", tmp_path / "bin"
        pipe.save_pretrained(plain)
        pipe.save_pretrained(sharded, max_shard_size="20KB")
        pipe.save_pretrained(pickled, safe_serialization=False)
    expected = {name: {k: v.half() if v.is_floating_point() else v
                       for k, v in getattr(pipe, name).state_dict().items()}
                for name in ("unet", "vae", "text_encoder")}
    for folder in (plain, sharded, pickled):
        code, out, err = run(folder, "--variant", "fp16", "--json")
        assert code == 0, out + err
        document = json.loads(out)
        assert document["summary"]["ok"] and document["summary"]["converted"] >= 3
        assert (folder / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file() or \
            (folder / "unet" / "diffusion_pytorch_model.safetensors.index.fp16.json").is_file()
        assert (folder / "text_encoder" / "model.fp16.safetensors").is_file() or \
            (folder / "text_encoder" / "model.safetensors.index.fp16.json").is_file()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = StableDiffusionPipeline.from_pretrained(folder, variant="fp16", torch_dtype=torch.float16)
        for name, state in expected.items():
            got = getattr(loaded, name).state_dict()
            assert set(got) == set(state), (folder.name, name)
            for key, tensor in state.items():
                assert got[key].dtype == tensor.dtype and raw(got[key]) == raw(tensor), (folder.name, name, key)
    # the same again without --overwrite: every existing output counted as skipped, exit 0, nothing changed
    before = (plain / "unet" / "diffusion_pytorch_model.fp16.safetensors").stat().st_mtime_ns
    code, out, err = run(plain, "--variant", "fp16")
    assert code == 0 and "0 converted, 0 unsafe, 0 failed, 3 skipped" in out, out + err
    assert all(line.startswith("skipped") for line in out.splitlines()[:3]) and "output exists" in out
    assert (plain / "unet" / "diffusion_pytorch_model.fp16.safetensors").stat().st_mtime_ns == before
    with safe_open(sharded / "unet" / "diffusion_pytorch_model.fp16-00001-of-"
                   f"{_shard_count(sharded):05d}.safetensors", framework="pt") as fh:
        assert fh.metadata()["format"] == "pt"


def _shard_count(folder: Path) -> int:
    index = json.loads((folder / "unet" / "diffusion_pytorch_model.safetensors.index.fp16.json").read_text())
    return len(set(index["weight_map"].values()))


PEAK_RSS_OF_CHILD = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
    "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


@pytest.mark.slow
def test_peak_memory_is_far_below_the_checkpoint_size(tmp_path: Path) -> None:
    """Streaming: converting a 192 MiB checkpoint (cast and verified) keeps the process well under it.

    Measured from a small wrapper process: a child forked from pytest itself would count
    pytest's own memory in its peak.
    """
    src = _big_checkpoint(tmp_path / "big.ckpt")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for extra in ([], ["--dtype", "bf16"]):
        dst = tmp_path / f"out{len(extra)}.safetensors"
        command = [sys.executable, "-c", "from assetkit.cli import main; main()", "convert", str(src), str(dst), *extra]
        result = subprocess.run([sys.executable, "-c", PEAK_RSS_OF_CHILD, *command], env=env,
                                capture_output=True, text=True, check=True)
        code, peak_kib = map(int, result.stdout.split())
        assert code == 0, result.stderr
        assert peak_kib / 1024 < 150, f"peak RSS {peak_kib / 1024:.0f} MiB for a 192 MiB checkpoint {extra}"
    assert raw(load_file(tmp_path / "out2.safetensors")["layer3.weight"]) == raw(torch.full((1024, 4096), 3.0).bfloat16())


def test_options_a_conversion_would_ignore_are_usage_errors(checkpoint: Path, tmp_path: Path) -> None:
    """--prune/--ema/--only... with --to, --dtype... on a LoRA, --component... without --to: exit 2
    naming them, nothing written (they used to be ignored silently, exit 0)."""
    from safetensors.torch import save_file

    lora = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(8, 4),
               "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(4.0)}, str(lora))
    cases = [((checkpoint, tmp_path / "d", "--to", "diffusers", "--prune", "--ema"), "--prune, --ema"),
             ((checkpoint, tmp_path / "s.safetensors", "--to", "single-file", "--fix-position-ids"), "--fix-position-ids"),
             ((checkpoint, tmp_path / "s.safetensors", "--to", "single-file", "--only", "model."), "--only"),
             ((lora, tmp_path / "p.safetensors", "--to", "diffusers", "--dtype", "fp16"), "--dtype"),
             ((lora, tmp_path / "p.safetensors", "--to", "diffusers", "--kohya-unet", "sgm"), "--kohya-unet"),
             ((lora, tmp_path / "p.safetensors", "--to", "kohya", "--component", "unet"), "--component"),
             ((checkpoint, tmp_path / "o.safetensors", "--component", "vae"), "--component"),
             ((checkpoint, tmp_path / "o.safetensors", "--config", tmp_path), "--config")]
    for args, named in cases:
        code, out, err = run(*args)
        assert code == 2, (args, out, err)
        assert f"{named}: not applicable" in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lora.safetensors", "model.ckpt"]
