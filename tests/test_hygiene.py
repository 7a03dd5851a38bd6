"""Checkpoint hygiene: findings in inspect, convert --prune/--keep-ema/--ema/--fix-position-ids on real
files, with torch.save as the input writer and safetensors as the oracle for what was written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from assetkit.cli import main

CLIP_PREFIXES = ["cond_stage_model.transformer.text_model.", "conditioner.embedders.0.transformer.text_model.",
                 "text_encoders.clip_l.transformer.text_model.", "cond_stage_model.transformer."]


def _checkpoint(clip_prefix: str = "cond_stage_model.transformer.text_model.", broken: bool = True,
                float_ids: bool = False):
    """A small single-file checkpoint: UNet + LitEma copies + bookkeeping, VAE, CLIP ids, schedule, junk."""
    import torch

    g = torch.Generator().manual_seed(0)
    sd = {
        "model.diffusion_model.input_blocks.0.0.weight": torch.randn(8, 4, 3, 3, generator=g),
        "model.diffusion_model.input_blocks.0.0.bias": torch.randn(8, generator=g),
        "model.diffusion_model.out.2.weight": torch.randn(4, 8, 3, 3, generator=g),
        "first_stage_model.decoder.conv_in.weight": torch.randn(8, 4, 3, 3, generator=g),
        "alphas_cumprod": torch.linspace(1, 0, 10),
        "embedding_manager.embedder.weight": torch.randn(3, 4, generator=g),
        "lora_te_leftover.alpha": torch.tensor(1.0),
        "model_ema.decay": torch.tensor(0.9999),
        "model_ema.num_updates": torch.tensor(1000, dtype=torch.int32),
    }
    for name in [n for n in sd if n.startswith("model.diffusion_model.")]:
        sd["model_ema." + name[len("model."):].replace(".", "")] = sd[name] + 1
    ids = torch.arange(77).unsqueeze(0)
    if float_ids:
        ids = ids.float()
        if broken:
            ids[0, 40:] -= 1e-3 * torch.arange(37)  # the drift of fp16/fp32 merges
    elif broken:
        ids[0, 5:] = ids[0, 5:] - 1  # shifted ids
    sd[f"{clip_prefix}embeddings.position_ids"] = ids
    sd[f"{clip_prefix}embeddings.token_embedding.weight"] = torch.randn(16, 4, generator=g)
    return sd


def _save(tmp_path: Path, sd, name="model.ckpt") -> Path:
    import torch

    path = tmp_path / name
    torch.save({"state_dict": sd}, path)
    return path


def _inspect(path: Path) -> dict:
    result = CliRunner().invoke(main, ["inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.parametrize("prefix", CLIP_PREFIXES)
def test_inspect_finds_broken_position_ids_under_every_clip_prefix(tmp_path, prefix):
    doc = _inspect(_save(tmp_path, _checkpoint(prefix)))
    codes = {f["code"]: f for f in doc["findings"]}
    assert codes["broken-position-ids"]["where"] == f"{prefix}embeddings.position_ids"
    assert "72 of 77 ids differ" in codes["broken-position-ids"]["message"]


def test_inspect_reports_ema_with_sizes_and_junk_and_text_form(tmp_path):
    path = _save(tmp_path, _checkpoint())
    doc = _inspect(path)
    codes = {f["code"]: f for f in doc["findings"]}
    assert "3 EMA copies of model weights (2,344 bytes in 5 tensors" in codes["ema-weights"]["message"]
    assert "embedding_manager.embedder.weight" in codes["junk-keys"]["message"]
    assert "lora_te_leftover.alpha" in codes["junk-keys"]["message"]
    assert "alphas_cumprod" not in codes["junk-keys"]["message"]
    text = CliRunner().invoke(main, ["inspect", str(path)]).output
    assert "broken-position-ids" in text and "ema-weights" in text


def test_clean_checkpoint_has_no_hygiene_findings(tmp_path):
    sd = {k: v for k, v in _checkpoint(broken=False).items()
          if not k.startswith(("model_ema.", "embedding_manager.", "lora_te_"))}
    doc = _inspect(_save(tmp_path, sd))
    assert not {f["code"] for f in doc["findings"]} & {"broken-position-ids", "ema-weights", "junk-keys"}


def test_float_ids_that_drifted_are_broken_and_exact_float_ids_are_not(tmp_path):
    assert "broken-position-ids" in {f["code"] for f in _inspect(_save(tmp_path, _checkpoint(float_ids=True)))["findings"]}
    clean = _inspect(_save(tmp_path, _checkpoint(float_ids=True, broken=False), "clean.ckpt"))
    assert "broken-position-ids" not in {f["code"] for f in clean["findings"]}


def _convert(*args: str) -> dict:
    result = CliRunner().invoke(main, ["convert", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_prune_drops_ema_and_junk_keeps_everything_else_bytes_equal(tmp_path):
    import torch
    from safetensors.torch import load_file

    sd = _checkpoint()
    src = _save(tmp_path, sd)
    doc = _convert(str(src), str(tmp_path / "out.safetensors"), "--prune")
    out = load_file(str(tmp_path / "out.safetensors"))
    expected = {k for k in sd if not k.startswith(("model_ema.", "embedding_manager.", "lora_te_"))}
    assert set(out) == expected
    for name in expected:
        assert torch.equal(out[name], sd[name]), name  # position ids untouched without --fix-position-ids
    assert doc["hygiene"]["dropped_ema"] == 5 and len(doc["hygiene"]["dropped_junk"]) == 2
    assert doc["verified"]


def test_prune_keep_ema_keeps_the_ema_copies(tmp_path):
    from safetensors.torch import load_file

    src = _save(tmp_path, _checkpoint())
    _convert(str(src), str(tmp_path / "out.safetensors"), "--prune", "--keep-ema")
    out = load_file(str(tmp_path / "out.safetensors"))
    assert "model_ema.diffusion_modelout2weight" in out and "embedding_manager.embedder.weight" not in out


def test_ema_writes_the_ema_weights_as_the_model(tmp_path):
    import torch
    from safetensors.torch import load_file

    sd = _checkpoint()
    src = _save(tmp_path, sd)
    doc = _convert(str(src), str(tmp_path / "out.safetensors"), "--ema")
    out = load_file(str(tmp_path / "out.safetensors"))
    assert not [k for k in out if k.startswith("model_ema.")]
    for name in ("model.diffusion_model.input_blocks.0.0.weight", "model.diffusion_model.out.2.weight"):
        assert torch.equal(out[name], sd[name] + 1)  # the EMA copy, not the training weights
    assert doc["hygiene"]["ema_as_model"] == 3


def test_fix_position_ids_writes_0_to_76_in_the_same_dtype(tmp_path):
    import torch
    from safetensors.torch import load_file

    for float_ids in (False, True):
        src = _save(tmp_path, _checkpoint(float_ids=float_ids), f"m{float_ids}.ckpt")
        dst = tmp_path / f"o{float_ids}.safetensors"
        doc = _convert(str(src), str(dst), "--fix-position-ids")
        ids = load_file(str(dst))["cond_stage_model.transformer.text_model.embeddings.position_ids"]
        assert ids.dtype == (torch.float32 if float_ids else torch.int64) and ids.shape == (1, 77)
        assert torch.equal(ids, torch.arange(77, dtype=ids.dtype).unsqueeze(0))
        assert list(doc["hygiene"]["fixed_position_ids"]) == ["cond_stage_model.transformer.text_model.embeddings.position_ids"]
        assert "broken-position-ids" not in {f["code"] for f in _inspect(dst)["findings"]}


def test_safetensors_source_and_bad_combinations(tmp_path):
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in _checkpoint().items()}
    src = tmp_path / "m.safetensors"
    save_file(sd, str(src))
    _convert(str(src), str(tmp_path / "o.safetensors"), "--prune", "--fix-position-ids")
    runner = CliRunner()
    bad = runner.invoke(main, ["convert", str(src), str(tmp_path / "x.safetensors"), "--keep-ema"])
    assert bad.exit_code == 2 and "--keep-ema goes with --prune" in bad.output and "Traceback" not in bad.output
    no_ema = {k: v for k, v in sd.items() if not k.startswith("model_ema.")}
    save_file(no_ema, str(tmp_path / "n.safetensors"))
    bad = runner.invoke(main, ["convert", str(tmp_path / "n.safetensors"), str(tmp_path / "y.safetensors"), "--ema"])
    assert bad.exit_code == 2 and "no EMA weights" in bad.output
    assert not (tmp_path / "y.safetensors").exists() and not (tmp_path / "x.safetensors").exists()


def test_ema_with_only_takes_the_ema_copies_of_the_selected_part(tmp_path):
    """--ema puts the EMA copies in place before --only picks a part of the model (it said the
    file had no EMA weights, since --only had already dropped model_ema.*)."""
    import torch
    from safetensors.torch import load_file

    sd = _checkpoint()
    src = _save(tmp_path, sd)
    dst = tmp_path / "unet.safetensors"
    _convert(str(src), str(dst), "--ema", "--only", "model.diffusion_model.", "--strip-prefix",
             "model.diffusion_model.")
    out = load_file(str(dst))
    assert set(out) == {"input_blocks.0.0.weight", "input_blocks.0.0.bias", "out.2.weight"}
    assert torch.equal(out["out.2.weight"], sd["model.diffusion_model.out.2.weight"] + 1)


def test_ema_that_covers_part_of_the_model_says_so(tmp_path):
    import torch

    sd = _checkpoint()
    del sd["model_ema.diffusion_modelout2weight"]
    sd["model_ema.diffusion_modelinput_blocks00bias"] = sd["model_ema.diffusion_modelinput_blocks00bias"].half()
    src = _save(tmp_path, sd)
    doc = _convert(str(src), str(tmp_path / "out.safetensors"), "--ema")
    assert doc["hygiene"]["ema_as_model"] == 2 and doc["hygiene"]["ema_uncovered"] == 1
    assert doc["hygiene"]["ema_other_dtype"] == ["model_ema.diffusion_modelinput_blocks00bias"]
    text = CliRunner().invoke(main, ["convert", str(src), str(tmp_path / "t.safetensors"), "--ema"]).output
    assert "the EMA covers 2 of 3 model weights" in text and "another dtype" in text
    assert torch is not None


def test_folder_conversion_applies_hygiene_to_every_file(tmp_path):
    """convert SRC_DIR DST_DIR --prune / --ema: every checkpoint (a .safetensors too) is cleaned,
    and the report says what each lost; it used to ignore the options and exit 0."""
    from safetensors.torch import load_file, save_file

    src_dir = tmp_path / "in"
    (src_dir / "sub").mkdir(parents=True)
    sd = _checkpoint()
    _save(src_dir / "sub", sd, "a.ckpt")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(src_dir / "b.safetensors"))
    doc = _convert(str(src_dir), str(tmp_path / "out"), "--prune")
    assert [r["status"] for r in doc["results"]] == ["converted", "converted"]
    for rel in ("sub/a.safetensors", "b.safetensors"):
        names = set(load_file(str(tmp_path / "out" / rel)))
        assert not [n for n in names if n.startswith(("model_ema.", "embedding_manager.", "lora_te_"))], rel
        assert "model.diffusion_model.out.2.weight" in names
    assert all(r["hygiene"]["dropped_ema"] == 5 for r in doc["results"])
    text = CliRunner().invoke(main, ["convert", str(src_dir), str(tmp_path / "out2"), "--ema"]).output
    assert text.count("hygiene: EMA weights written as the model (3 tensors)") == 2, text
    bad = CliRunner().invoke(main, ["convert", str(src_dir), str(tmp_path / "out3"), "--keep-ema"])
    assert bad.exit_code == 2 and "--keep-ema goes with --prune" in bad.output
    assert not (tmp_path / "out3").exists()


def test_inspect_of_a_folder_names_the_component_file_to_fix(tmp_path):
    import torch
    from safetensors.torch import save_file

    folder = tmp_path / "pipe" / "text_encoder"
    folder.mkdir(parents=True)
    ids = torch.arange(77).unsqueeze(0)
    ids[0, 5:] -= 1
    save_file({"text_model.embeddings.position_ids": ids,
               "text_model.embeddings.token_embedding.weight": torch.zeros(16, 4)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text('{"_class_name": "CLIPTextModel"}')
    (tmp_path / "pipe" / "model_index.json").write_text(
        '{"_class_name": "StableDiffusionPipeline", "text_encoder": ["transformers", "CLIPTextModel"]}')
    findings = [f for f in _inspect_any(tmp_path / "pipe") if f["code"] == "broken-position-ids"]
    assert findings and "convert text_encoder/model.safetensors OUT --fix-position-ids" in findings[0]["message"]


def _inspect_any(path: Path) -> list[dict]:
    result = CliRunner().invoke(main, ["inspect", str(path), "--json"])
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.output)["findings"]
