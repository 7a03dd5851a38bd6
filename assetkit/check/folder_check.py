"""Checks of a diffusers folder for ``validate``: layout, configs, shards, variants, and weights
against the classes their configs describe.

Each model component's ``config.json`` gives its diffusers/transformers class, built on the meta
device to learn what it expects (:mod:`assetkit.check.model_classes`, the only part that imports
torch/diffusers, inside its functions); the weight files are then compared name by name.

Finding codes (stable): ``folder-*`` (layout), ``config-*`` (configs and config-vs-weights),
``shard-*`` (sharded index), ``variant-*``, ``tokenizer-*``, ``component-*``, plus the codes of the
file checks (``st-*``, torch container codes) and of :mod:`assetkit.check.numerics`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AssetkitError, FormatError
from ..findings import Finding, capped
from ..formats.base import Asset
from ..formats.diffusers_folder import (
    COMPONENT_MARKERS,
    WeightSet,
    choose_weight_set,
    find_weight_sets,
    is_index_file,
    is_shard_name,
    listed_components,
    load_json,
    read_model_index,
    read_weight_file,
    read_weight_set,
    unlisted_component_folders,
)
from ..formats.dtypes import DTYPES, VARIANT_DTYPES
from .model_classes import (
    LIST_LIMIT,
    Expectation,
    build_expectation,
    compare_weights,
    one_line,
    resolve_class,
)

__all__ = ["check_diffusers_folder"]

#: Files of which a tokenizer folder needs at least one.
TOKENIZER_VOCAB_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "spiece.model", "tokenizer.model",
                         "sentencepiece.bpe.model")


# ---- files and shards ---------------------------------------------------------------------------
def check_weight_file(path: Path, ext: str) -> list[Finding]:
    """The container rules of one weight file (safetensors or torch pickle)."""
    if ext == "safetensors":
        from ..formats.safetensors import check_safetensors

        return list(check_safetensors(path))
    from ..formats.torch_pickle import check_torch_container

    return list(check_torch_container(path))


def check_shard_index(weight_set: WeightSet, where: str) -> tuple[list[Finding], list[str]]:
    """Consistency of a sharded set: index parses, every map entry is in its shard, no tensor in
    two shards, no missing shard, no unreferenced shard, ``metadata.total_size`` right.
    Also runs the container rules on every shard. Returns (findings, checked)."""
    assert weight_set.index is not None
    index_path = weight_set.index
    findings: list[Finding] = []
    checked = [f"{where}: shard index {index_path.name}"]
    duplicate_keys: list[str] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                duplicate_keys.append(key)
            seen[key] = value
        return seen

    try:
        index = load_json(index_path, object_pairs_hook=pairs_hook)
    except FormatError as exc:
        return [Finding("shard-index-unreadable", "error", exc.message, f"{where}/{index_path.name}")], checked
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict):
        return [Finding("shard-index-invalid", "error", "the index has no 'weight_map' object",
                        f"{where}/{index_path.name}")], checked
    if duplicate_keys:
        findings.append(Finding("shard-duplicate-entry", "error",
                                f"{len(duplicate_keys)} key(s) appear more than once in the index: "
                                f"{capped(duplicate_keys, LIST_LIMIT)}", f"{where}/{index_path.name}"))
    bad_names = sorted({repr(s) for s in weight_map.values() if not is_shard_name(s)})
    if bad_names:
        findings.append(Finding("shard-index-invalid", "error",
                                f"the index names invalid shard files: {capped(bad_names, LIST_LIMIT)}",
                                f"{where}/{index_path.name}"))
        return findings, checked

    by_shard: dict[str, list[str]] = {}
    for tensor, shard in weight_map.items():
        by_shard.setdefault(shard, []).append(tensor)
    stored: dict[str, list[str]] = {}  # tensor -> shards that hold it
    nbytes: dict[str, int] = {}
    for shard, tensors in by_shard.items():
        shard_path = index_path.parent / shard
        if not shard_path.is_file():
            findings.append(Finding("shard-missing-file", "error",
                                    f"shard {shard} named by the index is missing ({len(tensors)} tensor(s) lost)",
                                    f"{where}/{shard}"))
            continue
        file_findings = check_weight_file(shard_path, weight_set.ext)
        findings.extend(file_findings)
        checked.append(f"{where}: container rules of {shard}")
        if any(f.failing for f in file_findings):
            continue
        try:
            with read_weight_file(shard_path, weight_set.ext) as shard_asset:
                infos = shard_asset.tensors
        except AssetkitError as exc:
            findings.append(Finding("shard-unreadable", "error", exc.message, f"{where}/{shard}"))
            continue
        for name, info in infos.items():
            stored.setdefault(name, []).append(shard)
            nbytes.setdefault(name, info.nbytes)

    missing_shards = {shard for shard in by_shard if not (index_path.parent / shard).is_file()}
    wrong_file, absent = [], []
    for tensor, shard in weight_map.items():
        if shard in missing_shards or shard in stored.get(tensor, []):
            continue
        if tensor in stored:
            wrong_file.append(f"{tensor} (index: {shard}, stored in {', '.join(stored[tensor])})")
        else:
            absent.append(tensor)
    if absent:
        findings.append(Finding("shard-missing-tensor", "error",
                                f"{len(absent)} tensor(s) listed in the index are in no shard: {capped(absent, LIST_LIMIT)}",
                                f"{where}/{index_path.name}"))
    if wrong_file:
        findings.append(Finding("shard-wrong-file", "error",
                                f"{len(wrong_file)} tensor(s) stored in another shard than the index says: "
                                f"{capped(wrong_file, 4)}", f"{where}/{index_path.name}"))
    duplicated = [f"{name} ({', '.join(shards)})" for name, shards in stored.items() if len(shards) > 1]
    if duplicated:
        findings.append(Finding("shard-duplicate-tensor", "error",
                                f"{len(duplicated)} tensor(s) stored in more than one shard: {capped(duplicated, 4)}",
                                f"{where}/{index_path.name}"))
    unmapped = [name for name in stored if name not in weight_map]
    if unmapped:
        findings.append(Finding("shard-unmapped-tensor", "warning",
                                f"{len(unmapped)} tensor(s) stored in shards but not in the index: {capped(unmapped, LIST_LIMIT)}",
                                f"{where}/{index_path.name}"))
    referenced = set(by_shard)
    stem = index_path.name.split(".", 1)[0]
    variant_part = f".{weight_set.variant}" if weight_set.variant else ""
    shard_re = re.compile(rf"^{re.escape(stem + variant_part)}-\d+-of-\d+\.{weight_set.ext}$")
    strays = sorted(c.name for c in index_path.parent.iterdir()
                    if c.is_file() and shard_re.match(c.name) and c.name not in referenced)
    if strays:
        findings.append(Finding("shard-unreferenced-file", "warning",
                                f"{len(strays)} shard file(s) not named by the index: {capped(strays, LIST_LIMIT)}",
                                f"{where}/{index_path.name}"))
    metadata = index.get("metadata")
    total_size = metadata.get("total_size") if isinstance(metadata, dict) else None
    if isinstance(total_size, int) and not missing_shards and not absent:
        actual_total = sum(nbytes.get(name, 0) for name in weight_map)
        if actual_total != total_size:
            findings.append(Finding("shard-total-size-mismatch", "warning",
                                    f"metadata.total_size is {total_size} but the mapped tensors take {actual_total} bytes",
                                    f"{where}/{index_path.name}"))
    return findings, checked


# ---- one component ---------------------------------------------------------------------------------
@dataclass
class ComponentResult:
    findings: list[Finding] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    #: variants with weights (None: plain files); None when the component holds no weights
    variants: set[str | None] | None = None


def _component_class(configs: dict[str, Any], listed: tuple[str | None, str | None] | None
                     ) -> tuple[str | None, str | None]:
    if listed is not None:
        return listed
    config = configs.get("config.json")
    if isinstance(config, dict):
        if isinstance(config.get("_class_name"), str):
            return "diffusers", config["_class_name"]
        architectures = config.get("architectures")
        if isinstance(architectures, list) and architectures and isinstance(architectures[0], str):
            return "transformers", architectures[0]
    scheduler = configs.get("scheduler_config.json")
    if isinstance(scheduler, dict) and isinstance(scheduler.get("_class_name"), str):
        return "diffusers", scheduler["_class_name"]
    tokenizer = configs.get("tokenizer_config.json")
    if isinstance(tokenizer, dict) and isinstance(tokenizer.get("tokenizer_class"), str):
        return "transformers", tokenizer["tokenizer_class"]
    return None, None


def check_component(folder: Path, name: str, listed: tuple[str | None, str | None] | None,
                    variant: str | None, numerics: bool) -> ComponentResult:
    """Every check of one component folder (see the module docstring)."""
    result = ComponentResult()
    findings, checked = result.findings, result.checked

    configs: dict[str, Any] = {}
    for child in sorted(folder.iterdir()):
        if child.is_file() and child.suffix == ".json" and not is_index_file(child.name):
            try:
                configs[child.name] = load_json(child)
            except FormatError as exc:
                findings.append(Finding("config-unreadable", "error", exc.message, f"{name}/{child.name}"))
            else:
                checked.append(f"{name}: {child.name} parses")
    for config_name in COMPONENT_MARKERS:
        if config_name in configs and not isinstance(configs[config_name], dict):
            findings.append(Finding("config-unreadable", "error", "not a JSON object", f"{name}/{config_name}"))
            del configs[config_name]

    library, class_name = _component_class(configs, listed)
    spec = resolve_class(library, class_name)
    config = configs.get("config.json")
    own_class = config.get("_class_name") if isinstance(config, dict) else None
    if spec.kind == "scheduler":
        scheduler = configs.get("scheduler_config.json")
        own_class = scheduler.get("_class_name") if isinstance(scheduler, dict) else None
    if listed is not None and isinstance(own_class, str) and class_name and own_class != class_name:
        findings.append(Finding("folder-class-mismatch", "warning",
                                f"model_index.json names {class_name} but the config names {own_class}", name))

    sets, foreign_notes = find_weight_sets(folder)
    findings.extend(Finding("folder-foreign-weights", "info", note, name) for note in foreign_notes)
    if sets:
        result.variants = {s.variant for s in sets}

    if spec.kind == "scheduler":
        if not (folder / "scheduler_config.json").is_file():
            findings.append(Finding("config-missing", "error", "scheduler folder has no scheduler_config.json", name))
    elif spec.kind == "tokenizer":
        if not any((folder / vocab).is_file() for vocab in TOKENIZER_VOCAB_FILES):
            findings.append(Finding("tokenizer-missing-files", "error",
                                    f"tokenizer folder has none of {', '.join(TOKENIZER_VOCAB_FILES)}", name))
        else:
            checked.append(f"{name}: tokenizer vocabulary present")
    elif spec.kind == "processor":
        if not any((folder / f).is_file() for f in ("preprocessor_config.json", "processor_config.json")):
            findings.append(Finding("config-missing", "error",
                                    f"{class_name} folder has no preprocessor_config.json", name))
    elif spec.kind == "unknown" and class_name and (sets or listed is not None):
        findings.append(Finding("config-unchecked-class", "warning",
                                f"{library}.{class_name} is not a diffusers/transformers class assetkit knows; "
                                "its weights are not compared (code from the folder is never run)", name))

    expectation: Expectation | None = None
    if spec.kind == "model":
        if not (folder / "config.json").is_file():
            findings.append(Finding("config-missing", "error", f"{class_name} component has no config.json", name))
        elif isinstance(config, dict):
            try:
                expectation = build_expectation(spec, config)
            except Exception as exc:  # noqa: BLE001 - any failure of the class on this config is the finding
                findings.append(Finding("config-invalid", "error",
                                        f"{class_name} cannot be built from config.json: {one_line(exc)}",
                                        f"{name}/config.json"))
        if not sets:
            findings.append(Finding("component-missing-weights", "error",
                                    f"{class_name} component has no weight files", name))

    if not sets:
        return result
    if variant is not None:
        chosen, _ = choose_weight_set(sets, variant)
        if chosen is None or chosen.variant != variant:
            present = sorted(v or "plain" for v in result.variants or ())
            findings.append(Finding("variant-missing", "error",
                                    f"no '{variant}' variant weights (has: {', '.join(present)})", name))
        to_check = [chosen] if chosen is not None else []
    else:
        if None not in (result.variants or {None}):
            found = ", ".join(sorted(v for v in result.variants or () if v))
            findings.append(Finding("variant-only", "warning",
                                    f"only variant weights ({found}); diffusers loads them only with variant=...",
                                    name))
        # every weight set present is checked: the plain one and each variant (preferred file per variant)
        to_check = []
        seen_variants: set[str | None] = set()
        for weight_set in sets:
            if weight_set.variant not in seen_variants:
                seen_variants.add(weight_set.variant)
                to_check.append(weight_set)
        for weight_set in sets:
            if weight_set not in to_check:
                to_check.append(weight_set)
    for weight_set in to_check:
        _check_weight_set(weight_set, name, expectation, numerics, result)
    return result


def _check_weight_set(weight_set: WeightSet, name: str, expectation: Expectation | None, numerics: bool,
                      result: ComponentResult) -> None:
    where = f"{name}/{weight_set.label}"
    findings, checked = result.findings, result.checked
    if weight_set.sharded:
        shard_findings, shard_checked = check_shard_index(weight_set, name)
        findings.extend(shard_findings)
        checked.extend(shard_checked)
        # an unusable index or a shard breaking its container rules stops here; missing shards or
        # tensors do not: the comparison then names the weights diffusers would leave uninitialised
        blocking = {"shard-index-unreadable", "shard-index-invalid", "shard-unreadable"}
        structure_ok = not any(f.failing and (f.code in blocking or not f.code.startswith("shard-"))
                               for f in shard_findings)
    else:
        file_findings = check_weight_file(weight_set.files[0], weight_set.ext)
        findings.extend(file_findings)
        checked.append(f"{name}: container rules of {weight_set.label}")
        structure_ok = not any(f.failing for f in file_findings)
    if not structure_ok:
        return
    try:
        tensors, _, _ = read_weight_set(weight_set)
    except AssetkitError as exc:
        findings.append(Finding("component-unreadable", "error", str(exc), where))
        return
    if expectation is not None:
        findings.extend(compare_weights(expectation, {n: i.shape for n, i in tensors.items()}, where))
        checked.append(f"{name}: {weight_set.label} against {expectation.class_name} "
                       f"({len(tensors)} tensors, {len(expectation.shapes)} expected)")
    wanted = VARIANT_DTYPES.get(weight_set.variant or "")
    if wanted is not None:
        floats = [i.dtype for i in tensors.values() if DTYPES[i.dtype].is_float]
        wrong = sorted({d for d in floats if d != wanted})
        if wrong:
            count = sum(1 for d in floats if d != wanted)
            findings.append(Finding("variant-dtype-mismatch", "error",
                                    f"'{weight_set.variant}' variant holds {count} of {len(floats)} float tensor(s) "
                                    f"as {', '.join(wrong)}, not {wanted}", where))
    if numerics:
        from .numerics import check_numerics

        holder = Asset(path=weight_set.files[0].parent, format="diffusers-component", tensors=tensors)
        try:
            findings.extend(check_numerics(holder, where=where))
        finally:
            holder.close()
        checked.append(f"{name}: numerics of {weight_set.label}")


# ---- the folder ----------------------------------------------------------------------------------
def check_diffusers_folder(root: Path, variant: str | None = None, numerics: bool = False
                           ) -> tuple[list[Finding], list[str]]:
    """All checks of a pipeline or component folder: (findings, what was checked).

    Raises :class:`AssetkitError` when the folder cannot be read at all (no diffusers layout,
    broken or non-object ``model_index.json``).
    """
    root = Path(root)
    model_index = read_model_index(root)
    if model_index is None:
        result = check_component(root, root.name, None, variant, numerics)
        return result.findings, result.checked
    findings: list[Finding] = []
    checked: list[str] = ["model_index.json parses"]
    pipeline_class = model_index.get("_class_name")
    if not isinstance(pipeline_class, str):
        findings.append(Finding("folder-no-class-name", "error",
                                "model_index.json has no _class_name (diffusers cannot pick the pipeline class)",
                                "model_index.json"))
    elif resolve_class("diffusers", pipeline_class).kind != "pipeline":
        findings.append(Finding("folder-unknown-pipeline-class", "warning",
                                f"_class_name {pipeline_class!r} is not a diffusers pipeline class",
                                "model_index.json"))

    for key, value in model_index.items():
        if key.startswith("_") or not isinstance(value, list):
            continue
        if len(value) != 2 or (value[0] is None) != (value[1] is None) or not all(
            v is None or isinstance(v, str) for v in value
        ):
            findings.append(Finding("folder-bad-entry", "error",
                                    f"entry {key!r} is not a [library, class] pair: {value!r}", "model_index.json"))

    listed = listed_components(model_index)
    checked.append(f"model_index.json: {len(listed)} component(s) listed against the subfolders")
    variants_by_component: dict[str, set[str | None]] = {}
    for name, pair in listed.items():
        folder = root / name
        if not folder.is_dir():
            findings.append(Finding("folder-missing-component", "error",
                                    f"component {name!r} ({pair[0]}.{pair[1]}) is listed in model_index.json "
                                    "but its folder is missing", name))
            continue
        result = check_component(folder, name, pair, variant, numerics)
        findings.extend(result.findings)
        checked.extend(result.checked)
        if result.variants is not None:
            variants_by_component[name] = result.variants
    for name in unlisted_component_folders(root, listed):
        findings.append(Finding("folder-unlisted-component", "warning",
                                f"folder {name!r} looks like a component but model_index.json does not list it",
                                name))
    if variant is None:
        all_variants = sorted({v for vs in variants_by_component.values() for v in vs if v is not None})
        for name_of_variant in all_variants:
            lacking = sorted(n for n, vs in variants_by_component.items() if name_of_variant not in vs)
            if lacking:
                findings.append(Finding("variant-incomplete", "warning",
                                        f"variant '{name_of_variant}' exists for some components but not for "
                                        f"{', '.join(lacking)}", "model_index.json"))
    return findings, checked
