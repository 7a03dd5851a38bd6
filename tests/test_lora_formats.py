"""LoRA kohya <-> peft (diffusers) conversion, checked against diffusers' own load_lora_weights."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from _lora_helpers import kohya_state_dict, load_pipeline, save_kohya, tiny_pipeline_folder

from assetkit.convert import convert_lora
from assetkit.errors import AssetkitError

pytestmark = pytest.mark.filterwarnings("ignore")
REPO = Path(__file__).resolve().parent.parent
KOHYA_LAYOUT = REPO.parent / "shared" / "layouts" / "lora_sd15_kohya.json"


@pytest.fixture(scope="module")
def folder() -> Path:
    return tiny_pipeline_folder()


@pytest.fixture(scope="module")
def pipe(folder):
    return load_pipeline(folder)


def _outputs(p):
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.tensor([[0, 2, 3, 4, 1]])
    x = torch.randn(1, 4, 8, 8, generator=g)
    ctx = torch.randn(1, 5, 8, generator=g)
    with torch.no_grad():
        return p.text_encoder(ids)[0], p.unet(x, 10, encoder_hidden_states=ctx).sample


def _load(folder, lora: Path, caplog):
    p = load_pipeline(folder)
    with caplog.at_level(logging.WARNING):
        p.load_lora_weights(str(lora))
    return p


@pytest.mark.slow
def test_kohya_to_peft_loads_in_diffusers_like_the_kohya_original(tmp_path, folder, pipe, caplog):
    import torch

    kohya = save_kohya(pipe, tmp_path / "k.safetensors", ranks=(4,), alphas=(1.0,))
    peft = tmp_path / "p.safetensors"
    report = convert_lora(kohya, peft, to="diffusers", config=folder)
    assert report.verified and report.modules == {"text_encoder": 6, "unet": 48}
    caplog.clear()
    from_kohya = _load(folder, kohya, caplog)
    from_peft = _load(folder, peft, caplog)
    assert not [r for r in caplog.records if "unexpected" in r.getMessage().lower() or "missing" in r.getMessage().lower()]
    te_k, unet_k = _outputs(from_kohya)
    te_p, unet_p = _outputs(from_peft)
    base_te, base_unet = _outputs(pipe)
    assert not torch.equal(base_unet, unet_p)  # the LoRA does something
    assert torch.equal(te_k, te_p) and torch.equal(unet_k, unet_p)


def test_every_peft_tensor_lands_in_the_model_with_the_kohya_scale(tmp_path, folder, pipe, caplog):
    """Mixed ranks and alphas: diffusers must inject every module of the peft file, with its bytes
    and alpha/rank read from the kohya file (safetensors as the oracle)."""
    from safetensors.torch import load_file

    kohya = save_kohya(pipe, tmp_path / "k.safetensors", ranks=(2, 3), alphas=(1.0, 0.5, 2.0))
    peft = tmp_path / "p.safetensors"
    convert_lora(kohya, peft, to="diffusers", config=folder)
    source = load_file(str(kohya))
    p = _load(folder, peft, caplog)
    seen = 0
    for prefix, model in (("lora_unet_", p.unet), ("lora_te_text_model_", p.text_encoder)):
        for name, module in model.named_modules():
            if not hasattr(module, "lora_A") or "default_0" not in module.lora_A:
                continue
            kohya_name = prefix + name.removeprefix("text_model.").replace(".", "_")
            down = source[f"{kohya_name}.lora_down.weight"]
            assert module.scaling["default_0"] == source[f"{kohya_name}.alpha"].item() / down.shape[0], name
            assert (module.lora_A["default_0"].weight.detach().half() == down.reshape(module.lora_A["default_0"].weight.shape)).all()
            seen += 1
    assert seen == 54  # 48 UNet + 6 text-encoder modules: nothing left unmatched


def test_kohya_peft_kohya_is_byte_identical(tmp_path, folder, pipe):
    kohya = save_kohya(pipe, tmp_path / "k.safetensors", ranks=(2, 3), alphas=(1.0, 0.25, 8.0),
                       metadata={"ss_network_dim": "2", "ss_network_alpha": "1.0"})
    convert_lora(kohya, tmp_path / "p.safetensors", to="diffusers", config=folder)
    convert_lora(tmp_path / "p.safetensors", tmp_path / "k2.safetensors", to="kohya", config=folder)
    assert (tmp_path / "k2.safetensors").read_bytes() == kohya.read_bytes()


def test_round_trip_exact_with_f32_alphas_among_f16_weights(tmp_path, folder, pipe):
    """safetensors writes F32 alphas before F16 weights: the order is recorded and restored."""
    kohya = save_kohya(pipe, tmp_path / "k.safetensors", alpha_dtype="float32", dtype="bfloat16")
    convert_lora(kohya, tmp_path / "p.safetensors", to="diffusers", config=folder)
    convert_lora(tmp_path / "p.safetensors", tmp_path / "k2.safetensors", to="kohya", config=folder)
    assert (tmp_path / "k2.safetensors").read_bytes() == kohya.read_bytes()


def test_alpha_is_carried_never_folded(tmp_path, folder, pipe):
    from safetensors import safe_open
    from safetensors.torch import load_file

    kohya = save_kohya(pipe, tmp_path / "k.safetensors", ranks=(2, 3), alphas=(1.0, 0.5))
    peft = tmp_path / "p.safetensors"
    convert_lora(kohya, peft, to="diffusers", config=folder)
    src, out = load_file(str(kohya)), load_file(str(peft))
    assert not [k for k in out if "alpha" in k]
    for name, tensor in src.items():
        if name.endswith(".lora_down.weight"):
            match = [k for k in out if k.endswith(".lora_A.weight") and k.replace(".", "_").endswith(
                name.split(".")[0].removeprefix("lora_unet_").removeprefix("lora_te_") + "_lora_A_weight")]
            assert len(match) == 1 and out[match[0]].equal(tensor)
    with safe_open(str(peft), "pt") as fh:
        config = json.loads(fh.metadata()["lora_adapter_metadata"])
    assert config["unet.r"] == 2 and config["unet.lora_alpha"] in (1.0, 0.5)
    assert set(config["unet.rank_pattern"].values()) == {3}
    assert set(config["unet.alpha_pattern"].values()) == {1.0, 0.5} - {config["unet.lora_alpha"]}
    assert config["text_encoder.target_modules"][0].startswith("encoder.layers.0.")


@pytest.mark.slow
def test_dora_magnitudes_are_carried(tmp_path, folder, pipe, caplog):
    from safetensors.torch import load_file

    kohya = save_kohya(pipe, tmp_path / "k.safetensors", dora=True)
    peft = tmp_path / "p.safetensors"
    report = convert_lora(kohya, peft, to="diffusers", config=folder)
    assert report.dora
    out = load_file(str(peft))
    mags = {k: v for k, v in out.items() if k.endswith(".lora_magnitude_vector")}
    assert len(mags) == 54
    p = _load(folder, peft, caplog)
    module = p.unet.get_submodule("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q")
    loaded = module.lora_magnitude_vector["default_0"].weight.detach()
    assert loaded.half().equal(mags["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_magnitude_vector"])
    convert_lora(peft, tmp_path / "k2.safetensors", to="kohya", config=folder)
    assert (tmp_path / "k2.safetensors").read_bytes() == kohya.read_bytes()


@pytest.mark.slow
def test_peft_from_diffusers_save_lora_weights_converts_to_kohya(tmp_path, folder, pipe):
    """A peft file that diffusers itself wrote (its own lora_adapter_metadata) goes to kohya with the
    alphas diffusers would apply, and loads back in diffusers with the same outputs."""
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    p = load_pipeline(folder)
    cfg = LoraConfig(r=4, lora_alpha=2, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False)
    p.unet.add_adapter(cfg)
    StableDiffusionPipeline.save_lora_weights(tmp_path, unet_lora_layers=get_peft_model_state_dict(p.unet),
                                              unet_lora_adapter_metadata=cfg.to_dict(), safe_serialization=True)
    peft = tmp_path / "pytorch_lora_weights.safetensors"
    kohya = tmp_path / "k.safetensors"
    convert_lora(peft, kohya, to="kohya", config=folder)
    from safetensors.torch import load_file

    out = load_file(str(kohya))
    alphas = {v.item() for k, v in out.items() if k.endswith(".alpha")}
    assert alphas == {2.0} and all(k.startswith("lora_unet_down_blocks_") or k.startswith(("lora_unet_up", "lora_unet_mid")) for k in out)
    a, b = load_pipeline(folder), load_pipeline(folder)
    a.load_lora_weights(str(peft))
    b.load_lora_weights(str(kohya))
    assert torch.equal(_outputs(a)[1], _outputs(b)[1])


@pytest.mark.parametrize("algo", ["loha", "lokr"])
def test_lycoris_algorithms_are_refused_by_name(tmp_path, algo):
    import numpy as np
    from safetensors.numpy import save_file

    roles = {"loha": ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"), "lokr": ("lokr_w1", "lokr_w2")}[algo]
    tensors = {f"lora_unet_down_blocks_0_attentions_0_proj_in.{r}": np.zeros((2, 2), np.float16) for r in roles}
    tensors["lora_unet_down_blocks_0_attentions_0_proj_in.alpha"] = np.array(1.0, np.float16)
    save_file(tensors, str(tmp_path / "l.safetensors"))
    with pytest.raises(AssetkitError, match="LoHa" if algo == "loha" else "LoKr"):
        convert_lora(tmp_path / "l.safetensors", tmp_path / "o.safetensors", to="diffusers", family="sd1")
    assert not (tmp_path / "o.safetensors").exists()


def test_unknown_module_names_are_an_error_naming_them(tmp_path, folder, pipe):
    from safetensors.torch import save_file

    sd = kohya_state_dict(pipe)
    sd["lora_unet_down_blocks_9_attentions_0_proj_in.lora_down.weight"] = sd.pop(
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight")
    save_file(sd, str(tmp_path / "k.safetensors"))
    with pytest.raises(AssetkitError, match="down_blocks_9"):
        convert_lora(tmp_path / "k.safetensors", tmp_path / "o.safetensors", to="diffusers", config=folder)
    assert not (tmp_path / "o.safetensors").exists()


def _sparse_kohya_sd15(path: Path) -> Path:
    """The full-size SD1.5 kohya key set (shared layout), zero-filled except alphas, via safetensors."""
    import numpy as np
    from safetensors.numpy import save_file

    layout = json.loads(KOHYA_LAYOUT.read_text())["keys"]
    tensors = {}
    for name, decl in layout.items():
        arr = np.zeros(decl["shape"], dtype=np.float16)
        if name.endswith(".alpha"):
            arr = np.array(1.0, np.float16)
        tensors[name] = arr
    save_file(tensors, str(path), metadata={"ss_network_dim": "4"})
    return path


@pytest.mark.skipif(not KOHYA_LAYOUT.is_file(), reason="shared layouts not present")
def test_full_size_sd15_kohya_key_set_maps_completely_and_round_trips(tmp_path):
    from safetensors import safe_open

    kohya = _sparse_kohya_sd15(tmp_path / "k.safetensors")
    report = convert_lora(kohya, tmp_path / "p.safetensors", to="diffusers")  # family probed: sd1
    assert report.modules == {"text_encoder": 72, "unet": 192}
    with safe_open(str(tmp_path / "p.safetensors"), "np") as fh:
        keys = list(fh.keys())
    assert "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight" in keys
    assert "text_encoder.text_model.encoder.layers.11.mlp.fc2.lora_B.weight" in keys
    convert_lora(tmp_path / "p.safetensors", tmp_path / "k2.safetensors", to="kohya", family="sd1")
    assert (tmp_path / "k2.safetensors").read_bytes() == kohya.read_bytes()


def _write_modules(path: Path, modules: dict, *, rank: int, alpha: float, dtype) -> None:
    """kohya tensors for ``{kohya name: (out, in)}`` Linear modules, written by safetensors."""
    import numpy as np
    from safetensors.numpy import save_file

    tensors = {}
    for name, (out_f, in_f) in modules.items():
        tensors[f"{name}.alpha"] = np.array(alpha, dtype)
        tensors[f"{name}.lora_down.weight"] = np.full((rank, in_f), 0.5, dtype)
        tensors[f"{name}.lora_up.weight"] = np.full((out_f, rank), 0.25, dtype)
    save_file(tensors, str(path))


def test_sdxl_sgm_spelling_maps_through_the_unet_block_map(tmp_path):
    """kohya's SDXL names (input_blocks_4_1_...) go to diffusers' down_blocks.1.attentions.0 and back,
    and --kohya-unet diffusers writes the other spelling."""
    import numpy as np
    from safetensors import safe_open

    modules = {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q": (640, 640),
               "lora_unet_output_blocks_0_1_transformer_blocks_9_ff_net_2": (1280, 5120),
               "lora_unet_middle_block_1_proj_in": (1280, 1280),
               "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": (768, 768),
               "lora_te2_text_model_encoder_layers_31_mlp_fc1": (5120, 1280)}
    _write_modules(tmp_path / "k.safetensors", modules, rank=8, alpha=4.0, dtype=np.float16)
    report = convert_lora(tmp_path / "k.safetensors", tmp_path / "p.safetensors", to="diffusers", family="sdxl")
    assert report.unet_spelling == "sgm"
    with safe_open(str(tmp_path / "p.safetensors"), "np") as fh:
        keys = set(fh.keys())
    assert "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight" in keys
    assert "unet.up_blocks.0.attentions.0.transformer_blocks.9.ff.net.2.lora_B.weight" in keys
    assert "unet.mid_block.attentions.0.proj_in.lora_A.weight" in keys
    assert "text_encoder_2.text_model.encoder.layers.31.mlp.fc1.lora_A.weight" in keys
    convert_lora(tmp_path / "p.safetensors", tmp_path / "k2.safetensors", to="kohya", family="sdxl")
    assert (tmp_path / "k2.safetensors").read_bytes() == (tmp_path / "k.safetensors").read_bytes()
    convert_lora(tmp_path / "p.safetensors", tmp_path / "k3.safetensors", to="kohya", family="sdxl",
                 unet_spelling="diffusers")
    with safe_open(str(tmp_path / "k3.safetensors"), "np") as fh:
        assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.alpha" in set(fh.keys())


def test_cli_converts_and_reports_json(tmp_path, folder, pipe):
    from click.testing import CliRunner

    from assetkit.cli import main

    kohya = save_kohya(pipe, tmp_path / "k.safetensors")
    runner = CliRunner()
    result = runner.invoke(main, ["convert", str(kohya), str(tmp_path / "p.safetensors"), "--to", "diffusers",
                                  "--config", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["ok"] and doc["target_format"] == "peft" and doc["verified"]
    again = runner.invoke(main, ["convert", str(tmp_path / "p.safetensors"), str(tmp_path / "x.safetensors"),
                                 "--to", "diffusers", "--config", str(folder)])
    assert again.exit_code == 2 and "already in peft naming" in again.output
    assert "Traceback" not in again.output


def test_sd2_names_map_with_the_sd2_configs(tmp_path):
    import numpy as np
    from safetensors import safe_open

    modules = {"lora_unet_down_blocks_0_attentions_0_proj_in": (320, 320),
               "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_k": (320, 1024),
               "lora_te_text_model_encoder_layers_22_mlp_fc1": (4096, 1024)}
    _write_modules(tmp_path / "k.safetensors", modules, rank=4, alpha=2.0, dtype=np.float32)
    convert_lora(tmp_path / "k.safetensors", tmp_path / "p.safetensors", to="diffusers", family="sd2")
    with safe_open(str(tmp_path / "p.safetensors"), "np") as fh:
        assert "text_encoder.text_model.encoder.layers.22.mlp.fc1.lora_A.weight" in set(fh.keys())
    with pytest.raises(AssetkitError, match="layers_22"):  # CLIP-L has 12 layers: not an SD1 LoRA
        convert_lora(tmp_path / "k.safetensors", tmp_path / "q.safetensors", to="diffusers", family="sd1")
    convert_lora(tmp_path / "p.safetensors", tmp_path / "k2.safetensors", to="kohya", family="sd2")
    assert (tmp_path / "k2.safetensors").read_bytes() == (tmp_path / "k.safetensors").read_bytes()


def test_kohya_text_encoder_names_without_text_model_convert_and_round_trip(tmp_path, folder, pipe, caplog):
    """LoRAs written from transformers 5 modules (no text_model. level: lora_te_encoder_layers_*),
    which diffusers loads, convert too, and come back with their own spelling byte for byte."""
    import torch
    from safetensors.torch import save_file

    # one rank and alpha: diffusers' own kohya reader gets per-module alphas wrong (see above)
    sd = {k.replace("lora_te_text_model_", "lora_te_"): v
          for k, v in kohya_state_dict(pipe, ranks=(4,), alphas=(1.0,)).items()}
    assert any(k.startswith("lora_te_encoder_layers_") for k in sd)
    kohya = tmp_path / "bare.safetensors"
    save_file(sd, str(kohya))
    peft, back = tmp_path / "p.safetensors", tmp_path / "k.safetensors"
    report = convert_lora(kohya, peft, to="diffusers", config=folder)
    assert report.modules["text_encoder"] == 6
    convert_lora(peft, back, to="kohya", config=folder)
    assert back.read_bytes() == kohya.read_bytes()
    te_k, _ = _outputs(_load(folder, kohya, caplog))
    te_p, _ = _outputs(_load(folder, peft, caplog))
    assert torch.allclose(te_k, te_p, atol=1e-5)
    mixed = dict(sd, **{k: v for k, v in kohya_state_dict(pipe).items() if k.startswith("lora_te_text_model_")})
    save_file(mixed, str(tmp_path / "mixed.safetensors"))
    with pytest.raises(AssetkitError, match="mix lora_te_text_model_"):
        convert_lora(tmp_path / "mixed.safetensors", tmp_path / "m.safetensors", to="diffusers", config=folder)


def test_a_checkpoint_with_a_stray_lora_key_is_not_taken_for_a_lora(tmp_path, folder):
    """A full checkpoint holding one leftover lora_* tensor (junk a merge left) goes to the layout
    converter with --to diffusers (it was routed to the LoRA converter and refused)."""
    from click.testing import CliRunner
    from safetensors.numpy import load_file, save_file

    from assetkit.cli import main
    from assetkit.convert.lora_formats import detect_format

    runner = CliRunner()
    single = tmp_path / "model.safetensors"
    result = runner.invoke(main, ["convert", str(folder), str(single), "--to", "single-file"])
    assert result.exit_code == 0, result.output
    tensors = load_file(str(single))
    tensors["lora_unet_leftover.alpha"] = tensors["model.diffusion_model.out.2.bias"][:1].copy()
    stray = tmp_path / "stray.safetensors"
    save_file(tensors, str(stray))
    assert detect_format(list(tensors)) == "unknown"
    result = runner.invoke(main, ["convert", str(stray), str(tmp_path / "out"), "--to", "diffusers",
                                  "--config", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    assert "lora_unet_leftover.alpha" in json.loads(result.output)["extras"]


def test_a_module_of_another_width_is_refused_when_config_has_weights(tmp_path, folder, pipe):
    """With --config a folder with weights, the widths are known: a LoRA module whose lora_down reads
    another width is an error naming it (it converted, 'verified', and failed inside diffusers)."""
    import torch
    from safetensors.torch import save_file

    sd = kohya_state_dict(pipe)
    name = next(k for k in sd if k.startswith("lora_unet_") and k.endswith(".lora_down.weight"))
    down = sd[name]
    sd[name] = torch.zeros(down.shape[0], down.shape[1] + 3, *down.shape[2:], dtype=down.dtype)
    bad = tmp_path / "bad.safetensors"
    save_file(sd, str(bad))
    with pytest.raises(AssetkitError, match="do not fit the widths of the --config model: " + name.split(".")[0]):
        convert_lora(bad, tmp_path / "p.safetensors", to="diffusers", config=folder)
    assert not (tmp_path / "p.safetensors").exists()


def test_a_kohya_files_own_lora_adapter_metadata_entry_comes_back(tmp_path, folder, pipe):
    kohya = save_kohya(pipe, tmp_path / "k.safetensors", metadata={"lora_adapter_metadata": "not json{",
                                                                   "ss_network_dim": "4"})
    peft, back = tmp_path / "p.safetensors", tmp_path / "b.safetensors"
    convert_lora(kohya, peft, to="diffusers", config=folder)
    convert_lora(peft, back, to="kohya", config=folder)
    assert back.read_bytes() == kohya.read_bytes()


def test_a_missing_config_folder_is_said_plainly(tmp_path, pipe):
    kohya = save_kohya(pipe, tmp_path / "k.safetensors")
    with pytest.raises(AssetkitError, match="--config: no such folder"):
        convert_lora(kohya, tmp_path / "p.safetensors", to="diffusers", config=tmp_path / "nope")
