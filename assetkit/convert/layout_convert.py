"""Single original-layout file <-> diffusers folder, streamed and exact.

Planning reads headers only: :func:`plan_single_file_to_diffusers` identifies the file (probe),
picks the family's catalogue configs (``registry/configs/<id>``, or the caller's ``config_dir``),
applies each component's key-map rules and returns a :class:`DiffusersPlan` whose target tensors
are byte ranges of the source tensors. :func:`write_diffusers_folder` streams it out. Tensors the
diffusers layout has no place for (SD2's 24th text block, ``text_projection``, ``logit_scale``,
``position_ids``, schedule buffers, unknown keys) go to a sidecar file that diffusers ignores
(:data:`SIDECAR`) and come back on the way to a single file: nothing dropped, nothing invented.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import catalogue
from ..errors import AssetkitError
from ..formats import Asset
from .keymap import Mapped, Rule, SourcePart, TargetTensor, map_names
from .layouts import clip_text_rules, controlnet_rules, open_clip_text_rules, unet_rules, vae_rules

__all__ = ["SIDECAR", "ComponentPlan", "DiffusersPlan", "SingleFilePlan", "SourcePart", "TargetTensor",
           "component_rules", "plan_diffusers_to_single_file", "plan_single_file_to_diffusers",
           "write_diffusers_folder", "write_single_file"]

#: The sidecar in a diffusers folder: original tensors with no place in diffusers, under their
#: original names, plus the layout id and the source's plain metadata (JSON in the header).
SIDECAR = "assetkit_extras.safetensors"
_WEIGHTS = {"diffusers": "diffusion_pytorch_model", "transformers": "model"}


class LayoutError(AssetkitError):
    """The file's layout is not one assetkit can map, or tensors the layout needs are missing."""


@dataclass(frozen=True)
class ComponentPlan:
    name: str
    config: dict | None
    files: dict[str, bytes]
    tensors: tuple[TargetTensor, ...]
    library: str = "diffusers"  #: which library's weight file name (``diffusion_pytorch_model`` or ``model``)


@dataclass(frozen=True)
class DiffusersPlan:
    family: str
    pipeline_class: str | None
    model_index: dict
    components: dict[str, ComponentPlan]
    extras: tuple[str, ...]
    plain_metadata: dict
    config_id: str | None = None
    layout: str = "pipeline"  #: key of ``single_file`` in registry/layouts.json the source used
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class SingleFilePlan:
    family: str
    layout: str
    tensors: tuple[TargetTensor, ...]  #: parts name tensors of the folder asset (``component/name``) or the sidecar
    lacking: tuple[str, ...]  #: names a released original file holds that neither folder nor sidecar has
    metadata: dict[str, str] = field(default_factory=dict)


def _layouts() -> dict[str, Any]:
    return catalogue.load("layouts.json")


def _rules_for(kind: str, config: dict, source_names: Iterable[str] = ()) -> list[Rule]:
    if kind == "unet":
        return unet_rules(config)
    if kind == "vae":
        return vae_rules(config)
    if kind == "controlnet":
        return controlnet_rules(config)
    if kind == "open_clip":
        return open_clip_text_rules(config)
    if kind == "clip":
        names = list(source_names)
        with_text_model = not names or any(n.startswith("transformer.text_model.") for n in names)
        return clip_text_rules(config, text_model_prefix=with_text_model)
    raise LayoutError(f"no key-map rules for {kind!r}")


def component_rules(kind: str, config: dict, source_names: Iterable[str] = ()) -> list[Rule]:
    """The key-map rules of one component kind (``unet``, ``vae``, ``controlnet``, ``clip``,
    ``open_clip``) for its diffusers/transformers config."""
    return _rules_for(kind, config, source_names)


# ---- configs ---------------------------------------------------------------------------------
def _read_config_dir(folder: Path) -> dict[str, Any]:
    """``relative path -> parsed JSON`` for every JSON file of a diffusers config folder."""
    out: dict[str, Any] = {}
    for path in sorted(folder.rglob("*.json")):
        rel = path.relative_to(folder).as_posix()
        try:
            out[rel] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise AssetkitError(f"cannot read config: {exc}", where=str(path)) from None
    return out


def catalogue_configs(config_id: str) -> dict[str, Any]:
    """The catalogue's config folder ``registry/configs/<config_id>`` as ``relative path -> JSON``."""
    folder = catalogue.catalogue_dir() / "configs" / config_id
    if not folder.is_dir():
        raise LayoutError(f"the catalogue has no configs for {config_id!r}")
    return copy.deepcopy(_read_config_dir(folder))


def _choose_config(kind: str, family: str | None, variant: str | None, prediction: str | None) -> str:
    table = _layouts()
    if kind == "vae":
        return table["standalone_vae_family"].get(str(family), "vae-sd")
    if kind == "unet":
        kind = "pipeline"
    if prediction is None:
        prediction = table["unknown_prediction_type"].get(str(family))
    rows = [r for r in table["configs"] if r["kind"] == kind and r["family"] == family and r["variant"] == variant]
    exact = [r for r in rows if r["prediction_type"] == prediction]
    chosen = exact or [r for r in rows if prediction is None] or rows
    if not chosen:
        considered = sorted({f"{r['family']}{'-' + r['variant'] if r['variant'] else ''}"
                             for r in table["configs"] if r["kind"] in (kind, "vae")})
        raise LayoutError(f"no catalogue configs for {family or 'unknown family'} {kind}"
                          f"{f' ({variant})' if variant else ''}; families considered: {', '.join(considered)}")
    return chosen[0]["id"]


# ---- single file -> diffusers ----------------------------------------------------------------
def _unknown_layout(asset: Asset, considered: str) -> LayoutError:
    prefixes: dict[str, int] = {}
    for name in asset.tensors:
        head = name.split(".", 2)
        key = ".".join(head[:2]) if len(head) > 2 else head[0]
        prefixes[key] = prefixes.get(key, 0) + 1
    found = ", ".join(f"{k}.* ({v})" for k, v in sorted(prefixes.items(), key=lambda kv: -kv[1])[:8])
    return LayoutError(f"unknown layout: found {len(asset.tensors)} tensors ({found or 'none'}); "
                       f"families considered: {considered}", where=str(asset.path))


def _considered() -> str:
    return ", ".join(r["id"] for r in _layouts()["configs"])


def _component_library(model_index: Mapping[str, Any], name: str) -> str:
    entry = model_index.get(name)
    return entry[0] if isinstance(entry, list) and entry and entry[0] else "diffusers"


def plan_single_file_to_diffusers(asset: Asset, *, family: str | None = None,
                                  config_dir: Path | None = None) -> DiffusersPlan:
    """Plan the conversion of an original-layout single file (full checkpoint, or a UNet-only,
    VAE-only or ControlNet file) to a diffusers folder, from headers only.

    ``family`` overrides the probe's family; ``config_dir`` is a diffusers folder (or config-only
    folder) whose JSON files replace the catalogue's. Raises :class:`LayoutError` for an unknown
    layout (naming what was found and which families were considered) and for missing tensors
    (listed; never invented).
    """
    from ..probe import probe

    result = probe(asset)
    kind = result.kind
    fam = family or result.family
    source = {name: (info.dtype, info.shape) for name, info in asset.tensors.items()}
    table = _layouts()
    if kind == "pipeline" and fam in table["single_file"] and result.layout in (None, "original"):
        layout = fam
    elif kind in ("vae", "unet", "controlnet") and result.layout in (None, "original"):
        layout = kind
    else:
        raise _unknown_layout(asset, _considered() + f" (probe: {result.summary})")
    if config_dir is not None:
        configs = _read_config_dir(Path(config_dir))
        config_id = None
    else:
        if layout == "controlnet":
            raise LayoutError("ControlNet files need --config DIR (a ControlNetModel config): the catalogue "
                              "has no ControlNet configs yet", where=str(asset.path))
        config_id = _choose_config(kind, fam, result.variant, result.prediction_type)
        configs = catalogue_configs(config_id)
    components_spec: dict[str, list[str]] = dict(table["single_file"][layout])
    if layout == "controlnet" and not any(n.startswith("control_model.") for n in source):
        components_spec = {"controlnet": ["", "controlnet"]}
    if layout == "unet" and any(n.startswith("model.diffusion_model.") for n in source):
        components_spec = {"unet": ["model.diffusion_model.", "unet"]}
    if layout == "vae" and any(n.startswith("first_stage_model.") for n in source):
        components_spec = {"vae": ["first_stage_model.", "vae"]}
    model_index = configs.get("model_index.json", {})
    components: dict[str, ComponentPlan] = {}
    claimed: set[str] = set()
    missing: list[str] = []
    for comp, (prefix, rules_kind) in components_spec.items():
        cfg_name = f"{comp}/config.json"
        if cfg_name not in configs and layout in ("vae", "unet", "controlnet") and "config.json" in configs:
            cfg_name = "config.json"
        config = configs.get(cfg_name)
        if config is None:
            raise LayoutError(f"no {comp}/config.json among the configs", where=str(config_dir or config_id))
        sub = {n[len(prefix):]: v for n, v in source.items() if n.startswith(prefix)}
        rules = _rules_for(rules_kind, config, sub)
        mapped: Mapped = map_names([r.prefixed(prefix, "") for r in rules], source, "to_diffusers")
        missing.extend(mapped.missing)
        claimed.update(p.source for t in mapped.targets for p in t.parts)
        components[comp] = ComponentPlan(comp, config, {}, mapped.targets,
                                         library=_component_library(model_index, comp)
                                         if comp.startswith("text_encoder") else "diffusers")
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise LayoutError(f"{len(missing)} tensors the {config_id or 'given'} layout needs are missing: {shown}",
                          where=str(asset.path))
    # Components with no weights in the single file: tokenizers and the scheduler.
    for rel, value in configs.items():
        top = rel.split("/", 1)
        if len(top) == 2 and top[0] not in components and (top[0] in model_index or not model_index):
            plan = components.get(top[0])
            files = dict(plan.files) if plan else {}
            files[top[1]] = catalogue._json_bytes(value)
            components[top[0]] = ComponentPlan(top[0], None, files, ())
    for comp in model_index:
        if comp.startswith("tokenizer") and model_index[comp] and model_index[comp][0] and comp not in components:
            fam_for_tok = "sdxl" if layout == "sdxl-refiner" else layout
            components[comp] = ComponentPlan(comp, None, catalogue.family_tokenizer_files(fam_for_tok, comp), ())
    extras = tuple(n for n in asset.tensors if n not in claimed)
    plain = {k: v for k, v in asset.metadata.items()}
    notes = []
    if result.prediction_type is None and fam == "sd2" and config_id:
        notes.append(f"prediction type not stated by the file; assumed by the catalogue ({config_id})")
    return DiffusersPlan(family=fam or layout, pipeline_class=model_index.get("_class_name"), model_index=model_index,
                         components=components, extras=extras, plain_metadata=plain, config_id=config_id,
                         layout=layout, notes=tuple(notes))


# ---- writing ---------------------------------------------------------------------------------
def _target_bytes(target: TargetTensor, read: Callable[[str], memoryview | bytes], dtype: str) -> Any:
    if target.transform == "transpose":
        import numpy as np

        from ..formats.dtypes import DTYPES

        part = target.parts[0]
        item = DTYPES[target.dtype].itemsize
        raw = memoryview(read(part.source))[part.start:part.stop]
        arr = np.frombuffer(raw, dtype=np.dtype(f"V{item}")).reshape(target.shape[1], target.shape[0])
        data: Any = memoryview(np.ascontiguousarray(arr.T)).cast("B")
    elif len(target.parts) == 1:
        part = target.parts[0]
        data = memoryview(read(part.source))[part.start:part.stop]
    else:
        data = b"".join(bytes(memoryview(read(p.source))[p.start:p.stop]) for p in target.parts)
    if dtype != target.dtype:
        from .dtype_cast import cast_bytes

        data = cast_bytes(data, target.dtype, dtype)
    return data


def _write_tensors(dest: Path, targets: Iterable[TargetTensor], read: Callable[[str], Any],
                   dtype: str | None, metadata: Mapping[str, str] | None = None) -> None:
    from ..formats.safetensors import SafetensorsWriter, TensorSpec
    from .dtype_cast import output_dtype

    targets = list(targets)
    out_dtypes = [output_dtype(t.dtype, dtype) for t in targets]
    specs = [TensorSpec(t.name, d, t.shape) for t, d in zip(targets, out_dtypes, strict=True)]
    with SafetensorsWriter(dest, specs, metadata) as writer:
        for target, out in zip(targets, out_dtypes, strict=True):
            writer.write_tensor(target.name, _target_bytes(target, read, out))


def _weight_name(library: str, variant: str | None) -> str:
    base = _WEIGHTS.get(library, "diffusion_pytorch_model")
    return f"{base}.{variant}.safetensors" if variant else f"{base}.safetensors"


def _staging(out_dir: Path, overwrite: bool) -> Path:
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        from ..errors import OutputExistsError

        raise OutputExistsError("exists; pass --overwrite to replace it", where=str(out_dir))
    if not out_dir.parent.is_dir():
        raise AssetkitError("output folder does not exist", where=str(out_dir.parent))
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))


def _place(staging: Path, out_dir: Path) -> None:
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
        os.replace(out_dir, old / "x")
        os.replace(staging, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out_dir)


def _json_file(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode("utf-8")


def write_diffusers_folder(plan: DiffusersPlan, asset: Asset, out_dir: Path, *, dtype: str | None = None,
                           variant: str | None = None, drop_extras: bool = False,
                           components: Iterable[str] | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Stream ``plan`` out of ``asset`` into a diffusers folder (built beside ``out_dir`` and
    renamed into place only when complete). ``components`` limits the output to some component
    folders (written as plain component folders when there is one and no model index applies).
    Returns a summary: components with their tensor counts, extras kept or dropped."""
    if variant == "fp16" and dtype is None:
        dtype = "F16"
    out_dir = Path(out_dir)
    chosen = list(plan.components) if components is None else list(components)
    unknown = [c for c in chosen if c not in plan.components]
    if unknown:
        raise LayoutError(f"no component {', '.join(unknown)} in this file (has: {', '.join(plan.components)})")
    single_component = components is not None and len(chosen) == 1
    staging = _staging(out_dir, overwrite)
    try:
        summary: dict[str, Any] = {"components": {}, "extras": list(plan.extras), "extras_dropped": bool(drop_extras),
                                   "family": plan.family, "config": plan.config_id, "notes": list(plan.notes)}
        for name in chosen:
            comp = plan.components[name]
            folder = staging if single_component else staging / name
            folder.mkdir(parents=True, exist_ok=True)
            for fname, data in comp.files.items():
                (folder / fname).parent.mkdir(parents=True, exist_ok=True)
                (folder / fname).write_bytes(data)
            if comp.config is not None:
                cfg = dict(comp.config)
                if comp.library == "transformers" and dtype:
                    cfg["torch_dtype"] = {"F16": "float16", "BF16": "bfloat16", "F32": "float32"}.get(dtype, cfg.get("torch_dtype"))
                (folder / "config.json").write_bytes(_json_file(cfg))
            if comp.tensors:
                _write_tensors(folder / _weight_name(comp.library, variant), comp.tensors, asset.tensor_bytes, dtype)
            summary["components"][name] = len(comp.tensors)
        if not single_component:
            if plan.model_index:
                index = dict(plan.model_index)
                if components is not None:
                    index = {k: v for k, v in index.items() if k.startswith("_") or not isinstance(v, list) or k in chosen}
                (staging / "model_index.json").write_bytes(_json_file(index))
            if plan.extras and not drop_extras and components is None:
                meta = {"assetkit.layout": plan.layout, "assetkit.family": plan.family, **_clip_namings(plan),
                        "assetkit.plain_metadata": json.dumps(plan.plain_metadata, sort_keys=True, default=str)}
                extras = [TargetTensor(n, asset.tensors[n].dtype, asset.tensors[n].shape,
                                       (SourcePart(n, 0, asset.tensors[n].nbytes),)) for n in plan.extras]
                _write_tensors(staging / SIDECAR, extras, asset.tensor_bytes, None, meta)
        _place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary


def _clip_namings(plan: DiffusersPlan) -> dict[str, str]:
    """Whether each CLIP-L text encoder of the source used the ``text_model.`` naming (for the way back)."""
    out = {}
    for name, comp in plan.components.items():
        if name.startswith("text_encoder") and comp.tensors:
            sources = [p.source for t in comp.tensors for p in t.parts]
            if any(".transformer." in f".{s}" for s in sources):
                out[f"assetkit.{name}.text_model"] = "1" if any(".transformer.text_model." in f".{s}" for s in sources) else "0"
    return out


# ---- diffusers -> single file ----------------------------------------------------------------
def _folder_layout(asset: Asset, sidecar_meta: Mapping[str, str]) -> str:
    if "assetkit.layout" in sidecar_meta:
        return sidecar_meta["assetkit.layout"]
    comps = set(asset.components)
    if asset.format == "diffusers-component":
        cls = (asset.configs.get("config.json") or {}).get("_class_name")
        return {"AutoencoderKL": "vae", "UNet2DConditionModel": "unet", "ControlNetModel": "controlnet"}.get(cls, "")
    if "text_encoder_2" in comps:
        return "sdxl" if "text_encoder" in comps else "sdxl-refiner"
    te = asset.configs.get("text_encoder/config.json") or {}
    if te.get("hidden_size") == 768:
        return "sd1"
    if te.get("hidden_size") == 1024:
        return "sd2"
    return ""


def _read_sidecar(folder: Path) -> tuple[Asset | None, dict[str, str]]:
    path = folder / SIDECAR
    if not path.is_file():
        return None, {}
    from ..formats.safetensors import read_safetensors

    side = read_safetensors(path)
    return side, dict(side.metadata)


def plan_diffusers_to_single_file(asset: Asset) -> SingleFilePlan:
    """Plan a single original-layout file from a diffusers pipeline or component folder, driven by
    its configs; tensors from the sidecar (if any) come back under their original names."""
    side, meta = _read_sidecar(Path(asset.path))
    layout = _folder_layout(asset, meta)
    table = _layouts()
    if layout not in table["single_file"]:
        raise LayoutError("cannot tell which original layout this folder maps to (no sidecar, and the "
                          f"configs match none of: {', '.join(table['single_file'])})", where=str(asset.path))
    spec = table["single_file"][layout]
    targets: list[TargetTensor] = []
    missing: list[str] = []
    single_component = asset.format == "diffusers-component"
    for comp, (prefix, rules_kind) in spec.items():
        if single_component:
            config, tensors, key = asset.configs.get("config.json"), asset.tensors, ""
            prefix = "" if layout in ("vae", "unet", "controlnet") else prefix
        else:
            if comp not in asset.components:
                missing.append(f"{comp}/ (component folder)")
                continue
            config, tensors, key = asset.configs.get(f"{comp}/config.json"), asset.components[comp].tensors, f"{comp}/"
        if config is None:
            raise LayoutError(f"{comp}: no config.json", where=str(asset.path))
        names = {n: (i.dtype, i.shape) for n, i in tensors.items()}
        te_names: list[str] = []
        if rules_kind == "clip" and meta.get(f"assetkit.{comp}.text_model") == "0":
            te_names = ["transformer.embeddings"]
        rules = _rules_for(rules_kind, config, te_names)
        mapped = map_names([r.prefixed(prefix, key) for r in rules], {key + n: v for n, v in names.items()},
                           "to_original")
        missing.extend(mapped.missing)
        targets.extend(mapped.targets)
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise LayoutError(f"{len(missing)} tensors are missing from the folder: {shown}", where=str(asset.path))
    if side is not None:
        have = {t.name for t in targets}
        for n, info in side.tensors.items():
            if n in have:
                raise LayoutError(f"sidecar tensor {n} also comes from a component", where=str(side.path))
            targets.append(TargetTensor(n, info.dtype, info.shape, (SourcePart(f"{SIDECAR}/{n}", 0, info.nbytes),)))
    names = {t.name for t in targets}
    lacking = tuple(p for p in table["original_only"].get(layout, [])
                    if not any(fnmatch.fnmatchcase(n, p) for n in names))
    return SingleFilePlan(family=meta.get("assetkit.family", layout), layout=layout, tensors=tuple(targets),
                          lacking=lacking)


def _modelspec(plan: SingleFilePlan, asset: Asset, digest: str) -> dict[str, str]:
    arch = {"sd1": "stable-diffusion-v1", "sd2": "stable-diffusion-v2-768-v", "sdxl": "stable-diffusion-xl-v1-base",
            "sdxl-refiner": "stable-diffusion-xl-v1-refiner", "vae": "stable-diffusion-v1/vae",
            "unet": "stable-diffusion-v1/unet", "controlnet": "stable-diffusion-v1/controlnet"}
    sched = asset.configs.get("scheduler/scheduler_config.json") or {}
    prediction = sched.get("prediction_type", "epsilon")
    unet = asset.configs.get("unet/config.json") or asset.configs.get("config.json") or {}
    vae_factor = 2 ** (len((asset.configs.get("vae/config.json") or {}).get("block_out_channels", [0] * 4)) - 1)
    size = unet.get("sample_size", 64) * vae_factor
    architecture = arch.get(plan.layout, plan.layout)
    if plan.layout == "sd2" and prediction != "v_prediction":
        architecture = "stable-diffusion-v2-512"
    return {"modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": architecture,
            "modelspec.implementation": "https://github.com/Stability-AI/generative-models" if plan.layout.startswith("sdxl")
            else "https://github.com/Stability-AI/stablediffusion",
            "modelspec.title": Path(asset.path).name, "modelspec.resolution": f"{size}x{size}",
            "modelspec.prediction_type": prediction, "modelspec.hash_sha256": "0x" + digest}


def write_single_file(plan: SingleFilePlan, asset: Asset, dest: Path, *, dtype: str | None = None,
                      overwrite: bool = False) -> dict[str, Any]:
    """Stream ``plan`` into one safetensors file with ModelSpec metadata (``hash_sha256`` of the
    tensor data as written). Two passes over the data: hash, then write (reads are page cache)."""
    import hashlib

    side, _ = _read_sidecar(Path(asset.path))

    def read(name: str) -> Any:
        if name.startswith(SIDECAR + "/"):
            assert side is not None
            return side.tensor_bytes(name[len(SIDECAR) + 1:])
        return asset.tensor_bytes(name)

    from .dtype_cast import output_dtype

    digest = hashlib.sha256()
    for t in plan.tensors:
        digest.update(_target_bytes(t, read, output_dtype(t.dtype, dtype)))
    meta = _modelspec(plan, asset, digest.hexdigest())
    _write_tensors(Path(dest), plan.tensors, read, dtype, meta)
    if side is not None:
        side.close()
    return {"tensors": len(plan.tensors), "layout": plan.layout, "family": plan.family, "lacking": list(plan.lacking),
            "metadata": meta}
