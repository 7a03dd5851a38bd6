"""Full-size layouts (../shared/layouts): the catalogue configs, our plans and diffusers' own
single-file converters agree on every name and shape; byte coverage is exact; one family
(the SD VAE) with random data is compared byte for byte with diffusers' ``from_single_file``."""

from __future__ import annotations

from pathlib import Path

import pytest

from assetkit.convert import SIDECAR, plan_diffusers_to_single_file, plan_single_file_to_diffusers
from assetkit.convert.layout_convert import catalogue_configs
from assetkit.factory import load_shared_layout, write_sparse_safetensors
from assetkit.formats import Asset, TensorInfo, open_asset

CASES = {"sd15": ("sd1", "sd1"), "sd21_768v": ("sd2", "sd2-v"), "sdxl_base": ("sdxl", "sdxl")}


@pytest.fixture(scope="module")
def sparse(tmp_path_factory, layouts_dir):
    root = tmp_path_factory.mktemp("full")
    return {name: write_sparse_safetensors(load_shared_layout(name, layouts_dir), root / f"{name}.safetensors")
            for name in (*CASES, "vae_sd")}


def _assert_covered_once(asset: Asset, plan) -> None:
    """Contract: every byte of every source tensor is covered exactly once, or it is an extra."""
    covered: dict[str, list[tuple[int, int]]] = {}
    for comp in plan.components.values():
        for t in comp.tensors:
            for p in t.parts:
                covered.setdefault(p.source, []).append((p.start, p.stop))
    for name, info in asset.tensors.items():
        if name in plan.extras:
            assert name not in covered
            continue
        spans = sorted(covered[name])
        assert spans[0][0] == 0 and spans[-1][1] == info.nbytes
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False)), name


def _meta_model(library_class: str, config: dict):
    import diffusers
    import torch
    import transformers

    with torch.device("meta"):
        if library_class in ("CLIPTextModel", "CLIPTextModelWithProjection"):
            return getattr(transformers, library_class)(transformers.CLIPTextConfig(**config))
        if library_class == "DPTForDepthEstimation":
            return transformers.DPTForDepthEstimation(transformers.DPTConfig(**config))
        cls = getattr(diffusers, library_class)
        return cls.from_config(config)


@pytest.mark.parametrize("layout", list(CASES))
def test_plan_matches_catalogue_models_and_covers_every_byte(sparse, layout):
    family, config_id = CASES[layout]
    with open_asset(sparse[layout]) as asset:
        plan = plan_single_file_to_diffusers(asset)
        assert (plan.family, plan.config_id) == (family, config_id)
        _assert_covered_once(asset, plan)
        for name, comp in plan.components.items():
            if not comp.tensors:
                continue
            cls = comp.config.get("_class_name") or comp.config["architectures"][0]
            model = _meta_model(cls, comp.config)
            want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
            assert {t.name: t.shape for t in comp.tensors} == want, name
    if layout == "sd21_768v":
        extras = set(plan.extras)
        assert "cond_stage_model.model.text_projection" in extras and "cond_stage_model.model.logit_scale" in extras
        assert "cond_stage_model.model.transformer.resblocks.23.attn.in_proj_weight" in extras
        assert "alphas_cumprod" in extras


def _diffusers_converted(layout: str, asset: Asset, configs: dict) -> dict[str, dict[str, tuple]]:
    """diffusers' own single-file converters run on meta tensors with the real names and shapes."""
    import torch
    from diffusers.loaders import single_file_utils as sfu

    ckpt = {n: torch.empty(i.shape, dtype=torch.float16, device="meta") for n, i in asset.tensors.items()}
    out = {"unet": sfu.convert_ldm_unet_checkpoint(ckpt, configs["unet/config.json"]),
           "vae": sfu.convert_ldm_vae_checkpoint(ckpt, configs["vae/config.json"])}
    te_prefixes = {"sd15": {"text_encoder": None}, "sd21_768v": {"text_encoder": "cond_stage_model.model."},
                   "sdxl_base": {"text_encoder": None, "text_encoder_2": "conditioner.embedders.1.model."}}[layout]
    for comp, open_prefix in te_prefixes.items():
        if open_prefix is None:
            sub = {k: v for k, v in ckpt.items() if not k.startswith("conditioner.embedders.1")}
            converted = sfu.convert_ldm_clip_checkpoint(sub)
        else:
            model = _meta_model(configs[f"{comp}/config.json"]["architectures"][0], configs[f"{comp}/config.json"])
            converted = sfu.convert_open_clip_checkpoint(model, ckpt, prefix=open_prefix)
            want = set(model.state_dict())
            converted = {k: v for k, v in converted.items() if k in want or k.removeprefix("text_model.") in want}
        out[comp] = converted
    return {c: {k.removeprefix("text_model."): tuple(v.shape) for k, v in d.items()} for c, d in out.items()}


@pytest.mark.slow
@pytest.mark.parametrize("layout", list(CASES))
def test_names_and_shapes_equal_diffusers_single_file_converters(sparse, layout):
    _, config_id = CASES[layout]
    configs = catalogue_configs(config_id)
    with open_asset(sparse[layout]) as asset:
        plan = plan_single_file_to_diffusers(asset)
        theirs = _diffusers_converted(layout, asset, configs)
    for comp, mapping in theirs.items():
        ours = {t.name.removeprefix("text_model."): t.shape for t in plan.components[comp].tensors}
        mapping = {k: v for k, v in mapping.items() if not k.endswith("position_ids")}
        assert ours == mapping, comp


@pytest.mark.parametrize("layout", list(CASES))
def test_full_size_round_trip_names_shapes_dtypes(sparse, layout):
    """original -> diffusers -> original on the plans (no data written): the same names, shapes and
    dtypes; what diffusers has no place for is exactly the sidecar's content."""
    with open_asset(sparse[layout]) as asset:
        plan = plan_single_file_to_diffusers(asset)
        folder = Asset(path=Path("/nonexistent-folder"), format="diffusers",
                       configs={"model_index.json": plan.model_index})
        for name, comp in plan.components.items():
            sub = Asset(path=Path(name), format="diffusers-component")
            if comp.config is not None:
                folder.configs[f"{name}/config.json"] = comp.config
            for t in comp.tensors:
                info = TensorInfo(t.name, t.dtype, t.shape, Path(name), 0)
                sub.tensors[t.name] = info
                folder.tensors[f"{name}/{t.name}"] = info
            folder.components[name] = sub
        back = plan_diffusers_to_single_file(folder)
        got = {t.name: (t.dtype, t.shape) for t in back.tensors}
        want = {n: (i.dtype, i.shape) for n, i in asset.tensors.items() if n not in plan.extras}
        assert got == want
        assert SIDECAR not in got


@pytest.mark.slow
def test_full_size_vae_random_bytes_equal_diffusers_from_single_file(tmp_path, layouts_dir):
    import numpy as np
    from _layouts_helpers import tensor_key
    from diffusers import AutoencoderKL
    from safetensors.numpy import save_file

    from assetkit.convert.layout_convert import convert_layout

    layout = load_shared_layout("vae_sd", layouts_dir)
    rng = np.random.default_rng(0)
    src = tmp_path / "vae.safetensors"
    save_file({n: rng.standard_normal(d.shape, dtype=np.float32).astype(np.float16) for n, d in layout.items()}, str(src))
    convert_layout(src, tmp_path / "ours", to="diffusers")
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "config.json").write_bytes((tmp_path / "ours" / "config.json").read_bytes())
    model = AutoencoderKL.from_single_file(str(src), config=str(config_dir), local_files_only=True,
                                           torch_dtype=__import__("torch").float16)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "ours" / "diffusion_pytorch_model.safetensors"), "pt") as fh:
        mine = {k: tensor_key(fh.get_tensor(k)) for k in fh.keys()}  # noqa: SIM118
    theirs = {k: tensor_key(v) for k, v in model.state_dict().items()}
    assert mine.keys() == theirs.keys()
    assert [k for k in mine if mine[k] != theirs[k]] == []


FACTORY = {"sd15_inpaint": "sd1-inpaint", "sd15_instruct_pix2pix": "sd1-instruct-pix2pix", "sd2_inpaint": "sd2-inpaint", "sd2_depth": "sd2-depth", "sdxl_inpaint": "sdxl-inpaint",
           "sdxl_refiner": "sdxl-refiner", "unet_sd15": "sd1", "unet_sdxl": "sdxl",
           "vae_sd": "vae-sd", "controlnet_sd15": "controlnet-sd1", "controlnet_sd15_unprefixed": "controlnet-sd1",
           "controlnet_sd21": "controlnet-sd2", "controlnet_sdxl": "controlnet-sdxl",
           "controlnet_sdxl_unprefixed": "controlnet-sdxl", "te_openclip_h": "sd2-v", "te_openclip_bigg": "sdxl"}


@pytest.mark.parametrize("fixture_id", list(FACTORY))
def test_more_families_and_standalone_components(fixture_id, tmp_path):
    """Full-size factory layouts: the right catalogue configs, names and shapes equal to the models
    diffusers builds from them, every byte covered once; standalone files give one component."""
    from assetkit.factory import make_fixture

    path = make_fixture(fixture_id, tmp_path, full=True)
    with open_asset(path) as asset:
        plan = plan_single_file_to_diffusers(asset)
        assert plan.config_id == FACTORY[fixture_id]
        _assert_covered_once(asset, plan)
        weighted = {n: c for n, c in plan.components.items() if c.tensors}
        if fixture_id.startswith(("unet_", "vae_", "controlnet_", "te_")):
            assert list(plan.components) == list(weighted) and len(weighted) == 1 and plan.model_index == {}
        for name, comp in weighted.items():
            cls = comp.config.get("_class_name") or comp.config["architectures"][0]
            want = {k: tuple(v.shape) for k, v in _meta_model(cls, comp.config).state_dict().items()}
            assert {t.name: t.shape for t in comp.tensors} == want, name


def test_catalogue_configs_build_in_diffusers():
    """Every catalogue config folder: model_index components have configs (or are tokenizers/None),
    schedulers build in diffusers with the prediction type registry/layouts.json states."""
    import diffusers

    from assetkit import catalogue

    for row in catalogue.load("layouts.json")["configs"]:
        configs = catalogue_configs(row["id"])
        index = configs.get("model_index.json")
        if index is None:
            assert len(configs) == 1, row["id"]
            continue
        assert getattr(diffusers, index["_class_name"]), row["id"]
        for name, entry in index.items():
            if name.startswith("_") or not isinstance(entry, list) or entry[0] is None:
                continue
            if name.startswith("tokenizer"):
                assert catalogue.family_tokenizer_files("sdxl" if row["family"] == "sdxl-refiner" else row["family"], name)
            elif name == "feature_extractor":
                assert f"{name}/preprocessor_config.json" in configs, row["id"]
            elif name == "scheduler":
                cfg = configs["scheduler/scheduler_config.json"]
                sched = getattr(diffusers, cfg["_class_name"]).from_config(cfg)
                assert sched.config.prediction_type == row["prediction_type"], row["id"]
            else:
                assert f"{name}/config.json" in configs, (row["id"], name)
