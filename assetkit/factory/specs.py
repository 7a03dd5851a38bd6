"""The fixture catalogue: one :class:`FixtureSpec` per kind of real-world checkpoint.

Each spec says how to build the layout (real names, full-size shapes, real dtypes), which
containers the file genuinely comes in, what to embed (safetensors metadata, the ``.ckpt``
wrapper) and the verdict a user would state about the file - :class:`Expected` ``(kind, family,
variant, prediction_type, layout)``. ``family`` is None where the file genuinely cannot tell (a
bare SD VAE fits SD1, SD2 and SDXL alike; ``family_candidates`` then lists the possibilities);
``prediction_type`` is None unless what is written (ModelSpec metadata, a ``global_step`` known
to identify a release) says it.

Vocabulary of ``layout`` (key naming): ``original`` (the reference implementation: ldm/sgm,
lllyasviel, BFL, MMDiT, TencentARC, IP-Adapter), ``diffusers``, ``transformers`` (HF text
encoders), ``open_clip``, ``kohya`` (LoRA; also the SDXL ``clip_l``/``clip_g`` embedding pair),
``peft``, ``diffusers-attn-procs`` (old attention-processor LoRA), ``lycoris``
(``details["algo"]`` says locon/loha/lokr), ``a1111`` (textual inversion).

``make_fixture(id, dest_dir, container)`` writes one file (or folder) and returns its path.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import keys as K
from .layouts import (
    Layout,
    load_shared_layout,
    replace_shape,
    select,
    strip_prefix,
    with_dtype,
)
from .writers import (
    materialize,
    to_torch,
    write_safetensors,
    write_sparse_safetensors,
    write_torch,
    write_torch_checkpoint,
)

CONTAINERS = ("safetensors", "torch-zip", "torch-legacy", "diffusers")
ALL_FILES = ("safetensors", "torch-zip", "torch-legacy")
UNET = "model.diffusion_model."


@dataclass(frozen=True)
class Expected:
    """What a user would say the file is (the probe's target answer)."""

    kind: str
    family: str | None
    variant: str | None = None
    prediction_type: str | None = None
    layout: str | None = "original"
    #: where ``family`` is None: the families the file fits
    family_candidates: tuple[str, ...] = ()
    #: further facts a probe may report (rank, alpha, in_channels, text encoder, algo...)
    details: Mapping[str, Any] = field(default_factory=dict)

    def verdict(self) -> tuple[str, str | None, str | None, str | None, str | None]:
        return (self.kind, self.family, self.variant, self.prediction_type, self.layout)


@dataclass(frozen=True)
class FixtureSpec:
    id: str
    description: str
    #: builds the full-size layout; gets the shared layouts directory (None = default)
    build: Callable[[Path | None], Layout]
    expected: Expected
    #: containers the real file comes in; the first is the default
    containers: tuple[str, ...] = ALL_FILES
    #: safetensors ``__metadata__``
    metadata: Mapping[str, str] = field(default_factory=dict)
    #: wraps the flat state_dict for torch containers (``.ckpt`` wrapper, nested dicts...)
    torch_wrap: Callable[[dict[str, Any]], Any] | None = None
    torch_suffix: str = ".ckpt"
    #: building the layout imports torch/diffusers (meta-device models)
    needs_torch: bool = False
    #: value of LoRA ``alpha`` scalars
    alpha: float = 1.0
    #: the shared layout file this fixture is exactly (for full-size sparse files)
    shared_layout: str | None = None

    def layout(self, layouts_dir: Path | None = None, dtype: str | None = None) -> Layout:
        layout = self.build(layouts_dir)
        return with_dtype(layout, dtype) if dtype else layout

    def filename(self, container: str) -> str:
        if container == "safetensors":
            return f"{self.id}.safetensors"
        if container == "diffusers":
            return self.id
        return f"{self.id}{self.torch_suffix}"


# --- torch payload wrappers ------------------------------------------------------------------------


def ckpt_wrapper(global_step: int | None = None, **extra: Any) -> Callable[[dict[str, Any]], Any]:
    """``{"state_dict": sd, "global_step": N, ...}`` as Lightning-era ``.ckpt`` files hold it."""

    def wrap(state_dict: dict[str, Any]) -> Any:
        payload: dict[str, Any] = {"state_dict": state_dict}
        if global_step is not None:
            payload["global_step"] = global_step
        payload.update(extra)
        return payload

    return wrap


#: The class a PyTorch Lightning ``.ckpt`` pickles as a dict key in ``callbacks``.
LIGHTNING_CALLBACK = "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"


def _lightning_wrap(state_dict: dict[str, Any]) -> Any:
    """SD 1.x training-era ``.ckpt`` bookkeeping; :func:`_save_with_lightning` adds ``callbacks``."""
    return {"state_dict": state_dict, "global_step": 470000, "epoch": 6, "pytorch-lightning_version": "1.4.2"}


def _save_with_lightning(payload: Any, path: Path, legacy: bool) -> None:
    """Pickle ``payload`` plus a ``callbacks`` dict keyed by a stand-in of Lightning's
    ModelCheckpoint class, registered under Lightning's module path only while pickling, so the
    file names a global that assetkit must report without importing it."""
    module_name, class_name = LIGHTNING_CALLBACK.rsplit(".", 1)
    created: list[str] = []
    parts = module_name.split(".")
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        if name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
            created.append(name)
    try:
        stand_in = type(class_name, (), {"__module__": module_name})
        setattr(sys.modules[module_name], class_name, stand_in)
        payload = dict(payload)
        payload["callbacks"] = {stand_in: {"monitor": None, "best_model_score": None, "save_top_k": -1}}
        write_torch(payload, path, legacy=legacy)
    finally:
        for name in reversed(created):
            del sys.modules[name]


def _nest(groups: tuple[str, ...]) -> Callable[[dict[str, Any]], Any]:
    """Flat ``group.rest`` names -> ``{group: {rest: tensor}}`` (IP-Adapter ``.bin``)."""

    def wrap(state_dict: dict[str, Any]) -> Any:
        nested: dict[str, dict[str, Any]] = {g: {} for g in groups}
        for name, tensor in state_dict.items():
            group, rest = name.split(".", 1)
            nested[group][rest] = tensor
        return nested

    return wrap


def _a1111_embedding(state_dict: dict[str, Any]) -> Any:
    """A1111 ``.pt`` embedding dict (``string_to_param`` holds the vectors)."""
    return {"string_to_token": {"*": 265}, "string_to_param": {"*": state_dict["string_to_param.*"]},
            "name": "tiny-embedding", "step": 1000, "sd_checkpoint": "cc6cb27103",
            "sd_checkpoint_name": "v1-5-pruned-emaonly"}


# --- builders ---------------------------------------------------------------------------------------


def _shared(name: str, **kw: Any) -> Callable[[Path | None], Layout]:
    return lambda d: load_shared_layout(name, d, **kw)


def _variant_of(name: str, in_channels: int, extra: Callable[[], Layout] | None = None) -> Callable[[Path | None], Layout]:
    def build(d: Path | None) -> Layout:
        layout = load_shared_layout(name, d)
        key = f"{UNET}input_blocks.0.0.weight"
        out_c, _, k, _ = layout[key].shape
        layout = replace_shape(layout, key, (out_c, in_channels, k, k))
        if extra is not None:
            layout.update(extra())
        return layout

    return build


def _sd2_depth(d: Path | None) -> Layout:
    return _variant_of("sd21_768v", 5, lambda: K.midas_dpt_hybrid())(d)


def _sdxl_refiner(_d: Path | None) -> Layout:
    return K.sdxl_refiner_checkpoint()


def _flux_checkpoint(_d: Path | None) -> Layout:
    layout = K.flux(prefix=UNET, dtype="BF16")
    layout.update(K.ldm_vae(z_channels=16, quant_conv=False, dtype="BF16", prefix="vae."))
    layout.update(K.hf_clip_text(position_ids=False, dtype="BF16", prefix="text_encoders.clip_l.transformer."))
    layout.update(K.t5_encoder(dtype="BF16", prefix="text_encoders.t5xxl.transformer."))
    return layout


def _sdxl_kohya_lora(_d: Path | None) -> Layout:
    modules = K.kohya_text_encoder_modules("lora_te1", 768, 3072, 12)
    modules.update(K.kohya_text_encoder_modules("lora_te2", 1280, 5120, 32))
    modules.update(K.kohya_unet_modules_from_ldm(K.ldm_unet(**K.UNET_CONFIGS["sdxl"])))
    return K.lora_kohya(modules, rank=4)


def _sd15_linear_modules(layouts_dir: Path | None) -> dict[str, tuple[int, int]]:
    """kohya names of the SD1.5 LoRA targets that are Linear layers -> (out, in)."""
    layout = load_shared_layout("lora_sd15_kohya", layouts_dir)
    modules: dict[str, tuple[int, int]] = {}
    for name, decl in layout.items():
        if name.endswith(".lora_down.weight") and len(decl.shape) == 2:
            module = name.removesuffix(".lora_down.weight")
            modules[module] = (layout[f"{module}.lora_up.weight"].shape[0], decl.shape[1])
    return modules


def _locon(d: Path | None) -> Layout:
    from .diffusers_keys import unet_resnet_convs

    layout = load_shared_layout("lora_sd15_kohya", d)
    convs = {"lora_unet_" + name.replace(".", "_"): ((in_c, k, k), (out_c, 1, 1))
             for name, (out_c, in_c, k) in unet_resnet_convs("sd1").items()}
    layout.update(K.lora_kohya(convs, rank=4))
    return layout


def _peft_sd15(_d: Path | None) -> Layout:
    from .diffusers_keys import unet_attention_projections

    modules = {f"unet.{n}": shape for n, shape in unet_attention_projections("sd1").items()}
    for i in range(12):
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            modules[f"text_encoder.text_model.encoder.layers.{i}.self_attn.{proj}"] = (768, 768)
    return K.lora_peft(modules, rank=4, dtype="F16")


def _peft_flux(_d: Path | None) -> Layout:
    from .diffusers_keys import flux_attention_projections

    modules = {f"transformer.{n}": shape for n, shape in flux_attention_projections().items()}
    return K.lora_peft(modules, rank=4, dtype="BF16")


def _attn_procs_sd15(_d: Path | None) -> Layout:
    from .diffusers_keys import unet_attention_processors

    return K.lora_diffusers_attn_procs({p: (h, c) for p, h, c in unet_attention_processors("sd1")}, rank=4)


def _ip_adapter(family: str, image_embed: int, cross_dim: int) -> Callable[[Path | None], Layout]:
    def build(_d: Path | None) -> Layout:
        from .diffusers_keys import unet_attention_processors

        processors = unet_attention_processors(family)
        cross = [(i, hidden) for i, (path, hidden, _ctx) in enumerate(processors) if path.endswith("attn2")]
        return K.ip_adapter(cross, image_embed=image_embed, cross_dim=cross_dim)

    return build


def _diffusers(name: str, *args: Any, **kw: Any) -> Callable[[Path | None], Layout]:
    def build(_d: Path | None) -> Layout:
        from . import diffusers_keys

        return getattr(diffusers_keys, name)(*args, **kw)

    return build


def _no_layout(_d: Path | None) -> Layout:
    return {}


# --- metadata --------------------------------------------------------------------------------------

KOHYA_SD15_METADATA = {
    "ss_network_module": "networks.lora", "ss_network_dim": "4", "ss_network_alpha": "1.0",
    "ss_base_model_version": "sd_v1", "ss_v2": "False", "ss_sd_model_name": "v1-5-pruned-emaonly.safetensors",
    "ss_output_name": "tiny_lora", "ss_training_started_at": "1700000000.0", "ss_resolution": "(512, 512)",
    "ss_mixed_precision": "fp16", "ss_save_precision": "fp16",
}
KOHYA_SDXL_METADATA = {
    **KOHYA_SD15_METADATA, "ss_base_model_version": "sdxl_base_v1-0",
    "ss_sd_model_name": "sd_xl_base_1.0.safetensors", "ss_resolution": "(1024, 1024)",
    "modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
    "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
    "modelspec.title": "tiny_lora", "modelspec.resolution": "1024x1024",
}
MODELSPEC_SD21_768V = {
    "modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": "stable-diffusion-v2-768-v",
    "modelspec.implementation": "https://github.com/Stability-AI/stablediffusion",
    "modelspec.title": "Stable Diffusion 2.1 768 (tiny)", "modelspec.resolution": "768x768",
    "modelspec.prediction_type": "v",
}
MODELSPEC_SDXL_ON_SD15 = {
    "modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": "stable-diffusion-xl-v1-base",
    "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
    "modelspec.title": "mislabelled SD1.5 (tiny)",
}


def _lycoris_metadata(algo: str) -> dict[str, str]:
    return {**KOHYA_SD15_METADATA, "ss_network_module": "lycoris.kohya", "ss_network_alpha": "4.0",
            "ss_network_args": f'{{"algo": "{algo}", "conv_dim": "4", "conv_alpha": "4"}}'}


# --- the catalogue -----------------------------------------------------------------------------------

_ANY_SD_VAE = ("sd1", "sd2", "sdxl", "sdxl-refiner")


def _specs() -> list[FixtureSpec]:
    E = Expected
    specs = [
        # full checkpoints ------------------------------------------------------------------------
        FixtureSpec("sd15", "SD 1.5 v1-5-pruned-emaonly (UNet, VAE, CLIP-L, schedule buffers)", _shared("sd15"),
                    E("pipeline", "sd1"), torch_wrap=ckpt_wrapper(840000), shared_layout="sd15"),
        FixtureSpec("sd15_ckpt_lightning", "SD 1.x training-era .ckpt: Lightning callbacks pickle a "
                    "pytorch_lightning class (unknown global to report, never import)", _shared("sd15"),
                    E("pipeline", "sd1", details={"unknown_globals": [LIGHTNING_CALLBACK]}),
                    containers=("torch-zip", "torch-legacy"), torch_wrap=_lightning_wrap),
        FixtureSpec("sd15_modelspec_contradiction", "SD1.5 tensors with ModelSpec metadata claiming SDXL "
                    "(the tensors decide; the contradiction is reported)", _shared("sd15"),
                    E("pipeline", "sd1", details={"metadata_contradiction": True}),
                    containers=("safetensors",), metadata=MODELSPEC_SDXL_ON_SD15),
        FixtureSpec("sd15_inpaint", "sd-v1-5-inpainting: 9-channel conv_in", _variant_of("sd15", 9),
                    E("pipeline", "sd1", "inpaint", details={"in_channels": 9}), torch_wrap=ckpt_wrapper(440000)),
        FixtureSpec("sd15_instruct_pix2pix", "instruct-pix2pix-00-22000: 8-channel conv_in",
                    _variant_of("sd15", 8), E("pipeline", "sd1", "instruct-pix2pix", details={"in_channels": 8}),
                    torch_wrap=ckpt_wrapper(22000)),
        FixtureSpec("sd2_512", "SD 2.x 512 base (keys identical to 768-v; prediction unknowable)",
                    _shared("sd21_768v"), E("pipeline", "sd2"), torch_wrap=ckpt_wrapper()),
        FixtureSpec("sd2_512_ckpt_step875000", "512-base-ema.ckpt: global_step 875000 identifies the "
                    "epsilon SD 2.0 base", _shared("sd21_768v"),
                    E("pipeline", "sd2", prediction_type="epsilon", details={"global_step": 875000}),
                    containers=("torch-zip", "torch-legacy"), torch_wrap=ckpt_wrapper(875000)),
        FixtureSpec("sd21_768v", "SD 2.1 768-v without metadata (prediction unknowable)",
                    _shared("sd21_768v"), E("pipeline", "sd2"), torch_wrap=ckpt_wrapper(),
                    shared_layout="sd21_768v"),
        FixtureSpec("sd21_768v_ckpt_step110000", "v2-1_768-ema-pruned.ckpt: global_step 110000 identifies "
                    "the v-prediction 2.1 768", _shared("sd21_768v"),
                    E("pipeline", "sd2", prediction_type="v_prediction", details={"global_step": 110000}),
                    containers=("torch-zip", "torch-legacy"), torch_wrap=ckpt_wrapper(110000)),
        FixtureSpec("sd21_768v_modelspec", "SD 2.1 768-v with ModelSpec metadata (prediction_type v)",
                    _shared("sd21_768v"), E("pipeline", "sd2", prediction_type="v_prediction"),
                    containers=("safetensors",), metadata=MODELSPEC_SD21_768V),
        FixtureSpec("sd2_inpaint", "512-inpainting-ema: SD2 with 9-channel conv_in", _variant_of("sd21_768v", 9),
                    E("pipeline", "sd2", "inpaint", details={"in_channels": 9}), torch_wrap=ckpt_wrapper()),
        FixtureSpec("sd2_depth", "512-depth-ema: 5-channel conv_in and the MiDaS model as depth_model.*",
                    _sd2_depth, E("pipeline", "sd2", "depth", details={"in_channels": 5}),
                    torch_wrap=ckpt_wrapper()),
        FixtureSpec("sdxl_base", "sd_xl_base_1.0 (fp16; CLIP-L + OpenCLIP-bigG conditioners)",
                    _shared("sdxl_base"), E("pipeline", "sdxl"), containers=("safetensors", "torch-zip"),
                    torch_wrap=ckpt_wrapper(), shared_layout="sdxl_base"),
        FixtureSpec("sdxl_refiner", "sd_xl_refiner_1.0: 384-channel UNet, ADM 2560, bigG as embedders.0",
                    _sdxl_refiner, E("pipeline", "sdxl-refiner"), containers=("safetensors", "torch-zip"),
                    torch_wrap=ckpt_wrapper()),
        FixtureSpec("sdxl_inpaint", "SDXL inpainting single file: 9-channel conv_in", _variant_of("sdxl_base", 9),
                    E("pipeline", "sdxl", "inpaint", details={"in_channels": 9}), containers=("safetensors",)),
        FixtureSpec("sd3_medium", "sd3_medium.safetensors: MMDiT (24 joint blocks) + 16-channel VAE",
                    lambda d: K.sd3_checkpoint("sd3-medium"), E("pipeline", "sd3"), containers=("safetensors",)),
        FixtureSpec("sd3_medium_incl_clips_t5xxl", "sd3_medium_incl_clips_t5xxl: + text_encoders.clip_l/"
                    "clip_g/t5xxl", lambda d: K.sd3_checkpoint("sd3-medium", clips=True, t5=True),
                    E("pipeline", "sd3"), containers=("safetensors",)),
        FixtureSpec("sd35_large", "sd3.5_large.safetensors: 38 joint blocks with RMS qk-norm",
                    lambda d: K.sd3_checkpoint("sd3.5-large"), E("pipeline", "sd3"), containers=("safetensors",)),
        FixtureSpec("flux_dev_checkpoint", "ComfyUI-style Flux.1-dev checkpoint: model.diffusion_model.* + "
                    "vae.* + text_encoders.*", _flux_checkpoint,
                    E("pipeline", "flux", details={"guidance": True}), containers=("safetensors",)),
        # transformers / UNets alone ---------------------------------------------------------------
        FixtureSpec("flux_dev", "flux1-dev.safetensors (BFL): bare names, guidance_in",
                    lambda d: K.flux(guidance=True), E("transformer", "flux", details={"guidance": True}),
                    containers=("safetensors",)),
        FixtureSpec("flux_schnell", "flux1-schnell.safetensors (BFL): bare names, no guidance_in",
                    lambda d: K.flux(guidance=False), E("transformer", "flux", details={"guidance": False}),
                    containers=("safetensors",)),
        FixtureSpec("flux_dev_prefixed", "Flux.1-dev transformer under model.diffusion_model.",
                    lambda d: K.flux(guidance=True, prefix=UNET), E("transformer", "flux", details={"guidance": True}),
                    containers=("safetensors",)),
        FixtureSpec("flux_dev_diffusers", "FLUX.1-dev transformer/ in diffusers names",
                    _diffusers("diffusers_flux_transformer", guidance=True),
                    E("transformer", "flux", layout="diffusers", details={"guidance": True}),
                    containers=("safetensors",), needs_torch=True),
        FixtureSpec("flux_schnell_diffusers", "FLUX.1-schnell transformer/ in diffusers names",
                    _diffusers("diffusers_flux_transformer", guidance=False),
                    E("transformer", "flux", layout="diffusers", details={"guidance": False}),
                    containers=("safetensors",), needs_torch=True),
        FixtureSpec("sd3_transformer", "SD3 medium MMDiT alone, bare original names",
                    lambda d: K.mmdit(prefix="", **K.MMDIT_CONFIGS["sd3-medium"]), E("transformer", "sd3"),
                    containers=("safetensors",)),
        FixtureSpec("sd3_transformer_diffusers", "stable-diffusion-3-medium-diffusers transformer/",
                    _diffusers("diffusers_sd3_transformer", "sd3-medium"), E("transformer", "sd3", layout="diffusers"),
                    containers=("safetensors",), needs_torch=True),
        FixtureSpec("unet_sd15", "SD1.5 UNet alone, original names without prefix",
                    lambda d: strip_prefix(load_shared_layout("sd15", d), UNET), E("unet", "sd1"),
                    torch_suffix=".pt"),
        FixtureSpec("unet_sd15_prefixed", "SD1.5 UNet alone, original names with model.diffusion_model.",
                    lambda d: select(load_shared_layout("sd15", d), [UNET]), E("unet", "sd1"),
                    containers=("safetensors",)),
        FixtureSpec("unet_sd15_diffusers", "runwayml SD1.5 unet/diffusion_pytorch_model",
                    _diffusers("diffusers_unet", "sd1"), E("unet", "sd1", layout="diffusers"),
                    containers=("safetensors", "torch-zip"), torch_suffix=".bin", needs_torch=True),
        FixtureSpec("unet_sd21_diffusers", "SD2.1 unet/ in diffusers names (1024 context)",
                    _diffusers("diffusers_unet", "sd2"), E("unet", "sd2", layout="diffusers"),
                    containers=("safetensors",), needs_torch=True),
        FixtureSpec("unet_sdxl", "SDXL base UNet alone, original names without prefix",
                    lambda d: strip_prefix(load_shared_layout("sdxl_base", d), UNET), E("unet", "sdxl"),
                    containers=("safetensors",)),
        FixtureSpec("unet_sdxl_diffusers", "sdxl-base-1.0 unet/ in diffusers names",
                    _diffusers("diffusers_unet", "sdxl", dtype="F16"), E("unet", "sdxl", layout="diffusers"),
                    containers=("safetensors",), needs_torch=True),
        # VAEs -------------------------------------------------------------------------------------
        FixtureSpec("vae_sd", "vae-ft-mse-840000-ema-pruned: bare SD VAE (fits SD1, SD2 and SDXL)",
                    _shared("vae_sd"), E("vae", None, family_candidates=_ANY_SD_VAE), shared_layout="vae_sd"),
        FixtureSpec("vae_sd_ckpt_ema", "vae-ft-mse .ckpt with state_dict wrapper and model_ema scalars",
                    _shared("vae_sd", include_optional=True), E("vae", None, family_candidates=_ANY_SD_VAE),
                    containers=("torch-zip", "torch-legacy"), torch_wrap=ckpt_wrapper(840001)),
        FixtureSpec("vae_sd_diffusers", "sd-vae-ft-mse diffusers names",
                    _diffusers("diffusers_vae"), E("vae", None, layout="diffusers", family_candidates=_ANY_SD_VAE),
                    containers=("safetensors", "torch-zip"), torch_suffix=".bin", needs_torch=True),
        FixtureSpec("vae_16ch", "Flux ae.safetensors / SD3 VAE: 16 latent channels, no quant convs",
                    lambda d: K.ldm_vae(z_channels=16, quant_conv=False),
                    E("vae", None, family_candidates=("sd3", "flux"), details={"latent_channels": 16}),
                    containers=("safetensors",)),
        FixtureSpec("vae_16ch_diffusers", "SD3/Flux vae/ in diffusers names (16 channels)",
                    _diffusers("diffusers_vae", latent_channels=16, quant_conv=False),
                    E("vae", None, layout="diffusers", family_candidates=("sd3", "flux"),
                      details={"latent_channels": 16}), containers=("safetensors",), needs_torch=True),
        # text encoders ----------------------------------------------------------------------------
        FixtureSpec("te_clip_l", "CLIP ViT-L/14 text encoder (clip_l.safetensors, transformers names)",
                    lambda d: K.hf_clip_text(position_ids=False),
                    E("text_encoder", None, layout="transformers", family_candidates=("sd1", "sdxl", "sd3", "flux"),
                      details={"text_encoder": "clip-l"}), containers=("safetensors", "torch-zip"), torch_suffix=".bin"),
        FixtureSpec("te_openclip_h", "OpenCLIP ViT-H/14 text tower, open_clip names (SD2 conditioner)",
                    lambda d: strip_prefix(load_shared_layout("sd21_768v", d), "cond_stage_model.model."),
                    E("text_encoder", "sd2", layout="open_clip", details={"text_encoder": "openclip-h"}),
                    containers=("safetensors",)),
        FixtureSpec("te_openclip_h_transformers", "SD2 text_encoder/ (OpenCLIP-H as CLIPTextModel, 23 layers)",
                    lambda d: K.hf_clip_text(width=1024, layers=23, mlp=4096, position_ids=False),
                    E("text_encoder", "sd2", layout="transformers", details={"text_encoder": "openclip-h"}),
                    containers=("safetensors",)),
        FixtureSpec("te_openclip_bigg", "OpenCLIP ViT-bigG/14 text tower, open_clip names",
                    lambda d: strip_prefix(load_shared_layout("sdxl_base", d), "conditioner.embedders.1.model."),
                    E("text_encoder", None, layout="open_clip", family_candidates=("sdxl", "sdxl-refiner", "sd3"),
                      details={"text_encoder": "openclip-bigg"}), containers=("safetensors",)),
        FixtureSpec("te_openclip_bigg_transformers", "SDXL text_encoder_2/ / clip_g.safetensors "
                    "(CLIPTextModelWithProjection)",
                    lambda d: K.hf_clip_text(width=1280, layers=32, mlp=5120, projection=1280, position_ids=False,
                                             dtype="F16"),
                    E("text_encoder", None, layout="transformers", family_candidates=("sdxl", "sdxl-refiner", "sd3"),
                      details={"text_encoder": "openclip-bigg"}), containers=("safetensors",)),
        FixtureSpec("te_t5xxl", "T5 v1.1 XXL encoder (t5xxl_fp16.safetensors)", lambda d: K.t5_encoder(),
                    E("text_encoder", None, layout="transformers", family_candidates=("sd3", "flux"),
                      details={"text_encoder": "t5-xxl"}), containers=("safetensors",)),
        # LoRAs --------------------------------------------------------------------------------------
        FixtureSpec("lora_sd15_kohya", "kohya sd-scripts LoRA for SD1.5, rank 4, UNet + text encoder",
                    _shared("lora_sd15_kohya"), E("lora", "sd1", layout="kohya", details={"rank": 4, "alpha": 1.0}),
                    containers=("safetensors", "torch-zip"), torch_suffix=".pt", metadata=KOHYA_SD15_METADATA,
                    shared_layout="lora_sd15_kohya"),
        FixtureSpec("lora_sdxl_kohya", "kohya SDXL LoRA: lora_te1_/lora_te2_/lora_unet_ (ldm block names)",
                    _sdxl_kohya_lora, E("lora", "sdxl", layout="kohya", details={"rank": 4, "alpha": 1.0}),
                    containers=("safetensors",), metadata=KOHYA_SDXL_METADATA),
        FixtureSpec("lora_sd15_locon", "LyCORIS LoCon: kohya names plus 3x3 ResBlock convs",
                    _locon, E("lora", "sd1", layout="lycoris", details={"rank": 4, "alpha": 4.0, "algo": "locon"}),
                    containers=("safetensors",), metadata=_lycoris_metadata("locon"), needs_torch=True, alpha=4.0),
        FixtureSpec("lora_sd15_loha", "LyCORIS LoHa (hada_w1_a/b, hada_w2_a/b)",
                    lambda d: K.lora_loha(_sd15_linear_modules(d), rank=4),
                    E("lora", "sd1", layout="lycoris", details={"rank": 4, "alpha": 4.0, "algo": "loha"}),
                    containers=("safetensors",), metadata=_lycoris_metadata("loha"), alpha=4.0),
        FixtureSpec("lora_sd15_lokr", "LyCORIS LoKr (lokr_w1, lokr_w2)",
                    lambda d: K.lora_lokr(_sd15_linear_modules(d)),
                    E("lora", "sd1", layout="lycoris", details={"alpha": 4.0, "algo": "lokr"}),
                    containers=("safetensors",), metadata=_lycoris_metadata("lokr"), alpha=4.0),
        FixtureSpec("lora_sd15_peft", "diffusers/peft LoRA (pytorch_lora_weights.safetensors): lora_A/lora_B",
                    _peft_sd15, E("lora", "sd1", layout="peft", details={"rank": 4}),
                    containers=("safetensors",), needs_torch=True),
        FixtureSpec("lora_sd15_diffusers_old", "diffusers < 0.21 attention-processor LoRA (to_q_lora.down/up)",
                    _attn_procs_sd15, E("lora", "sd1", layout="diffusers-attn-procs", details={"rank": 4}),
                    containers=("torch-zip", "safetensors"), torch_suffix=".bin", needs_torch=True),
        FixtureSpec("lora_flux_peft", "Flux LoRA in diffusers/peft names (transformer.*.lora_A/B)",
                    _peft_flux, E("lora", "flux", layout="peft", details={"rank": 4}),
                    containers=("safetensors",), needs_torch=True),
        # ControlNets ----------------------------------------------------------------------------------
        FixtureSpec("controlnet_sd15", "control_v11p_sd15_canny.pth: control_model.* prefix",
                    _shared("controlnet_sd15"), E("controlnet", "sd1"), torch_suffix=".pth",
                    shared_layout="controlnet_sd15"),
        FixtureSpec("controlnet_sd15_unprefixed", "SD1.5 ControlNet without the control_model. prefix",
                    lambda d: strip_prefix(load_shared_layout("controlnet_sd15", d), "control_model."),
                    E("controlnet", "sd1"), containers=("safetensors", "torch-zip"), torch_suffix=".pth"),
        FixtureSpec("controlnet_sd21", "SD2.1 ControlNet (1024 context, linear proj_in)",
                    lambda d: K.ldm_controlnet(context_dim=1024, use_linear=True), E("controlnet", "sd2"),
                    containers=("safetensors",)),
        FixtureSpec("controlnet_sdxl", "SDXL ControlNet in the original (SGM) layout, control_model.* prefix",
                    lambda d: K.ldm_controlnet(**K.UNET_CONFIGS["sdxl"]), E("controlnet", "sdxl"),
                    containers=("safetensors",)),
        FixtureSpec("controlnet_sdxl_unprefixed", "SDXL ControlNet in the original layout, no prefix",
                    lambda d: K.ldm_controlnet(**K.UNET_CONFIGS["sdxl"], prefix=""), E("controlnet", "sdxl"),
                    containers=("safetensors",)),
        FixtureSpec("controlnet_sd15_diffusers", "lllyasviel/control_v11p_sd15_canny diffusers names",
                    _diffusers("diffusers_controlnet", "sd1"), E("controlnet", "sd1", layout="diffusers"),
                    containers=("safetensors", "torch-zip"), torch_suffix=".bin", needs_torch=True),
        FixtureSpec("controlnet_sdxl_diffusers", "diffusers/controlnet-canny-sdxl-1.0",
                    _diffusers("diffusers_controlnet", "sdxl", dtype="F16"), E("controlnet", "sdxl", layout="diffusers"),
                    containers=("safetensors",), needs_torch=True),
        # textual inversion ------------------------------------------------------------------------------
        FixtureSpec("ti_sd15_a1111_pt", "A1111 embedding .pt (string_to_param)", lambda d: K.ti_a1111_pt(),
                    E("textual_inversion", "sd1", layout="a1111", details={"vectors": 2}),
                    containers=("torch-zip", "torch-legacy"), torch_wrap=_a1111_embedding, torch_suffix=".pt"),
        FixtureSpec("ti_sd15_a1111", "A1111 embedding .safetensors (emb_params)", lambda d: K.ti_a1111_safetensors(),
                    E("textual_inversion", "sd1", layout="a1111", details={"vectors": 2}), containers=("safetensors",)),
        FixtureSpec("ti_sd2_a1111", "SD2 embedding (emb_params, 1024 wide)",
                    lambda d: K.ti_a1111_safetensors(width=1024),
                    E("textual_inversion", "sd2", layout="a1111", details={"vectors": 2}), containers=("safetensors",)),
        FixtureSpec("ti_sd15_diffusers", "diffusers learned_embeds (token -> [1, 768])", lambda d: K.ti_diffusers(),
                    E("textual_inversion", "sd1", layout="diffusers", details={"vectors": 1}),
                    containers=("safetensors", "torch-zip"), torch_suffix=".bin"),
        FixtureSpec("ti_sdxl", "SDXL embedding (clip_l [n,768] + clip_g [n,1280])", lambda d: K.ti_sdxl(),
                    E("textual_inversion", "sdxl", layout="kohya", details={"vectors": 2}), containers=("safetensors",)),
        # adapters -----------------------------------------------------------------------------------------
        FixtureSpec("ip_adapter_sd15", "ip-adapter_sd15 (image_proj.*, ip_adapter.N.to_k_ip/to_v_ip)",
                    _ip_adapter("sd1", 1024, 768), E("ip_adapter", "sd1"),
                    containers=("safetensors", "torch-zip"), torch_wrap=_nest(("image_proj", "ip_adapter")),
                    torch_suffix=".bin", needs_torch=True),
        FixtureSpec("ip_adapter_sdxl", "ip-adapter_sdxl (2048 context, 1280 image embeds)",
                    _ip_adapter("sdxl", 1280, 2048), E("ip_adapter", "sdxl"),
                    containers=("safetensors", "torch-zip"), torch_wrap=_nest(("image_proj", "ip_adapter")),
                    torch_suffix=".bin", needs_torch=True),
        FixtureSpec("t2i_adapter_sd15", "TencentARC t2iadapter_canny_sd14v1.pth (conv_in, body.N)",
                    lambda d: K.t2i_adapter_original(), E("t2i_adapter", "sd1"),
                    containers=("torch-zip", "safetensors"), torch_suffix=".pth"),
        FixtureSpec("t2i_adapter_sd15_diffusers", "TencentARC/t2iadapter_canny_sd15v2 (adapter.body.N.resnets.M)",
                    _diffusers("diffusers_t2i_adapter"), E("t2i_adapter", "sd1", layout="diffusers"),
                    containers=("safetensors",), needs_torch=True),
        FixtureSpec("t2i_adapter_sdxl_diffusers", "TencentARC/t2i-adapter-canny-sdxl-1.0 (full_adapter_xl)",
                    _diffusers("diffusers_t2i_adapter", xl=True), E("t2i_adapter", "sdxl", layout="diffusers"),
                    containers=("safetensors",), needs_torch=True),
        # diffusers folders -------------------------------------------------------------------------------
        FixtureSpec("diffusers_sd15", "StableDiffusionPipeline folder saved by diffusers (tiny, SD1 dims)",
                    _no_layout, E("pipeline", "sd1", prediction_type="epsilon", layout="diffusers"),
                    containers=("diffusers",), needs_torch=True),
        FixtureSpec("diffusers_sdxl", "StableDiffusionXLPipeline folder saved by diffusers (tiny, SDXL dims)",
                    _no_layout, E("pipeline", "sdxl", prediction_type="epsilon", layout="diffusers"),
                    containers=("diffusers",), needs_torch=True),
        FixtureSpec("diffusers_unet_sd15", "unet/ component folder alone (config.json + weights)",
                    _no_layout, E("unet", "sd1", layout="diffusers"), containers=("diffusers",), needs_torch=True),
        FixtureSpec("diffusers_vae", "vae/ component folder alone", _no_layout,
                    E("vae", None, layout="diffusers", family_candidates=_ANY_SD_VAE),
                    containers=("diffusers",), needs_torch=True),
    ]
    return specs


#: id -> spec
FIXTURES: dict[str, FixtureSpec] = {spec.id: spec for spec in _specs()}


def make_fixture(fixture_id: str, dest_dir: str | Path, container: str | None = None, *,
                 full: bool = False, dtype: str | None = None, layouts_dir: str | Path | None = None,
                 seed: int = 0, filename: str | None = None) -> Path:
    """Write fixture ``fixture_id`` into ``dest_dir`` and return its path.

    ``container``: "safetensors", "torch-zip", "torch-legacy" or "diffusers" (default: the spec's
    first; "safetensors" with ``full``). ``full``: every real shape, zero-filled sparse
    safetensors. ``dtype``: recast floats. ``seed``: other values, same names and shapes.
    """
    try:
        spec = FIXTURES[fixture_id]
    except KeyError:
        raise KeyError(f"unknown fixture {fixture_id!r}") from None
    container = container or ("safetensors" if full else spec.containers[0])
    if container not in spec.containers:
        raise ValueError(f"fixture {fixture_id!r} does not come as {container!r} (valid: {', '.join(spec.containers)})")
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / (filename or spec.filename(container))
    if container == "diffusers":
        from . import diffusers_models

        return diffusers_models.save_fixture_folder(fixture_id, path, seed=seed)
    layout = spec.layout(Path(layouts_dir) if layouts_dir is not None else None, dtype)
    if full:
        if container != "safetensors":
            raise ValueError("full-size fixtures are written as sparse safetensors only")
        return write_sparse_safetensors(layout, path, spec.metadata or None)
    if container == "safetensors":
        return write_safetensors(layout, path, metadata=spec.metadata or None, seed=seed, alpha=spec.alpha)
    legacy = container == "torch-legacy"
    if spec.torch_wrap is _lightning_wrap:
        payload = _lightning_wrap(to_torch(layout, materialize(layout, seed=seed, alpha=spec.alpha)))
        _save_with_lightning(payload, path, legacy)
        return path
    return write_torch_checkpoint(layout, path, legacy=legacy, wrap=spec.torch_wrap, seed=seed, alpha=spec.alpha)


def fixture_ids(container: str | None = None, *, torch_free: bool = False) -> list[str]:
    """Fixture ids, optionally only those valid in ``container`` / buildable without torch."""
    return [spec.id for spec in FIXTURES.values()
            if (container is None or container in spec.containers) and not (torch_free and spec.needs_torch)]

