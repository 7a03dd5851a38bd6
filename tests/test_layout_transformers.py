"""SD3/SD3.5 and Flux.1 transformers alone between the original layout and diffusers.

The original-layout files are written independently of the converter: the factory's ``mmdit`` and
``flux`` (the reference implementations' names) with seeded random values, saved by the
safetensors library. Oracles: diffusers' ``SD3Transformer2DModel.from_single_file(config=<the same
tiny config>)`` for SD3; for Flux, whose diffusers converter hard-codes the released width (3072),
diffusers' ``convert_flux_transformer_checkpoint_to_diffusers`` run on a file of the released
widths along dim 0 (the only dim it splits) and one column; ``from_pretrained`` loads every folder
with no missing or unexpected key; round trips both ways compare names, dtypes, shapes and bytes
through safetensors.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _layouts_helpers import file_tensors, tensor_key
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assetkit.convert import SIDECAR
from assetkit.convert.keymap import SourcePart, TargetTensor, check_rules, map_names
from assetkit.convert.layout_convert import convert_layout
from assetkit.convert.layouts import flux_transformer_rules, sd3_transformer_rules
from assetkit.factory import keys as K
from assetkit.factory import materialize

WEIGHTS = "diffusion_pytorch_model.safetensors"
PREFIXES = ("", "model.diffusion_model.")

#: Tiny SD3 transformers: factory ``mmdit`` arguments (hidden = 64 x depth, head 64) and the
#: matching diffusers config. ``sd35m`` has qk RMS norm and an MMDiT-X dual-attention block.
SD3_TINY = {
    "sd3": ({"depth": 2}, {}),
    "sd35m": ({"depth": 2, "qk_norm": True, "x_attn2_blocks": 1},
              {"qk_norm": "rms_norm", "dual_attention_layers": [0]}),
}


def sd3_config(name: str) -> dict:
    depth = SD3_TINY[name][0]["depth"]
    return {"num_layers": depth, "num_attention_heads": depth, "attention_head_dim": 64,
            "caption_projection_dim": 64 * depth, "joint_attention_dim": 32, "pooled_projection_dim": 16,
            "in_channels": 4, "out_channels": 4, "patch_size": 2, "pos_embed_max_size": 8, "sample_size": 8,
            **SD3_TINY[name][1]}


def write_sd3(name: str, prefix: str, dest: Path, seed: int = 0) -> Path:
    from safetensors.numpy import save_file

    layout = K.mmdit(pos_embed_max=8, in_channels=4, context_in=32, pooled_in=16, prefix=prefix, **SD3_TINY[name][0])
    save_file(materialize(layout, shrink=False, seed=seed), str(dest))
    return dest


def save_sd3_config(name: str, dest: Path) -> Path:
    from diffusers import SD3Transformer2DModel

    SD3Transformer2DModel.from_config(sd3_config(name)).save_config(str(dest))
    return dest


SD3_CASES = [(n, p) for n in SD3_TINY for p in PREFIXES]
SD3_IDS = [f"{n}-{'prefixed' if p else 'bare'}" for n, p in SD3_CASES]


@pytest.fixture(scope="module")
def sd3_converted(tmp_path_factory):
    """(tiny model, prefix) -> (original file, config folder, our diffusers folder, our file back)."""
    out = {}
    for name in SD3_TINY:
        root = tmp_path_factory.mktemp(f"sd3-{name}")
        config = save_sd3_config(name, root / "config")
        for prefix in PREFIXES:
            tag = "prefixed" if prefix else "bare"
            orig = write_sd3(name, prefix, root / f"{tag}.safetensors")
            folder = root / f"{tag}-diffusers"
            convert_layout(orig, folder, to="diffusers", config_dir=config)
            back = root / f"{tag}-back.safetensors"
            convert_layout(folder, back, to="single-file")
            out[(name, prefix)] = (orig, config, folder, back)
    return out


@pytest.mark.parametrize(("name", "prefix"), SD3_CASES, ids=SD3_IDS)
def test_sd3_folder_equals_diffusers_from_single_file(sd3_converted, name, prefix):
    from diffusers import SD3Transformer2DModel

    orig, config, folder, _ = sd3_converted[(name, prefix)]
    theirs = SD3Transformer2DModel.from_single_file(str(orig), config=str(config), local_files_only=True,
                                                    low_cpu_mem_usage=False)
    theirs = {k: tensor_key(v) for k, v in theirs.state_dict().items()}
    assert file_tensors(folder / WEIGHTS) == theirs


@pytest.mark.parametrize(("name", "prefix"), SD3_CASES, ids=SD3_IDS)
def test_sd3_folder_loads_with_from_pretrained(sd3_converted, name, prefix):
    from diffusers import SD3Transformer2DModel

    _, _, folder, _ = sd3_converted[(name, prefix)]
    model, info = SD3Transformer2DModel.from_pretrained(str(folder), local_files_only=True, low_cpu_mem_usage=False,
                                                        output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == [] and info["mismatched_keys"] == []
    assert {k: tensor_key(v) for k, v in model.state_dict().items()} == file_tensors(folder / WEIGHTS)


@pytest.mark.parametrize(("name", "prefix"), SD3_CASES, ids=SD3_IDS)
def test_sd3_round_trips_both_ways_are_identical(sd3_converted, tmp_path, name, prefix):
    orig, config, folder, back = sd3_converted[(name, prefix)]
    assert file_tensors(back) == file_tensors(orig)
    # The sidecar records a prefix the way back would not restore (layouts.json: a bare transformer).
    assert (folder / SIDECAR).is_file() == (prefix != "")
    convert_layout(back, tmp_path / "again", to="diffusers", config_dir=config)
    assert file_tensors(tmp_path / "again" / WEIGHTS) == file_tensors(folder / WEIGHTS)


def test_sd3_folder_from_diffusers_goes_to_original_names_and_back(tmp_path):
    """A diffusers-saved transformer (no sidecar) -> bare original names that diffusers'
    from_single_file reads into the same tensors, with ModelSpec metadata -> the same folder."""
    import torch
    from diffusers import SD3Transformer2DModel
    from safetensors import safe_open

    torch.manual_seed(1)
    SD3Transformer2DModel.from_config(sd3_config("sd35m")).to(torch.float16).save_pretrained(str(tmp_path / "theirs"))
    want = file_tensors(tmp_path / "theirs" / WEIGHTS)
    single = tmp_path / "sd3.safetensors"
    summary = convert_layout(tmp_path / "theirs", single, to="single-file")
    assert summary["layout"] == "sd3-transformer" and summary["family"] == "sd3"
    names = list(file_tensors(single))
    assert "joint_blocks.0.x_block.attn2.qkv.weight" in names and not any(n.startswith("model.") for n in names)
    with safe_open(str(single), "np") as fh:
        meta = fh.metadata()
    assert meta["modelspec.architecture"] == "stable-diffusion-3"  # a tiny model: the family's generic id
    loaded = SD3Transformer2DModel.from_single_file(str(single), config=str(tmp_path / "theirs"),
                                                    local_files_only=True, low_cpu_mem_usage=False,
                                                    torch_dtype=torch.float16)
    assert {k: tensor_key(v) for k, v in loaded.state_dict().items()} == want
    convert_layout(single, tmp_path / "again", to="diffusers", config_dir=tmp_path / "theirs")
    assert file_tensors(tmp_path / "again" / WEIGHTS) == want


def test_sd3_config_mismatch_is_one_line_and_writes_nothing(tmp_path):
    """A file with more joint blocks than the config: a one-line error, exit 2, no output."""
    orig = write_sd3("sd3", "", tmp_path / "sd3.safetensors")
    config = save_sd3_config("sd3", tmp_path / "config")
    cfg = json.loads((config / "config.json").read_text())
    cfg["num_layers"] = 1
    (config / "config.json").write_text(json.dumps(cfg))
    r = subprocess.run([sys.executable, "-m", "assetkit", "convert", str(orig), str(tmp_path / "out"), "--to",
                        "diffusers", "--config", str(config)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "no place for" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


# ---- the rules alone -------------------------------------------------------------------------
def _compose(outer: TargetTensor, inner: dict[str, TargetTensor]) -> list[SourcePart]:
    """The byte ranges of the original tensors that ``outer`` (a target of the way back, whose
    parts are ranges of the way there's targets) reads, in order, merged where contiguous."""
    out: list[SourcePart] = []
    for part in outer.parts:
        pos = 0
        for p in inner[part.source].parts:
            lo, hi = max(part.start, pos), min(part.stop, pos + p.stop - p.start)
            if lo < hi:
                piece = SourcePart(p.source, p.start + lo - pos, p.start + hi - pos)
                if out and out[-1].source == piece.source and out[-1].stop == piece.start:
                    piece = SourcePart(piece.source, out[-1].start, piece.stop)
                    out.pop()
                out.append(piece)
            pos += p.stop - p.start
    return out


def assert_map_inverse_identity(rules, source):
    """map ∘ inverse is the identity: every name, shape and dtype, and every byte read once in order."""
    assert check_rules(rules) == []
    forward = map_names(rules, source, "to_diffusers")
    assert forward.unmatched == () and forward.missing == ()
    middle = {t.name: (t.dtype, t.shape) for t in forward.targets}
    back = map_names(rules, middle, "to_original")
    assert back.unmatched == () and back.missing == ()
    assert {t.name: (t.dtype, t.shape) for t in back.targets} == source
    by_name = {t.name: t for t in forward.targets}
    for t in back.targets:
        assert _compose(t, by_name) == [SourcePart(t.name, 0, t.nbytes)], t.name


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(depth=st.integers(1, 4), qk=st.booleans(), dual=st.integers(0, 4),
       dtype=st.sampled_from(["F32", "F16", "BF16"]))
def test_sd3_rules_map_inverse_is_identity(depth, qk, dual, dtype):
    hidden = 64 * depth
    layout = K.mmdit(depth=depth, qk_norm=qk, x_attn2_blocks=min(dual, depth), pos_embed_max=4, in_channels=4,
                     context_in=8, pooled_in=8, dtype=dtype, prefix="")
    config = {"num_layers": depth, "num_attention_heads": depth, "caption_projection_dim": hidden,
              "qk_norm": "rms_norm" if qk else None, "dual_attention_layers": list(range(min(dual, depth)))}
    assert_map_inverse_identity(sd3_transformer_rules(config),
                                {n: (d.dtype, tuple(d.shape)) for n, d in layout.items()})


# ---- Flux ------------------------------------------------------------------------------------
#: A tiny Flux (width 32, two heads of 16, rope axes 4+6+6): factory ``flux`` arguments and config.
FLUX_TINY = {"hidden": 32, "heads": 2, "depth": 1, "depth_single": 2, "in_channels": 4, "context_in": 32,
             "vec_in": 16}
FLUX_CASES = [(g, p) for g in (True, False) for p in PREFIXES]
FLUX_IDS = [f"{'dev' if g else 'schnell'}-{'prefixed' if p else 'bare'}" for g, p in FLUX_CASES]


def flux_config(guidance: bool) -> dict:
    return {"num_layers": 1, "num_single_layers": 2, "attention_head_dim": 16, "num_attention_heads": 2,
            "joint_attention_dim": 32, "pooled_projection_dim": 16, "in_channels": 4, "guidance_embeds": guidance,
            "axes_dims_rope": [4, 6, 6]}


def save_flux_config(config: dict, dest: Path) -> Path:
    """The config folder, written by diffusers (the model built on the meta device: no weights)."""
    import torch
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        FluxTransformer2DModel.from_config(config).save_config(str(dest))
    return dest


@pytest.fixture(scope="module")
def flux_converted(tmp_path_factory):
    from safetensors.numpy import save_file

    out = {}
    for guidance, prefix in FLUX_CASES:
        root = tmp_path_factory.mktemp("flux")
        config = save_flux_config(flux_config(guidance), root / "config")
        orig = root / "flux.safetensors"
        save_file(materialize(K.flux(guidance=guidance, prefix=prefix, **FLUX_TINY), shrink=False, seed=4), str(orig))
        convert_layout(orig, root / "diffusers", to="diffusers", config_dir=config)
        convert_layout(root / "diffusers", root / "back.safetensors", to="single-file")
        out[(guidance, prefix)] = (orig, config, root / "diffusers", root / "back.safetensors")
    return out


@pytest.mark.parametrize(("guidance", "prefix"), FLUX_CASES, ids=FLUX_IDS)
def test_flux_folder_loads_with_from_pretrained_and_round_trips(flux_converted, tmp_path, guidance, prefix):
    from diffusers import FluxTransformer2DModel

    orig, config, folder, back = flux_converted[(guidance, prefix)]
    model, info = FluxTransformer2DModel.from_pretrained(str(folder), local_files_only=True, low_cpu_mem_usage=False,
                                                         output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == [] and info["mismatched_keys"] == []
    ours = file_tensors(folder / WEIGHTS)
    assert {k: tensor_key(v) for k, v in model.state_dict().items()} == ours
    assert file_tensors(back) == file_tensors(orig)
    assert (folder / SIDECAR).is_file() == (prefix != "")
    convert_layout(back, tmp_path / "again", to="diffusers", config_dir=config)
    assert file_tensors(tmp_path / "again" / WEIGHTS) == ours


def _narrow_flux(guidance: bool) -> dict:
    """Flux at the released widths along dim 0 (3072, q/k/v + 4 x 3072 MLP in ``linear1``), one
    double and one single block, inputs narrowed: what diffusers' Flux converter (which hard-codes
    the width) can split, small enough to hold in memory."""
    from assetkit.factory.layouts import replace_shape

    layout = K.flux(guidance=guidance, depth=1, depth_single=1, context_in=8, vec_in=8, dtype="BF16")
    for name, decl in list(layout.items()):
        if len(decl.shape) == 2 and decl.shape[1] > 256 and not name.startswith("final_layer."):
            layout = replace_shape(layout, name, (decl.shape[0], 2))
    return layout


@pytest.mark.parametrize("guidance", [True, False], ids=["dev", "schnell"])
def test_flux_folder_equals_diffusers_flux_converter(tmp_path, guidance):
    import torch
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers
    from safetensors.torch import load_file, save_file

    from assetkit.factory.writers import to_torch

    layout = _narrow_flux(guidance)
    orig = tmp_path / "flux.safetensors"
    save_file(to_torch(layout, materialize(layout, shrink=False, seed=5)), str(orig))
    config = {"num_layers": 1, "num_single_layers": 1, "joint_attention_dim": 8, "pooled_projection_dim": 8,
              "guidance_embeds": guidance}
    save_flux_config(config, tmp_path / "config")
    convert_layout(orig, tmp_path / "ours", to="diffusers", config_dir=tmp_path / "config")
    theirs = convert_flux_transformer_checkpoint_to_diffusers(load_file(str(orig)))
    assert file_tensors(tmp_path / "ours" / WEIGHTS) == {k: tensor_key(v) for k, v in theirs.items()}
    assert theirs["single_transformer_blocks.0.proj_mlp.weight"].shape == torch.Size([4 * 3072, 2])
    convert_layout(tmp_path / "ours", tmp_path / "back.safetensors", to="single-file")
    assert file_tensors(tmp_path / "back.safetensors") == file_tensors(orig)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(depth=st.integers(0, 3), single=st.integers(0, 3), heads=st.integers(1, 4), head=st.sampled_from([4, 8]),
       guidance=st.booleans(), dtype=st.sampled_from(["F32", "F16", "BF16"]))
def test_flux_rules_map_inverse_is_identity(depth, single, heads, head, guidance, dtype):
    layout = K.flux(guidance=guidance, depth=depth, depth_single=single, hidden=heads * head, heads=heads,
                    in_channels=4, context_in=8, vec_in=8, dtype=dtype)
    config = {"num_layers": depth, "num_single_layers": single, "num_attention_heads": heads,
              "attention_head_dim": head, "guidance_embeds": guidance}
    assert_map_inverse_identity(flux_transformer_rules(config),
                                {n: (d.dtype, tuple(d.shape)) for n, d in layout.items()})


# ---- full size: headers only -----------------------------------------------------------------
FULL = {
    "sd3-medium": lambda: K.mmdit(**K.MMDIT_CONFIGS["sd3-medium"]),
    "sd3.5-medium": lambda: K.mmdit(**K.MMDIT_CONFIGS["sd3.5-medium"], prefix=""),
    "sd3.5-large": lambda: K.mmdit(**K.MMDIT_CONFIGS["sd3.5-large"]),
    "flux-dev": lambda: K.flux(),
    "flux-schnell": lambda: K.flux(guidance=False, prefix="model.diffusion_model."),
    "flux-depth": lambda: _with_out_channels(K.flux(in_channels=128)),
    "flux-fill": lambda: _with_out_channels(K.flux(in_channels=384)),
}


def _with_out_channels(layout: dict) -> dict:
    """FLUX.1 Fill/Depth: wider input, the usual 64 output channels."""
    from assetkit.factory.layouts import replace_shape

    layout = replace_shape(layout, "final_layer.linear.weight", (64, 3072))
    return replace_shape(layout, "final_layer.linear.bias", (64,))


@pytest.mark.parametrize("config_id", list(FULL))
def test_full_size_plan_picks_the_catalogue_config_and_equals_diffusers(tmp_path, config_id):
    """A zero-filled sparse file of the released layout: the probe's model picks the catalogue
    config (no --config), and the plan's names and shapes equal both diffusers' own converter run
    on meta tensors and the state dict of the model that config builds."""
    import torch
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel
    from diffusers.loaders import single_file_utils as sfu

    from assetkit.convert import plan_single_file_to_diffusers
    from assetkit.factory import write_sparse_safetensors
    from assetkit.formats import open_asset

    path = write_sparse_safetensors(FULL[config_id](), tmp_path / f"{config_id}.safetensors")
    with open_asset(path) as asset:
        plan = plan_single_file_to_diffusers(asset)
        ckpt = {n: torch.empty(i.shape, dtype=torch.bfloat16, device="meta") for n, i in asset.tensors.items()}
    assert plan.config_id == config_id and plan.extras == () and list(plan.components) == ["transformer"]
    comp = plan.components["transformer"]
    sd3 = config_id.startswith("sd3")
    convert = sfu.convert_sd3_transformer_checkpoint_to_diffusers if sd3 else \
        sfu.convert_flux_transformer_checkpoint_to_diffusers
    ours = {t.name: t.shape for t in comp.tensors}
    assert ours == {k: tuple(v.shape) for k, v in convert(ckpt).items()}
    with torch.device("meta"):
        model = (SD3Transformer2DModel if sd3 else FluxTransformer2DModel).from_config(comp.config)
    assert ours == {k: tuple(v.shape) for k, v in model.state_dict().items()}


# ---- the command line, loose files, catalogue ------------------------------------------------
def test_cli_both_ways_json_and_one_line_errors(tmp_path):
    """``--to diffusers`` / ``--to single-file`` with ``--json``; a tiny transformer without
    --config (no released config fits) and a full SD3 checkpoint (VAE bundled) are one-line
    errors with exit 2 and nothing written."""
    from assetkit.factory import write_sparse_safetensors

    cli = [sys.executable, "-m", "assetkit", "convert"]
    orig = write_sd3("sd35m", "model.diffusion_model.", tmp_path / "sd3.safetensors", seed=3)
    config = save_sd3_config("sd35m", tmp_path / "config")
    r = subprocess.run([*cli, str(orig), str(tmp_path / "d"), "--to", "diffusers", "--config", str(config), "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["family"] == "sd3" and doc["components"] == {"transformer": len(file_tensors(tmp_path / "d" / WEIGHTS))}
    assert json.loads((tmp_path / "d" / "config.json").read_text())["_class_name"] == "SD3Transformer2DModel"
    r = subprocess.run([*cli, str(tmp_path / "d"), str(tmp_path / "b.safetensors"), "--to", "single-file", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["layout"] == "sd3-transformer"
    assert file_tensors(tmp_path / "b.safetensors") == file_tensors(orig)
    full = write_sparse_safetensors(K.sd3_checkpoint("sd3.5-large"), tmp_path / "sd3.5_large.safetensors")
    for src, says in ((orig, "no catalogue config for this sd3 transformer"), (full, "full sd3 checkpoint")):
        r = subprocess.run([*cli, str(src), str(tmp_path / "out"), "--to", "diffusers"], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (tmp_path / "out").exists()


def test_loose_diffusers_named_flux_file_goes_to_original_names(tmp_path):
    """A lone ``diffusion_pytorch_model.safetensors`` of a Flux transformer -> original names,
    which our own --to diffusers brings back to the same tensors."""
    import shutil

    import torch
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(6)
    FluxTransformer2DModel.from_config(flux_config(True)).save_pretrained(str(tmp_path / "theirs"))
    loose = tmp_path / "flux-diffusers.safetensors"
    shutil.copy(tmp_path / "theirs" / WEIGHTS, loose)
    summary = convert_layout(loose, tmp_path / "flux.safetensors", to="single-file", config_dir=tmp_path / "theirs")
    assert summary["extras"] == [] and summary["layout"] == "flux-transformer"
    single = file_tensors(tmp_path / "flux.safetensors")
    assert "single_blocks.1.linear1.weight" in single and "guidance_in.in_layer.weight" in single
    assert single.keys() == K.flux(guidance=True, **FLUX_TINY).keys()
    convert_layout(tmp_path / "flux.safetensors", tmp_path / "again", to="diffusers", config_dir=tmp_path / "theirs")
    assert file_tensors(tmp_path / "again" / WEIGHTS) == file_tensors(loose)


def test_catalogue_transformer_modelspec_reads_back_as_its_model():
    """The ModelSpec architecture written for each catalogue transformer config is one the probe's
    metadata table (registry/metadata.json) maps back to the same family and model."""
    from assetkit import catalogue
    from assetkit.convert import transformer_layouts
    from assetkit.convert.layout_convert import catalogue_configs

    known = {arch: (family, extra) for arch, family, extra in catalogue.load("metadata.json")["modelspec"]["architectures"]}
    rows = [r for r in catalogue.load("layouts.json")["configs"] if r["kind"] == "transformer"]
    assert {r["id"] for r in rows} >= {"sd3-medium", "sd3.5-medium", "sd3.5-large", "flux-dev", "flux-schnell"}
    import torch
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    for row in rows:
        layout = transformer_layouts.LAYOUTS[row["family"]]
        config = catalogue_configs(row["id"])["transformer/config.json"]
        with torch.device("meta"):  # the config as diffusers saves it: every default spelled out
            saved = dict((SD3Transformer2DModel if row["family"] == "sd3" else FluxTransformer2DModel)
                         .from_config(config).config)
        for cfg in (config, saved):
            meta = transformer_layouts.modelspec(layout, cfg, "x.safetensors", "0" * 64)
            assert known[meta["modelspec.architecture"]] == (row["family"], {"model": row["model"]}), row["id"]


def test_engine_refuses_what_does_not_fit():
    """Unequal splits must cover dim 0 exactly, swaps need an even dim 0, sizes belong to splits,
    and a name claimed twice (here by a swap and a rename) is reported before anything maps."""
    from assetkit.convert.keymap import KeyMapError, Rule, rename, split

    fused = split("linear1.weight", ["q", "k", "v", "mlp"], (2, 2, 2, 8))
    with pytest.raises(KeyMapError, match=r"parts of \[2, 2, 2, 8\] rows"):
        map_names([fused], {"linear1.weight": ("F32", (15, 3))}, "to_diffusers")
    parts = map_names([fused], {"linear1.weight": ("BF16", (14, 3))}, "to_diffusers").targets
    assert [(t.shape, t.parts[0].start, t.parts[0].stop) for t in parts] == [
        ((2, 3), 0, 12), ((2, 3), 12, 24), ((2, 3), 24, 36), ((8, 3), 36, 84)]
    with pytest.raises(KeyMapError, match="different shapes"):
        map_names([fused], {"q": ("F32", (2, 3)), "k": ("F32", (2, 3)), "v": ("F32", (8, 3)), "mlp": ("F32", (2, 3))},
                  "to_original")
    swap = Rule(("mod.weight",), ("norm.weight",), "swap")
    with pytest.raises(KeyMapError, match="swap the halves"):
        map_names([swap], {"mod.weight": ("F32", (3, 2))}, "to_diffusers")
    with pytest.raises(ValueError, match="sizes belong to a split"):
        Rule(("a",), ("b",), "rename", (1,))
    assert check_rules([swap, rename("mod.weight", "other.weight")]) == ["original name mod.weight maps to 2 places"]


def test_sd3_pipeline_folder_is_refused_in_one_line(sd3_converted, tmp_path):
    """A diffusers SD3/Flux pipeline folder (model_index.json with a transformer and two text
    encoders) has no single-file layout yet: one line, exit 2, nothing written (it is not SDXL)."""
    import shutil

    _, _, folder, _ = sd3_converted[("sd3", "")]
    pipe = tmp_path / "pipe"
    shutil.copytree(folder, pipe / "transformer")
    index = {"_class_name": "StableDiffusion3Pipeline", "_diffusers_version": "0.42.1",
             "transformer": ["diffusers", "SD3Transformer2DModel"], "text_encoder": [None, None],
             "text_encoder_2": [None, None]}
    (pipe / "model_index.json").write_text(json.dumps(index))
    r = subprocess.run([sys.executable, "-m", "assetkit", "convert", str(pipe), str(tmp_path / "out.safetensors"),
                        "--to", "single-file"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "cannot tell which original layout" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "out.safetensors").exists()
