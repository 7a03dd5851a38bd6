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
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import catalogue
from ..errors import AssetkitError
from ..formats import Asset
from ..formats.atomic import place_folder, stage_folder
from . import transformer_layouts as transformers
from .keymap import Mapped, Rule, SourcePart, TargetTensor, map_names
from .layouts import clip_text_rules, controlnet_rules, open_clip_text_rules, unet_rules, vae_rules
from .layouts.clip import diffusers_prefix
from .layouts.midas import midas_rules
from .targets import write_targets

__all__ = ["SIDECAR", "ComponentPlan", "DiffusersPlan", "SingleFilePlan", "SourcePart", "TargetTensor",
           "component_rules", "plan_diffusers_to_single_file", "plan_single_file_to_diffusers",
           "write_diffusers_folder", "write_single_file"]

#: The sidecar in a diffusers folder: original tensors with no place in diffusers, under their
#: original names, plus the layout id and the source's plain metadata (JSON in the header).
SIDECAR = "assetkit_extras.safetensors"
_WEIGHTS = {"diffusers": "diffusion_pytorch_model", "transformers": "model"}
#: Layouts of one component alone (written as a component folder, no model index).
_STANDALONE = ("vae", "unet", "controlnet", "text_encoder", *transformers.LAYOUTS.values())
_TEXT_RULES = ("clip", "open_clip", "open_clip_bare")
#: Layouts of a variant with components of its own (registry/layouts.json ``single_file``) -> family.
_VARIANT_LAYOUTS = {"sd2-depth": "sd2"}


class LayoutError(AssetkitError):
    """The file's layout is not one assetkit can map, or tensors the layout needs are missing."""


#: How ``assetkit convert`` offers a file its own configs; other callers pass their own way.
CONFIG_HINT = "pass --config DIR with its own"


class ConfigMismatchError(LayoutError):
    """The file and the configs it was planned with do not belong together (shapes, block counts).
    The remedy is configs of its own, which each caller offers its own way: ``hint`` (default
    :data:`CONFIG_HINT`), replaced with :meth:`with_hint`."""

    def __init__(self, detail: str, where: str | None = None, hint: str = CONFIG_HINT) -> None:
        self.detail, self.hint = detail, hint
        super().__init__(f"{detail} ({hint})" if hint else detail, where)

    def with_hint(self, hint: str) -> ConfigMismatchError:
        return ConfigMismatchError(self.detail, self.where, hint)


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
    prefixes: dict[str, str] = field(default_factory=dict)  #: component -> its name prefix in the source
    names: str = "original"  #: the source's naming: ``original``, or ``diffusers`` (a component file alone)


@dataclass(frozen=True)
class SingleFilePlan:
    family: str
    layout: str
    tensors: tuple[TargetTensor, ...]  #: parts name tensors of the folder asset (``component/name``) or the sidecar
    lacking: tuple[str, ...]  #: names a released original file holds that neither folder nor sidecar has
    metadata: dict[str, str] = field(default_factory=dict)
    prefixes: dict[str, str] = field(default_factory=dict)  #: component -> the name prefix it was given
    extras: tuple[str, ...] = ()  #: names kept as they were, no rule claiming them


def _layouts() -> dict[str, Any]:
    return catalogue.load("layouts.json")


def _rules_for(kind: str, config: dict, source_names: Iterable[str] = (), target_prefix: str | None = None,
               where: str | None = None) -> list[Rule]:
    """The rules of ``kind`` for ``config``; a config the rules cannot map is a LayoutError (one line)."""
    try:
        return _kind_rules(kind, config, source_names, target_prefix)
    except (ValueError, NotImplementedError, KeyError, TypeError) as exc:
        detail = f"missing config entry {exc}" if isinstance(exc, KeyError) else str(exc)
        raise LayoutError(f"cannot map this {kind} config: {detail}", where=where) from None


def _kind_rules(kind: str, config: dict, source_names: Iterable[str], target_prefix: str | None) -> list[Rule]:
    if kind == "unet":
        return unet_rules(config)
    if kind == "vae":
        return vae_rules(config)
    if kind == "controlnet":
        return controlnet_rules(config)
    if kind == "midas":
        return midas_rules(config)
    if kind == "open_clip":
        return open_clip_text_rules(config, target_prefix=target_prefix)
    if kind == "open_clip_bare":  # a standalone open_clip text tower: the same names without ``model.``
        return [Rule(tuple(n.removeprefix("model.") for n in r.original), r.diffusers, r.op)
                for r in open_clip_text_rules(config, target_prefix=target_prefix)]
    if kind in transformers.RULES:
        return transformers.RULES[kind][0](config)
    if kind == "clip":
        names = list(source_names)
        with_text_model = not names or any(n.startswith("transformer.text_model.") for n in names)
        return clip_text_rules(config, text_model_prefix=with_text_model, target_prefix=target_prefix)
    raise LayoutError(f"no key-map rules for {kind!r}")


def component_rules(kind: str, config: dict, source_names: Iterable[str] = ()) -> list[Rule]:
    """The key-map rules of one component kind (``unet``, ``vae``, ``controlnet``, ``clip``,
    ``open_clip``) for its diffusers/transformers config."""
    return _rules_for(kind, config, source_names)


# ---- configs ---------------------------------------------------------------------------------
def config_files(folder: Path) -> list[Path]:
    """The files of a config folder that a conversion reads (its JSON configs and the other
    weightless files: tokenizers, ...); weights and hidden files are not configs."""
    from ..formats.sniff import CHECKPOINT_SUFFIXES

    return [p for p in sorted(Path(folder).rglob("*")) if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
            and p.suffix.lower() not in CHECKPOINT_SUFFIXES]


def _read_config_dir(folder: Path) -> dict[str, Any]:
    """``relative path -> parsed JSON`` for every JSON file of a diffusers config folder."""
    out: dict[str, Any] = {}
    if not folder.is_dir():
        raise AssetkitError("config folder does not exist", where=str(folder))
    for path in sorted(folder.rglob("*.json")):
        rel = path.relative_to(folder).as_posix()
        try:
            out[rel] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise AssetkitError(f"cannot read config: {exc}", where=str(path)) from None
    return out


def _folder_files(folder: Path) -> dict[str, bytes]:
    """``relative path -> bytes`` of every file of a weightless component folder (weights skipped)."""
    out: dict[str, bytes] = {}
    for path in config_files(folder) if folder.is_dir() else []:
        try:
            out[path.relative_to(folder).as_posix()] = path.read_bytes()
        except OSError as exc:
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
        considered = [r["id"] for r in table["configs"] if r["kind"] == kind]
        raise LayoutError(f"no catalogue configs for {family or 'unknown family'} {kind}"
                          f"{f' ({variant})' if variant else ''}; families considered: {', '.join(considered)}")
    return chosen[0]["id"]


# ---- single file -> diffusers ----------------------------------------------------------------
def _decisive_shapes(kind: str, config: Mapping[str, Any], prefix: str) -> dict[str, tuple[int, ...]]:
    """A few diffusers tensor shapes that the config fixes (widths, channels, context): enough to
    tell that a file and a config do not belong together before anything is written."""
    want: dict[str, tuple[int, ...]] = {}
    if kind in ("unet", "controlnet"):
        channels = config["block_out_channels"]
        want["conv_in.weight"] = (channels[0], config.get("in_channels", 4), 3, 3)
        cross = config.get("cross_attention_dim")
        if isinstance(cross, int):
            want["mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"] = (channels[-1], cross)
        if config.get("projection_class_embeddings_input_dim"):
            want["add_embedding.linear_1.weight"] = (channels[0] * 4, config["projection_class_embeddings_input_dim"])
    elif kind == "vae":
        channels = config["block_out_channels"]
        latent = config.get("latent_channels", 4)
        want["encoder.conv_in.weight"] = (channels[0], config.get("in_channels", 3), 3, 3)
        want["decoder.conv_in.weight"] = (channels[-1], latent, 3, 3)
    elif kind in transformers.RULES:
        want.update(transformers.RULES[kind][1](dict(config)))
    elif kind in _TEXT_RULES:
        hidden = config["hidden_size"]
        want[f"{prefix}embeddings.token_embedding.weight"] = (config.get("vocab_size", 49408), hidden)
        if config.get("num_hidden_layers", 0) > 0:
            want[f"{prefix}encoder.layers.0.mlp.fc1.weight"] = (config["intermediate_size"], hidden)
    return want


def _check_shapes(component: str, kind: str, config: Mapping[str, Any], targets: Iterable[TargetTensor],
                  where: str) -> None:
    by_name = {t.name: t.shape for t in targets}
    prefix = diffusers_prefix(dict(config)) if kind in _TEXT_RULES else ""
    bad = [f"{component}/{n} is {list(by_name[n])}, the config wants {list(shape)}"
           for n, shape in _decisive_shapes(kind, config, prefix).items() if n in by_name and tuple(by_name[n]) != shape]
    if bad:
        raise ConfigMismatchError("the file does not fit the configs: " + "; ".join(bad[:3]), where=where)


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
    configs: dict[str, Any] | None = None
    config_id: str | None = None
    if config_dir is not None:
        configs = _read_config_dir(Path(config_dir))
    given = _layout_from_configs(configs, {k.split("/")[0] for k in configs if "/" in k}) if configs else ""
    if kind == "pipeline" and given in table["single_file"] and result.layout in (None, "original"):
        layout = given  # the caller's configs say which family this is
    elif kind == "pipeline" and fam in table["single_file"] and result.layout in (None, "original"):
        layout = f"{fam}-{result.variant}" if f"{fam}-{result.variant}" in table["single_file"] else fam
    elif kind in ("vae", "unet", "controlnet") and result.layout in (None, "original", "diffusers"):
        layout = kind  # diffusers names too: a loose diffusion_pytorch_model.safetensors
    elif kind == "transformer" and fam in transformers.LAYOUTS and result.layout in ("original", "diffusers"):
        layout = transformers.LAYOUTS[fam]  # an SD3/Flux transformer alone
    elif kind == "pipeline" and fam in transformers.LAYOUTS:
        raise LayoutError(f"a full {fam} checkpoint (transformer with VAE or text encoders bundled) has no "
                          "conversion yet; its transformer alone converts", where=str(asset.path))
    elif kind == "text_encoder" and any(n.startswith("transformer.resblocks.") for n in source):
        layout = "text_encoder"  # a bare open_clip text tower (OpenCLIP-H / bigG)
    else:
        raise _unknown_layout(asset, _considered() + f" (probe: {result.summary})")
    if configs is None and layout == "text_encoder":
        width = source.get("token_embedding.weight", ("", (0, 0)))[1][-1]
        by_width = {str(row["width"]): row for row in table["standalone_text_encoder"]}
        if str(width) not in by_width:
            raise LayoutError(f"no catalogue config for an open_clip text encoder of width {width} (known: "
                              f"{', '.join(by_width)}); pass --config DIR", where=str(asset.path))
        row = by_width[str(width)]
        config_id = row["config"]
        configs = {"config.json": catalogue_configs(config_id)[f"{row['component']}/config.json"]}
    elif configs is None and layout in transformers.LAYOUTS.values():
        config_id = transformers.choose_config(fam, result.details, str(asset.path))
        configs = catalogue_configs(config_id)
    elif configs is None:
        config_id = _choose_config(kind, fam, result.variant, result.prediction_type)
        configs = catalogue_configs(config_id)
    components_spec: dict[str, list[str]] = dict(table["single_file"][layout])
    names = "diffusers" if result.layout == "diffusers" else "original"
    if names == "diffusers":
        components_spec = {c: ["", k] for c, (_, k) in components_spec.items()}
    if layout == "controlnet" and not any(n.startswith("control_model.") for n in source):
        components_spec = {"controlnet": ["", "controlnet"]}
    if layout == "unet" and any(n.startswith("model.diffusion_model.") for n in source):
        components_spec = {"unet": ["model.diffusion_model.", "unet"]}
    if layout == "vae" and any(n.startswith("first_stage_model.") for n in source):
        components_spec = {"vae": ["first_stage_model.", "vae"]}
    if layout in transformers.LAYOUTS.values() and any(n.startswith("model.diffusion_model.") for n in source):
        components_spec = {c: ["model.diffusion_model.", k] for c, (_, k) in components_spec.items()}
    standalone = layout in _STANDALONE
    model_index = {} if standalone else configs.get("model_index.json", {})
    components: dict[str, ComponentPlan] = {}
    claimed: set[str] = set()
    missing: list[str] = []
    for comp, (prefix, rules_kind) in components_spec.items():
        cfg_name = f"{comp}/config.json"
        if cfg_name not in configs and standalone and "config.json" in configs:
            cfg_name = "config.json"
        config = configs.get(cfg_name)
        if config is None:
            raise LayoutError(f"no {comp}/config.json among the configs", where=str(config_dir or config_id))
        sub = {n[len(prefix):]: v for n, v in source.items() if n.startswith(prefix)}
        rules = _rules_for(rules_kind, config, sub, where=f"{config_dir or config_id}/{cfg_name}")
        if names == "diffusers":  # already the target names: the same rules, diffusers side only
            rules = [Rule((n,), (n,)) for r in rules for n in r.diffusers]
        mapped: Mapped = map_names([r.prefixed(prefix, "") for r in rules], source, "to_diffusers")
        missing.extend(mapped.missing)
        if not mapped.missing:
            _check_shapes(comp, rules_kind, config, mapped.targets, str(asset.path))
        left = transformers.leftovers(rules_kind, mapped.unmatched, prefix) if rules_kind in transformers.RULES else []
        if left:
            raise ConfigMismatchError(f"the file has {len(left)} {comp} tensors the config has no place for (more "
                                      f"blocks, or a guidance embedder), e.g. {left[0]}", where=str(asset.path))
        claimed.update(p.source for t in mapped.targets for p in t.parts)
        components[comp] = ComponentPlan(comp, config, {}, mapped.targets,
                                         library="transformers" if "architectures" in config else "diffusers")
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        message = f"{len(missing)} tensors the {config_id or 'given'} layout needs are missing: {shown}"
        if config_dir is None:  # the catalogue's configs: a file of other depths needs its own
            raise ConfigMismatchError(message, where=str(asset.path))
        raise LayoutError(message, where=str(asset.path))
    # Components with no weights in the single file: tokenizers, the scheduler, a feature extractor.
    weighted = set(components)
    for rel, value in ({} if standalone else configs).items():
        top = rel.split("/", 1)
        if len(top) == 2 and top[0] not in weighted and (top[0] in model_index or not model_index):
            plan = components.get(top[0])
            files = dict(plan.files) if plan else {}
            files[top[1]] = catalogue.json_bytes(value)
            components[top[0]] = ComponentPlan(top[0], None, files, ())
    if config_dir is not None:  # the caller's files as they are, non-JSON ones (merges.txt) included
        for comp in set(components) - weighted:
            components[comp] = ComponentPlan(comp, None, {**components[comp].files,
                                                          **_folder_files(Path(config_dir) / comp)}, ())
    for comp in model_index:
        if comp.startswith("tokenizer") and model_index[comp] and model_index[comp][0] and comp not in components:
            fam_for_tok = "sdxl" if layout == "sdxl-refiner" else _VARIANT_LAYOUTS.get(layout, layout)
            components[comp] = ComponentPlan(comp, None, catalogue.family_tokenizer_files(fam_for_tok, comp), ())
    extras = tuple(n for n in asset.tensors if n not in claimed)
    plain = {k: v for k, v in asset.metadata.items()}
    notes = []
    if result.prediction_type is None and fam == "sd2" and config_id:
        notes.append(f"prediction type not stated by the file; assumed by the catalogue ({config_id})")
    if kind == "vae" and fam is None and config_id:
        notes.append(f"family not stated by the file (SD and SDXL VAEs have the same tensors); assumed {config_id}: "
                     "pass --family sdxl for an SDXL VAE")
    return DiffusersPlan(family=fam or _VARIANT_LAYOUTS.get(layout, layout), pipeline_class=model_index.get("_class_name"), model_index=model_index,
                         components=components, extras=extras, plain_metadata=plain, config_id=config_id,
                         layout=layout, notes=tuple(notes),
                         prefixes={c: p for c, (p, _) in components_spec.items()}, names=names)


# ---- writing (the tensor bytes: convert.targets) ---------------------------------------------
def _weight_name(library: str, variant: str | None) -> str:
    base = _WEIGHTS.get(library, "diffusion_pytorch_model")
    return f"{base}.{variant}.safetensors" if variant else f"{base}.safetensors"


def _write_small(path: Path, data: bytes) -> None:
    """A config or tokenizer file, fsynced like the weights (atomic write)."""
    from ..formats.atomic import atomic_write

    with atomic_write(path) as fh:
        fh.write(data)


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
    single_component = len(chosen) == 1 and (components is not None or not plan.model_index)
    if overwrite and out_dir.exists() and out_dir.resolve() in Path(asset.path).resolve().parents:
        raise AssetkitError("the source lies inside the output folder, which --overwrite would replace: "
                            "choose another OUTPUT", where=str(asset.path))
    staging = stage_folder(out_dir, overwrite)
    try:
        summary: dict[str, Any] = {"components": {}, "extras": list(plan.extras) if components is None else [],
                                   "extras_dropped": bool(drop_extras), "family": plan.family,
                                   "config": plan.config_id, "notes": list(plan.notes)}
        if drop_extras and _prefixes_differ(plan):
            summary["notes"].append("--drop-extras: the source's name prefixes are not recorded; the way back writes "
                                    "the usual ones (" + ", ".join(f"{c}: {_component_prefix(plan.layout, c) or 'none'}"
                                                                   for c in plan.prefixes) + ")")
        if components is not None:
            summary["not_extracted"] = [c for c in plan.components if c not in chosen]
        for name in chosen:
            comp = plan.components[name]
            folder = staging if single_component else staging / name
            folder.mkdir(parents=True, exist_ok=True)
            for fname, data in comp.files.items():
                (folder / fname).parent.mkdir(parents=True, exist_ok=True)
                _write_small(folder / fname, data)
            if comp.config is not None:
                cfg = dict(comp.config)
                if comp.library == "transformers" and dtype:
                    cfg["torch_dtype"] = {"F16": "float16", "BF16": "bfloat16", "F32": "float32"}.get(dtype, cfg.get("torch_dtype"))
                _write_small(folder / "config.json", catalogue.json_bytes(cfg))
            if comp.tensors:
                write_targets(folder / _weight_name(comp.library, variant), comp.tensors, lambda n: (asset, n), dtype)
            summary["components"][name] = len(comp.tensors)
        if not single_component and plan.model_index:
            index = dict(plan.model_index)
            if components is not None:
                index = {k: v for k, v in index.items() if k.startswith("_") or not isinstance(v, list) or k in chosen}
            _write_small(staging / "model_index.json", catalogue.json_bytes(index))
        if (plan.extras or plan.plain_metadata or _prefixes_differ(plan)) and not drop_extras and components is None:
            # The whole source was converted: keep what diffusers has no place for, and the name
            # prefixes when the way back would not restore them (a standalone component's sidecar
            # lies in its folder).
            prefixes = plan.prefixes if plan.names == "original" else {}  # diffusers names: nothing to restore
            meta = {"assetkit.layout": plan.layout, "assetkit.family": plan.family, **_clip_namings(plan),
                    **{f"assetkit.prefix.{c}": p for c, p in prefixes.items()},
                    "assetkit.plain_metadata": json.dumps(plan.plain_metadata, default=str)}
            extras = [TargetTensor(n, asset.tensors[n].dtype, asset.tensors[n].shape,
                                   (SourcePart(n, 0, asset.tensors[n].nbytes),)) for n in plan.extras]
            write_targets(staging / SIDECAR, extras, lambda n: (asset, n), None, meta)
        place_folder(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary


def _prefixes_differ(plan: DiffusersPlan) -> bool:
    """Whether the source's component prefixes differ from the ones a folder without a sidecar
    goes back to (``single_file`` in registry/layouts.json: ``control_model.`` for a ControlNet,
    none for a UNet or VAE alone)."""
    spec = _layouts()["single_file"].get(plan.layout, {})
    return plan.names == "original" and any(spec.get(c, [""])[0] != p for c, p in plan.prefixes.items())


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
def _layout_from_configs(configs: Mapping[str, Any], components: Iterable[str]) -> str:
    """The original layout a set of diffusers configs maps to ("" when it cannot tell)."""
    comps = set(components)
    if "model_index.json" not in configs:
        config = configs.get("config.json") or {}
        if config.get("hidden_act") == "gelu" and "CLIPText" in "".join(config.get("architectures") or []):
            return "text_encoder"  # an OpenCLIP text tower in transformers naming
        cls = config.get("_class_name")
        return {"AutoencoderKL": "vae", "UNet2DConditionModel": "unet", "ControlNetModel": "controlnet",
                **transformers.CLASS_LAYOUTS}.get(cls, "")
    if "transformer" in comps:
        return ""  # an SD3/Flux pipeline: only its transformer alone converts
    if "text_encoder_2" in comps:
        return "sdxl" if "text_encoder" in comps else "sdxl-refiner"
    if "depth_estimator" in comps or "depth_estimator" in configs.get("model_index.json", {}):
        return "sd2-depth"
    te = configs.get("text_encoder/config.json")
    if te is None:
        return ""
    # OpenAI CLIP (SD1) uses quick_gelu; the OpenCLIP encoders (SD2) use gelu.
    return "sd1" if te.get("hidden_act", "quick_gelu") == "quick_gelu" else "sd2"


def _folder_layout(asset: Asset, sidecar_meta: Mapping[str, str]) -> str:
    if "assetkit.layout" in sidecar_meta:
        return sidecar_meta["assetkit.layout"]
    return _layout_from_configs(asset.configs, asset.components)


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
    prefixes: dict[str, str] = {}
    single_component = asset.format == "diffusers-component"
    for comp, (prefix, rules_kind) in spec.items():
        if single_component:
            config, tensors, key = asset.configs.get("config.json"), asset.tensors, ""
            prefix = meta.get(f"assetkit.prefix.{comp}", prefix)  # without a sidecar: layouts.json's
        else:
            if comp not in asset.components:
                missing.append(f"{comp}/ (component folder)")
                continue
            config, tensors, key = asset.configs.get(f"{comp}/config.json"), asset.components[comp].tensors, f"{comp}/"
        if config is None:
            raise LayoutError(f"{comp}: no config.json", where=str(asset.path))
        prefixes[comp] = prefix
        names = {n: (i.dtype, i.shape) for n, i in tensors.items()}
        te_names: list[str] = []
        if rules_kind == "clip" and meta.get(f"assetkit.{comp}.text_model") == "0":
            te_names = ["transformer.embeddings"]
        rules = _rules_for(rules_kind, config, te_names,
                           diffusers_prefix(config, names) if rules_kind in _TEXT_RULES else None,
                           where=str(Path(asset.path) / key / "config.json") if key else str(asset.path))
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
    family = meta.get("assetkit.family")
    if family is None and single_component:
        from ..probe import probe

        family = probe(asset).family  # a component folder from elsewhere: its config says (context width)
    return SingleFilePlan(family=family or layout, layout=layout, tensors=tuple(targets),
                          lacking=lacking, prefixes=prefixes)


def _modelspec(plan: SingleFilePlan, asset: Asset, digest: str) -> dict[str, str]:
    if plan.layout in transformers.LAYOUTS.values():
        return transformers.modelspec(plan.layout, asset.configs.get("config.json") or {}, str(asset.path), digest)
    arch = {"sd1": "stable-diffusion-v1", "sd2": "stable-diffusion-v2-768-v", "sdxl": "stable-diffusion-xl-v1-base",
            "sdxl-refiner": "stable-diffusion-xl-v1-refiner", "sd2-depth": "stable-diffusion-v2-512/depth"}
    sched = asset.configs.get("scheduler/scheduler_config.json") or {}
    prediction = sched.get("prediction_type", "epsilon")
    unet = asset.configs.get("unet/config.json") or asset.configs.get("config.json") or {}
    vae_factor = 2 ** (len((asset.configs.get("vae/config.json") or {}).get("block_out_channels", [0] * 4)) - 1)
    size = unet.get("sample_size", 64) * vae_factor
    architecture = arch.get(plan.layout, plan.layout)
    if plan.layout == "sd2" and prediction != "v_prediction":
        architecture = "stable-diffusion-v2-512"
    family = plan.layout
    if plan.layout in ("vae", "unet", "controlnet"):  # alone: its family's architecture + "/vae"...
        family = plan.family if plan.family in arch else "sd1"
        architecture = f"{arch[family]}/{plan.layout}"
        size = {"sd2": 768, "sdxl": 1024, "sdxl-refiner": 1024}.get(family, 512)
    return {"modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": architecture,
            "modelspec.implementation": "https://github.com/Stability-AI/generative-models" if family.startswith("sdxl")
            else "https://github.com/Stability-AI/stablediffusion",
            "modelspec.title": Path(asset.path).name, "modelspec.resolution": f"{size}x{size}",
            "modelspec.prediction_type": prediction, "modelspec.hash_sha256": "0x" + digest}


def _source_metadata(sidecar_meta: Mapping[str, str]) -> dict[str, str]:
    """The metadata of the single file a folder came from (recorded in its sidecar): plain values
    as strings, in their order (a safetensors source's ``__metadata__``, a pickle's ``global_step``)."""
    try:
        plain = json.loads(sidecar_meta.get("assetkit.plain_metadata") or "{}")
    except ValueError:
        return {}
    if not isinstance(plain, dict):
        return {}
    return {k: v if isinstance(v, str) else str(v) for k, v in plain.items()
            if isinstance(v, bool | int | float | str)}


def write_single_file(plan: SingleFilePlan, asset: Asset, dest: Path, *, dtype: str | None = None,
                      overwrite: bool = False) -> dict[str, Any]:
    """Stream ``plan`` into one safetensors file with ModelSpec metadata (``hash_sha256`` of the
    tensor data as written, computed in the same pass)."""
    side, side_meta = _read_sidecar(Path(asset.path))

    def locate(name: str) -> tuple[Asset, str]:
        if name.startswith(SIDECAR + "/"):
            assert side is not None
            return side, name[len(SIDECAR) + 1:]
        return asset, name

    meta = _source_metadata(side_meta) if side_meta.get("assetkit.layout") == plan.layout else {}
    for key, value in _modelspec(plan, asset, "0" * 64).items():  # the source's own ModelSpec entries win
        meta.setdefault(key, value)
    try:
        digest = write_targets(Path(dest), plan.tensors, locate, dtype, meta, hash_key="modelspec.hash_sha256",
                                overwrite=overwrite)
    finally:
        if side is not None:
            side.close()
    meta["modelspec.hash_sha256"] = f"0x{digest}"
    return {"tensors": len(plan.tensors), "layout": plan.layout, "family": plan.family, "lacking": list(plan.lacking),
            "metadata": meta}



# ---- one entry point for the CLI -------------------------------------------------------------
def _open_layout_source(src: Path, variant: str | None = None) -> Asset:
    """A diffusers folder (its ``variant`` weights if given), or a checkpoint file opened for
    conversion (pickles scanned first)."""
    from ..formats import open_asset
    from .to_safetensors import open_source

    if Path(src).is_dir():
        return open_asset(src, variant=variant)
    return open_source(Path(src))


def _is_folder(asset: Asset) -> bool:
    return asset.format in ("diffusers", "diffusers-component")


def _whole_tensor(asset: Asset, name: str, new_name: str | None = None) -> TargetTensor:
    info = asset.tensors[name]
    return TargetTensor(new_name or name, info.dtype, info.shape, (SourcePart(name, 0, info.nbytes),))


def _component_prefix(layout: str, component: str) -> str:
    return _layouts()["single_file"].get(layout, {}).get(component, [""])[0]


def _replacement_tensors(spec: str, base_plan: DiffusersPlan, base: Asset) -> tuple[str, list[TargetTensor], Asset]:
    """``COMPONENT=PATH``: the replacement's tensors under the base file's original names."""
    component, sep, path = spec.partition("=")
    if not sep or not component or not path:
        raise AssetkitError(f"--replace {spec!r}: expected COMPONENT=PATH (e.g. vae=my_vae.safetensors)")
    if component not in base_plan.prefixes:
        raise LayoutError(f"--replace: a {base_plan.layout} file has no component {component!r} "
                          f"(has: {', '.join(base_plan.prefixes)})")
    prefix = base_plan.prefixes[component]
    family = base_plan.family
    other = _open_layout_source(Path(path))
    if other.format == "diffusers":
        plan = plan_diffusers_to_single_file(other)
        theirs = _component_prefix(plan.layout, component)
        targets = [TargetTensor(prefix + t.name[len(theirs):], t.dtype, t.shape, t.parts, t.transform)
                   for t in plan.tensors if t.parts[0].source.startswith(component + "/")]
    elif _is_folder(other):
        plan = plan_diffusers_to_single_file(other)
        theirs = plan.prefixes.get(plan.layout, "")  # a component folder goes back under its standalone prefix
        targets = [TargetTensor(prefix + t.name[len(theirs):], t.dtype, t.shape, t.parts, t.transform)
                   for t in plan.tensors]
    else:
        dplan = plan_single_file_to_diffusers(other, family=family)
        if component not in dplan.components:
            raise LayoutError(f"--replace: {path} holds no {component} (has: {', '.join(dplan.components)})")
        sub_prefix = dplan.prefixes.get(component, "")
        sources = sorted({p.source for t in dplan.components[component].tensors for p in t.parts})
        targets = [_whole_tensor(other, n, prefix + n[len(sub_prefix):]) for n in sources]
    have = {n: (i.dtype, i.shape) for n, i in base.tensors.items() if n.startswith(prefix)}
    bad = [f"{t.name} {list(t.shape)} (base {list(have[t.name][1])})" for t in targets
           if t.name in have and tuple(have[t.name][1]) != tuple(t.shape)]
    new = [t.name for t in targets if t.name not in have]
    if bad or new:
        problems = [*(f"shape {b}" for b in bad[:5]), *(f"no such tensor in the base: {n}" for n in new[:5])]
        raise LayoutError(f"--replace {component}: not compatible with the base file: " + "; ".join(problems))
    return prefix, targets, other


def _diffusers_named_component(asset: Asset) -> bool:
    """A UNet, VAE, ControlNet or SD3/Flux transformer alone, in diffusers names, as one file (not a folder)."""
    from ..probe import probe

    result = probe(asset)
    return result.kind in ("unet", "vae", "controlnet", "transformer") and result.layout == "diffusers"


def _original_names_plan(plan: DiffusersPlan, asset: Asset) -> SingleFilePlan:
    """A component file in diffusers names -> the same tensors under the original names (with the
    prefix registry/layouts.json gives that component alone); names no rule knows are kept as they are."""
    ((comp, (prefix, kind)),) = _layouts()["single_file"][plan.layout].items()  # one component
    rules = _rules_for(kind, plan.components[comp].config or {})
    source = {n: (i.dtype, i.shape) for n, i in asset.tensors.items()}
    mapped = map_names([r.prefixed(prefix, "") for r in rules], source, "to_original")
    kept = tuple(_whole_tensor(asset, n) for n in mapped.unmatched)
    return SingleFilePlan(plan.family, plan.layout, mapped.targets + kept, (), prefixes={comp: prefix},
                          extras=tuple(t.name for t in kept))


def convert_layout(source: Path, output: Path, *, to: str, family: str | None = None,
                   config_dir: Path | None = None, dtype: str | None = None, variant: str | None = None,
                   drop_extras: bool = False, component: str | None = None, replace: Iterable[str] = (),
                   overwrite: bool = False) -> dict[str, Any]:
    """``assetkit convert SRC OUT --to diffusers|single-file``: the layout conversions.

    * single file -> diffusers folder (``--component`` writes one component folder);
    * diffusers folder (pipeline or component) -> single file (``--component`` keeps one
      component, under its standalone original names);
    * single file -> single file with ``--replace COMPONENT=PATH`` (components swapped in, checked
      for shape compatibility) or ``--component`` (one component extracted).

    ``dtype`` is a safetensors id (``F16``...). Returns the summary the CLI prints.
    """
    import time

    start = time.perf_counter()
    if to not in ("diffusers", "single-file"):
        raise AssetkitError(f"--to {to!r}: use diffusers or single-file")
    from ..formats.dtypes import VARIANT_DTYPES

    named = VARIANT_DTYPES.get(variant or "")
    if to == "diffusers" and named is not None and dtype is not None and dtype != named:
        raise AssetkitError(f"--variant {variant} names {named} files; --dtype would write {dtype} data into them: "
                            "drop --dtype or choose the matching --variant")
    if variant == "fp16" and dtype is None:
        dtype = "F16"
    replace = list(replace)
    asset = _open_layout_source(Path(source), variant if to == "single-file" else None)
    try:
        if to == "diffusers":
            if replace:
                raise AssetkitError("--replace writes a single file: use --to single-file")
            if _is_folder(asset):
                raise AssetkitError("already a diffusers folder (use --to single-file, or --variant without --to)",
                                    where=str(source))
            plan = plan_single_file_to_diffusers(asset, family=family, config_dir=config_dir)
            summary = write_diffusers_folder(plan, asset, Path(output), dtype=dtype, variant=variant,
                                             drop_extras=drop_extras, overwrite=overwrite,
                                             components=[component] if component else None)
            summary.update({"to": "diffusers", "source": str(source), "output": str(output)})
        elif _is_folder(asset):
            if replace:
                raise AssetkitError("--replace takes a single file as the base")
            splan = plan_diffusers_to_single_file(asset)
            if component:
                prefix = _component_prefix(splan.layout, component)
                keep = [t for t in splan.tensors if t.parts[0].source.startswith(component + "/")]
                if not keep:
                    raise LayoutError(f"no component {component!r} in this folder", where=str(source))
                splan = SingleFilePlan(splan.family, component, tuple(
                    TargetTensor(t.name[len(prefix):], t.dtype, t.shape, t.parts, t.transform) for t in keep), ())
            summary = write_single_file(splan, asset, Path(output), dtype=dtype, overwrite=overwrite)
            summary.update({"to": "single-file", "source": str(source), "output": str(output)})
        elif not replace and not component and _diffusers_named_component(asset):
            splan = _original_names_plan(plan_single_file_to_diffusers(asset, family=family, config_dir=config_dir),
                                         asset)
            summary = write_single_file(splan, asset, Path(output), dtype=dtype, overwrite=overwrite)
            summary.update({"to": "single-file", "source": str(source), "output": str(output),
                            "extras": list(splan.extras)})
        else:
            plan = plan_single_file_to_diffusers(asset, family=family, config_dir=config_dir)
            targets = [_whole_tensor(asset, n) for n in asset.tensors]
            others: list[Asset] = []
            if component:
                prefix = plan.prefixes.get(component, "")
                if component not in plan.components or not plan.components[component].tensors:
                    raise LayoutError(f"no component {component!r} in this file (has: "
                                      f"{', '.join(c for c, p in plan.components.items() if p.tensors)})")
                names = sorted({p.source for t in plan.components[component].tensors for p in t.parts})
                targets = [_whole_tensor(asset, n, n[len(prefix):]) for n in names]
            replaced: dict[str, int] = {}
            sources: dict[str, Asset] = {}
            for spec in replace:
                prefix, new, other = _replacement_tensors(spec, plan, asset)
                tag = f"{len(sources)}:"
                sources[tag] = other
                others.append(other)
                new_by_name = {t.name: TargetTensor(t.name, t.dtype, t.shape,
                                                    tuple(SourcePart(tag + p.source, p.start, p.stop) for p in t.parts),
                                                    t.transform) for t in new}
                targets = [new_by_name.get(t.name, t) for t in targets]
                replaced[spec.partition("=")[0]] = len(new_by_name)
            splan = SingleFilePlan(plan.family, plan.layout, tuple(targets), ())

            def locate(name: str) -> tuple[Asset, str]:
                tag, sep, rest = name.partition(":")
                if sep and f"{tag}:" in sources:
                    src = sources[f"{tag}:"]
                    if _is_folder(src) and rest.startswith(SIDECAR + "/"):
                        side, _ = _read_sidecar(Path(src.path))
                        assert side is not None
                        others.append(side)
                        return side, rest[len(SIDECAR) + 1:]
                    return src, rest
                return asset, name

            metadata = {k: v for k, v in asset.metadata.items() if isinstance(v, str)}
            write_targets(Path(output), splan.tensors, locate, dtype,
                           metadata if asset.format == "safetensors" else None, overwrite=overwrite)
            for other in others:
                other.close()
            summary = {"to": "single-file", "source": str(source), "output": str(output), "tensors": len(targets),
                       "layout": plan.layout, "family": plan.family, "replaced": replaced, "component": component,
                       "lacking": []}
    finally:
        asset.close()
    summary["seconds"] = round(time.perf_counter() - start, 3)
    return summary
