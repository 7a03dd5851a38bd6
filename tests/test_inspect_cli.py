"""``assetkit inspect``: the JSON document, --tensors, the human summary, diffusers folders, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_probe_layouts import write_sparse_safetensors

from assetkit.cli import main

REQUIRED_FIELDS = {"path", "format", "kind", "family", "variant", "prediction_type", "layout", "components", "tensors",
                   "parameters", "bytes", "dtypes", "metadata", "unknown_globals", "evidence", "details",
                   "candidates", "findings"}


@pytest.fixture(scope="module")
def sd15_file(layouts_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    layout = json.loads((layouts_dir / "sd15.json").read_text())
    dest = tmp_path_factory.mktemp("sd15") / "v1-5-pruned-emaonly.safetensors"
    return write_sparse_safetensors(layout, dest, {"format": "pt", "modelspec.architecture": "stable-diffusion-v1"})


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["inspect", *args])
    return result.exit_code, result.stdout, result.stderr


def test_json_document(sd15_file: Path, layouts_dir: Path) -> None:
    layout = json.loads((layouts_dir / "sd15.json").read_text())
    code, out, err = run(str(sd15_file), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc) >= REQUIRED_FIELDS
    assert (doc["kind"], doc["family"], doc["variant"], doc["prediction_type"], doc["layout"]) == (
        "pipeline", "sd1", None, None, "original")
    assert doc["format"] == "safetensors" and doc["path"] == str(sd15_file)
    assert doc["tensors"] == layout["stats"]["num_keys"]
    assert doc["parameters"] == layout["stats"]["num_params"]
    assert doc["bytes"] == layout["stats"]["num_bytes"]
    assert doc["dtypes"] == {"F32": 1142, "I64": 1}
    assert doc["metadata"] == {"format": "pt", "modelspec.architecture": "stable-diffusion-v1"}
    assert doc["unknown_globals"] == []
    assert set(doc["components"]) == {"unet", "vae", "text_encoder"}
    unet = doc["components"]["unet"]
    assert (unet["kind"], unet["family"], unet["tensors"], unet["dtypes"]) == ("unet", "sd1", 686, {"F32": 686})
    assert unet["bytes"] == unet["parameters"] * 4
    assert any("modelspec.architecture" in line for line in doc["evidence"])
    assert doc["candidates"][0]["kind"] == "pipeline" and doc["findings"] == []
    assert "tensor_list" not in doc


def test_tensor_list(sd15_file: Path) -> None:
    code, out, _ = run(str(sd15_file), "--json", "--tensors")
    assert code == 0
    doc = json.loads(out)
    assert len(doc["tensor_list"]) == doc["tensors"]
    first = doc["tensor_list"][0]
    assert set(first) == {"name", "dtype", "shape"}
    by_name = {t["name"]: t for t in doc["tensor_list"]}
    assert by_name["model.diffusion_model.input_blocks.0.0.weight"]["shape"] == [320, 4, 3, 3]
    assert by_name["cond_stage_model.transformer.text_model.embeddings.position_ids"]["dtype"] == "I64"


def test_human_summary(sd15_file: Path) -> None:
    code, out, _ = run(str(sd15_file))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "sd1 pipeline, original layout"
    assert "components" in lines and "evidence" in lines
    assert any(line.split()[:3] == ["unet", "unet", "sd1"] for line in lines)
    assert any("attn2.to_k.weight [320, 768]" in line for line in lines)
    assert "findings    none" in lines
    code, out, _ = run(str(sd15_file), "--tensors")
    assert "model.diffusion_model.out.2.weight  F32  [4, 320, 3, 3]" in out


def test_human_summary_shows_findings(layouts_dir: Path, tmp_path: Path) -> None:
    layout = json.loads((layouts_dir / "vae_sd.json").read_text())
    path = write_sparse_safetensors(layout, tmp_path / "vae.safetensors")
    code, out, _ = run(str(path))
    assert code == 0
    assert out.splitlines()[0] == "unknown-family vae, original layout"
    assert "family-ambiguous" in out and "candidates" in out


def _save_tiny_pipeline(root: Path, *, cross: int, pipeline_class: str, prediction: str = "epsilon",
                        addition: dict | None = None) -> Path:
    """A diffusers folder whose components diffusers/transformers saved themselves (decisive widths kept)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                                cross_attention_dim=cross, attention_head_dim=2, sample_size=8,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), **(addition or {}))
    vae = AutoencoderKL(block_out_channels=(8,), layers_per_block=1, norm_num_groups=4, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",))
    text = CLIPTextModel(CLIPTextConfig(hidden_size=cross if cross in (768, 1024) else 768, intermediate_size=16,
                                        num_attention_heads=2, num_hidden_layers=1, vocab_size=64,
                                        max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
                                        pad_token_id=1))
    unet.save_pretrained(root / "unet")
    vae.save_pretrained(root / "vae")
    text.save_pretrained(root / "text_encoder")
    DDIMScheduler(prediction_type=prediction).save_pretrained(root / "scheduler")
    index = {"_class_name": pipeline_class, "_diffusers_version": "0.42.1",
             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
             "text_encoder": ["transformers", "CLIPTextModel"], "scheduler": ["diffusers", "DDIMScheduler"],
             "tokenizer": [None, None], "safety_checker": [None, None]}
    (root / "model_index.json").write_text(json.dumps(index))
    return root


@pytest.mark.filterwarnings("ignore")
def test_diffusers_folders(tmp_path: Path) -> None:
    sd1 = _save_tiny_pipeline(tmp_path / "sd1", cross=768, pipeline_class="StableDiffusionPipeline")
    code, out, err = run(str(sd1), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["format"], doc["kind"], doc["family"], doc["layout"], doc["prediction_type"]) == (
        "diffusers", "pipeline", "sd1", "diffusers", "epsilon")
    assert {name: (c["kind"], c["family"]) for name, c in doc["components"].items()} == {
        "unet": ("unet", "sd1"), "vae": ("vae", "sd1"), "text_encoder": ("text_encoder", "sd1")}
    assert doc["tensors"] == sum(c["tensors"] for c in doc["components"].values())
    assert any("StableDiffusionPipeline" in line for line in doc["evidence"])

    sd2 = _save_tiny_pipeline(tmp_path / "sd2", cross=1024, pipeline_class="StableDiffusionPipeline",
                              prediction="v_prediction")
    doc = json.loads(run(str(sd2), "--json")[1])
    assert (doc["family"], doc["prediction_type"]) == ("sd2", "v_prediction")
    assert any("scheduler_config.json prediction_type v_prediction" in line for line in doc["evidence"])

    refiner = _save_tiny_pipeline(
        tmp_path / "refiner", cross=1280, pipeline_class="StableDiffusionXLImg2ImgPipeline",
        addition=dict(addition_embed_type="text_time", addition_time_embed_dim=8,
                      projection_class_embeddings_input_dim=2560))
    doc = json.loads(run(str(refiner), "--json")[1])
    assert (doc["kind"], doc["family"]) == ("pipeline", "sdxl-refiner")

    # A VAE folder alone: its config's scaling factor 0.18215 narrows it to SD1/SD2, no further.
    code, out, _ = run(str(sd1 / "vae"), "--json")
    doc = json.loads(out)
    assert (doc["format"], doc["kind"], doc["family"]) == ("diffusers-component", "vae", None)
    assert {c["family"] for c in doc["candidates"] if c["prober"] == "vae"} == {"sd1", "sd2"}


def _broken_inputs(root: Path) -> dict[str, Path]:
    png = root / "model.ckpt"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    header = json.dumps({"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}}).encode()
    truncated = root / "truncated.safetensors"
    truncated.write_bytes(len(header).to_bytes(8, "little") + header + b"\x00" * 10)
    empty = root / "empty"
    empty.mkdir()
    broken = root / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline", ')
    return {"missing": root / "nope.safetensors", "png": png, "truncated": truncated, "empty": empty,
            "broken": broken}


@pytest.mark.parametrize("case", ["missing", "png", "truncated", "empty", "broken"])
def test_bad_input_is_one_line_exit_2(tmp_path: Path, case: str) -> None:
    path = _broken_inputs(tmp_path)[case]
    code, out, err = run(str(path))
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("assetkit: error:") and "Traceback" not in err
    assert str(path.name) in err
    code, out, _ = run(str(path), "--json")
    assert code == 2 and json.loads(out)["ok"] is False


def test_bad_input_as_a_process(tmp_path: Path) -> None:
    path = _broken_inputs(tmp_path)["truncated"]
    proc = subprocess.run([sys.executable, "-m", "assetkit", "inspect", str(path)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_inspect_never_imports_torch(layouts_dir: Path, tmp_path: Path) -> None:
    layout = json.loads((layouts_dir / "sdxl_base.json").read_text())
    path = write_sparse_safetensors(layout, tmp_path / "sdxl.safetensors")
    script = (
        "import sys\n"
        "from assetkit.cli import main\n"
        f"sys.argv = ['assetkit', 'inspect', '--json', {str(path)!r}]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers', 'safetensors.torch', 'yaml')"
        " if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stderr
    assert json.loads(proc.stdout)["family"] == "sdxl"
