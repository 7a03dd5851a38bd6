"""diffusers folders: a pipeline (``model_index.json`` + component subfolders) or one component.

Reads the layout only: JSON configs, which weight files a component holds (plain, ``*.fp16``
variants, sharded with an index, ``.bin`` through our pickle reader) and the tensor index of the
chosen weights. Never imports torch or diffusers.

Weight selection follows what diffusers does when it loads a folder: with a variant asked for,
the files of that variant; without one, the plain files, and when a component only has variant
files, those (with a note). Within one variant: sharded safetensors, single safetensors, sharded
``.bin``, single ``.bin``, first match wins.

The reader is lenient where it can be (a listed component whose folder is missing, a shard the
index names but that is absent: a note in :attr:`Asset.notes`) and strict where it cannot read
(broken JSON, a broken weight file: :class:`~assetkit.errors.FormatError`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FormatError, UnsupportedFormatError
from ..findings import capped
from .base import Asset, TensorInfo
from .sniff import CHECKPOINT_SUFFIXES as _CHECKPOINT_SUFFIXES

__all__ = [
    "COMPONENT_MARKERS",
    "WeightSet",
    "choose_weight_set",
    "find_weight_sets",
    "is_index_file",
    "is_shard_name",
    "listed_components",
    "load_json",
    "not_diffusers_folder_error",
    "read_component_folder",
    "read_diffusers_folder",
    "read_model_index",
    "read_weight_file",
    "read_shard_map",
    "read_weight_set",
    "unlisted_component_folders",
]

#: Files whose presence makes a folder (without model_index.json) a diffusers component.
COMPONENT_MARKERS = ("config.json", "scheduler_config.json", "tokenizer_config.json", "preprocessor_config.json")

#: Stems of the weight files diffusers and transformers write.
WEIGHT_BASES = ("diffusion_pytorch_model", "model", "pytorch_model")
_BASE = "|".join(WEIGHT_BASES)
_VARIANT = r"[A-Za-z0-9_]+"
_SINGLE_RE = re.compile(rf"^(?P<base>{_BASE})(?:\.(?P<variant>{_VARIANT}))?\.(?P<ext>safetensors|bin)$")
# diffusers and transformers write ``<base>.safetensors.index.<variant>.json``; some repositories
# hold ``<base>.<variant>.safetensors.index.json``: both are read.
_INDEX_RE = re.compile(
    rf"^(?P<base>{_BASE})(?:\.(?P<v1>{_VARIANT}))?\.(?P<ext>safetensors|bin)\.index(?:\.(?P<v2>{_VARIANT}))?\.json$"
)
_SHARD_RE = re.compile(
    rf"^(?P<base>{_BASE})(?:\.(?P<variant>{_VARIANT}))?-\d+-of-\d+\.(?P<ext>safetensors|bin)$"
)
#: Files that hold weights in a format assetkit does not read (reported in notes).
FOREIGN_WEIGHT_SUFFIXES = (".msgpack", ".h5", ".onnx", ".gguf", ".pb")
#: Names listed in a note before "(+N more)".
NOTE_LIST_LIMIT = 5
#: Loose checkpoint files: a folder of these alone is not a diffusers folder.
CHECKPOINT_SUFFIXES = _CHECKPOINT_SUFFIXES


@dataclass
class WeightSet:
    """The weight files of one component for one variant (``None``: the plain files)."""

    variant: str | None
    ext: str  #: "safetensors" or "bin"
    files: list[Path] = field(default_factory=list)  #: the single file, or the shards in index order
    index: Path | None = None  #: the ``*.index.json`` of a sharded set

    @property
    def sharded(self) -> bool:
        return self.index is not None

    @property
    def label(self) -> str:
        """A short human name: the file name, or the index file name for shards."""
        return (self.index or self.files[0]).name if (self.index or self.files) else "(no files)"

    @property
    def priority(self) -> int:
        """Lower is preferred: sharded safetensors, safetensors, sharded bin, bin (as diffusers)."""
        return (0 if self.ext == "safetensors" else 2) + (0 if self.sharded else 1)


# ---- JSON ----------------------------------------------------------------------------------------
def load_json(path: Path, *, object_pairs_hook: Any = None) -> Any:
    """Parse a JSON file; :class:`FormatError` names the file and the line/column of a syntax error."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"not UTF-8 text (byte {exc.start})", where=str(path), code="diffusers-json") from None
    except OSError as exc:
        raise FormatError(f"cannot read: {exc.strerror or exc}", where=str(path), code="diffusers-json") from None
    try:
        return json.loads(text, object_pairs_hook=object_pairs_hook)
    except json.JSONDecodeError as exc:
        raise FormatError(
            f"broken JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", where=str(path), code="diffusers-json"
        ) from None
    except RecursionError:
        raise FormatError("broken JSON: nested too deeply", where=str(path), code="diffusers-json") from None


def is_index_file(name: str) -> bool:
    """True for a sharded-weights index file name (``model.safetensors.index.json`` and variants)."""
    return _INDEX_RE.match(name) is not None


# ---- model_index.json ----------------------------------------------------------------------------
def listed_components(model_index: dict[str, Any]) -> dict[str, tuple[str | None, str | None]]:
    """Components named in ``model_index.json``: name -> (library, class name).

    Entries set to ``null`` or ``[null, null]`` (an optional component left out) are skipped;
    keys starting with ``_`` are pipeline attributes, not components; other values that are not
    a ``[library, class]`` pair (booleans such as ``requires_safety_checker``) are skipped too.
    """
    listed: dict[str, tuple[str | None, str | None]] = {}
    for key, value in model_index.items():
        if key.startswith("_") or not isinstance(value, list) or len(value) != 2:
            continue
        library, class_name = value
        if library is None and class_name is None:
            continue
        listed[key] = (
            library if isinstance(library, str) else None,
            class_name if isinstance(class_name, str) else None,
        )
    return listed


def looks_like_component(folder: Path) -> bool:
    """A subfolder that holds a component config or diffusers-named weights."""
    if not folder.is_dir():
        return False
    for child in folder.iterdir():
        name = child.name
        if name in COMPONENT_MARKERS or _SINGLE_RE.match(name) or _INDEX_RE.match(name) or _SHARD_RE.match(name):
            return True
    return False


def unlisted_component_folders(root: Path, listed: dict[str, Any]) -> list[str]:
    """Subfolders of a pipeline that look like components but are not in ``model_index.json``."""
    return sorted(
        child.name
        for child in root.iterdir()
        if child.is_dir() and not child.name.startswith(".") and child.name not in listed
        and looks_like_component(child)
    )


# ---- weights -------------------------------------------------------------------------------------
def find_weight_sets(folder: Path) -> tuple[list[WeightSet], list[str]]:
    """Every weight set in a component folder, preferred first within each variant, plus notes.

    Shards are taken from the index's ``weight_map`` (in first-seen order); a broken index gives
    a set with no files here and raises in :func:`read_weight_set`.
    """
    sets: list[WeightSet] = []
    notes: list[str] = []
    names = sorted(child.name for child in folder.iterdir() if child.is_file())
    for name in names:
        path = folder / name
        single = _SINGLE_RE.match(name)
        if single:
            sets.append(WeightSet(single["variant"], single["ext"], [path]))
            continue
        index = _INDEX_RE.match(name)
        if index:
            variant = index["v2"] or index["v1"]
            try:
                shards = shard_files(path)
            except FormatError:  # reported by read_weight_set (reader) or the folder checks (validate)
                shards = []
            sets.append(WeightSet(variant, index["ext"], shards, index=path))
            continue
        if name.lower().endswith(FOREIGN_WEIGHT_SUFFIXES):
            notes.append(f"{name}: weights in a format assetkit does not read (ignored)")
    sets.sort(key=lambda s: (s.variant or "", s.priority))
    return sets, notes


def is_shard_name(name: Any) -> bool:
    """True for a shard name an index may give: a plain file name in the index's own folder."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


def read_shard_map(index_path: Path) -> dict[str, str]:
    """An index's ``weight_map`` (tensor name -> shard file name); strict: a broken index raises."""
    index = load_json(index_path)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict):
        raise FormatError("sharded index has no 'weight_map' object", where=str(index_path), code="diffusers-index")
    for shard in weight_map.values():
        if not is_shard_name(shard):
            raise FormatError(
                f"sharded index names an invalid shard file {shard!r}", where=str(index_path), code="diffusers-index"
            )
    return weight_map


def shard_files(index_path: Path) -> list[Path]:
    """The shard files an index names, in first-seen order (strict: a broken index raises)."""
    return [index_path.parent / shard for shard in dict.fromkeys(read_shard_map(index_path).values())]


def choose_weight_set(
    sets: list[WeightSet], variant: str | None
) -> tuple[WeightSet | None, list[str]]:
    """The set diffusers would load for ``variant``, and notes on the choice."""
    notes: list[str] = []
    if not sets:
        return None, notes
    by_variant: dict[str | None, list[WeightSet]] = {}
    for weight_set in sets:
        by_variant.setdefault(weight_set.variant, []).append(weight_set)
    if variant is not None and variant in by_variant:
        chosen = by_variant[variant][0]
    elif None in by_variant:
        chosen = by_variant[None][0]
        if variant is not None:
            notes.append(f"no '{variant}' variant weights; using the plain weights {chosen.label}")
    else:
        available = sorted(v for v in by_variant if v is not None)
        chosen = by_variant[available[0]][0]
        if variant is not None:
            notes.append(f"no '{variant}' variant weights; using the '{chosen.variant}' variant {chosen.label}")
        else:
            notes.append(f"only variant weights ({', '.join(available)}); using the '{chosen.variant}' variant")
    skipped = [s.label for s in by_variant[chosen.variant] if s is not chosen]
    if skipped:
        notes.append(f"using {chosen.label}; also present, not read: {', '.join(skipped)}")
    return chosen, notes


def read_weight_file(path: Path, ext: str) -> Asset:
    """One weight file of a set: ``ext`` "safetensors" (strict reader) or "bin" (torch pickle reader)."""
    if ext == "safetensors":
        from .safetensors import read_safetensors

        return read_safetensors(path)
    from .torch_pickle import read_torch_file

    return read_torch_file(path)


def read_weight_set(weight_set: WeightSet) -> tuple[dict[str, TensorInfo], dict[str, Any], list[str]]:
    """Tensors (name -> info) and metadata of a weight set, plus notes on shard inconsistencies.

    Like diffusers, every tensor found in a shard is taken; weight_map entries missing from
    their shard, tensors absent from the map and missing shard files become notes.
    """
    tensors: dict[str, TensorInfo] = {}
    metadata: dict[str, Any] = {}
    notes: list[str] = []
    weight_map = read_shard_map(weight_set.index) if weight_set.index is not None else {}
    for file in weight_set.files:
        if not file.is_file():
            lost = sum(1 for shard in weight_map.values() if shard == file.name)
            notes.append(f"{file.name}: shard file missing ({lost} tensor(s) of the index lost)")
            continue
        asset = read_weight_file(file, weight_set.ext)
        for key, value in asset.metadata.items():
            metadata.setdefault(key, value)
        for name, info in asset.tensors.items():
            if name in tensors:
                notes.append(f"{name}: tensor in more than one shard ({tensors[name].file.name}, {file.name})")
            tensors[name] = info
        asset.close()
    if weight_map:
        absent = [name for name, shard in weight_map.items() if name not in tensors]
        if absent:
            notes.append(f"{len(absent)} tensor(s) listed in {weight_set.index.name} are in no shard: {capped(absent, NOTE_LIST_LIMIT)}")
        unmapped = [name for name in tensors if name not in weight_map]
        if unmapped:
            notes.append(f"{len(unmapped)} tensor(s) in shards but not in {weight_set.index.name}: {capped(unmapped, NOTE_LIST_LIMIT)}")
    return tensors, metadata, notes


# ---- configs -------------------------------------------------------------------------------------
def component_configs(folder: Path) -> dict[str, Any]:
    """Every JSON file of a component folder except weight indexes, parsed (name -> value)."""
    configs: dict[str, Any] = {}
    for child in sorted(folder.iterdir()):
        if child.is_file() and child.suffix == ".json" and not is_index_file(child.name):
            configs[child.name] = load_json(child)
    return configs


# ---- readers -------------------------------------------------------------------------------------
def read_component_folder(folder: Path, variant: str | None = None) -> Asset:
    """One component folder (config + weights, or a scheduler/tokenizer folder) as an Asset."""
    folder = Path(folder)
    asset = Asset(path=folder, format="diffusers-component")
    asset.configs = component_configs(folder)
    sets, notes = find_weight_sets(folder)
    asset.notes.extend(notes)
    chosen, choice_notes = choose_weight_set(sets, variant)
    asset.notes.extend(choice_notes)
    if chosen is None:
        if "config.json" in asset.configs:
            asset.notes.append("no weights found")
        return asset
    tensors, metadata, read_notes = read_weight_set(chosen)
    asset.tensors = tensors
    asset.metadata = metadata
    asset.notes.extend(read_notes)
    asset.files = ([chosen.index] if chosen.index else []) + [f for f in chosen.files if f.is_file()]
    asset.missing = [f for f in chosen.files if not f.is_file()]
    return asset


def not_diffusers_folder_error(folder: Path) -> UnsupportedFormatError:
    entries = [child for child in folder.iterdir() if not child.name.startswith(".")]
    if not entries:
        return UnsupportedFormatError("empty folder: no model_index.json, config.json or weights", where=str(folder))
    checkpoints = sorted(c.name for c in entries if c.is_file() and c.suffix.lower() in CHECKPOINT_SUFFIXES)
    if checkpoints:
        return UnsupportedFormatError(
            f"not a diffusers folder (no model_index.json or config.json); it holds checkpoint file(s) "
            f"{capped(checkpoints, 3)}: inspect, scan or validate the file itself",
            where=str(folder),
        )
    return UnsupportedFormatError("not a diffusers folder: no model_index.json, config.json or weights",
                                  where=str(folder))


def read_model_index(root: Path) -> dict[str, Any] | None:
    """A pipeline folder's parsed ``model_index.json``; None for a component folder (a
    :data:`COMPONENT_MARKERS` file and no ``model_index.json``).

    Raises :class:`UnsupportedFormatError` for a folder that is neither, :class:`FormatError` for
    a broken ``model_index.json`` or one that is not a JSON object.
    """
    index_path = root / "model_index.json"
    if not index_path.is_file():
        if any((root / marker).is_file() for marker in COMPONENT_MARKERS):
            return None
        raise not_diffusers_folder_error(root)
    model_index = load_json(index_path)
    if not isinstance(model_index, dict):
        raise FormatError("model_index.json is not a JSON object", where=str(index_path), code="diffusers-json")
    return model_index


def read_diffusers_folder(path: str | Path, variant: str | None = None) -> Asset:
    """A diffusers pipeline folder (``model_index.json``) or a single component folder, lazily.

    Pipeline: format ``"diffusers"``, ``components`` maps each listed component present on disk
    to its own ``"diffusers-component"`` Asset; ``tensors`` holds ``"<component>/<name>"`` ->
    the component's very TensorInfo objects; ``configs`` holds ``model_index.json`` and every
    component JSON file under its relative path (``unet/config.json``); ``files`` lists every
    weight file read (index files included).
    """
    root = Path(path)
    if not root.is_dir():
        raise UnsupportedFormatError("not a folder", where=str(root))
    model_index = read_model_index(root)
    if model_index is None:
        return read_component_folder(root, variant)
    pipeline = Asset(path=root, format="diffusers")
    pipeline.configs["model_index.json"] = model_index
    listed = listed_components(model_index)
    for name, (library, class_name) in listed.items():
        folder = root / name
        if not folder.is_dir():
            pipeline.notes.append(f"{name}: listed in model_index.json ({library}.{class_name}) but its folder is missing")
            pipeline.missing.append(folder)
            continue
        component = read_component_folder(folder, variant)
        pipeline.components[name] = component
        for key, value in component.configs.items():
            pipeline.configs[f"{name}/{key}"] = value
        for tensor_name, info in component.tensors.items():
            pipeline.tensors[f"{name}/{tensor_name}"] = info
        pipeline.files.extend(component.files)
        pipeline.missing.extend(component.missing)
        pipeline.notes.extend(f"{name}: {note}" for note in component.notes)
    for name in unlisted_component_folders(root, listed):
        pipeline.notes.append(f"{name}: component folder not listed in model_index.json (not read)")
    return pipeline
