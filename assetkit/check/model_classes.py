"""What a diffusers/transformers model class expects of its weights, from a ``config.json``.

A component's class is looked up by name on the ``diffusers`` / ``transformers`` modules only
and must be a model class (``ModelMixin`` / ``PreTrainedModel``): nothing from a folder is ever
imported or executed, no remote code is trusted. It is built on the meta device (no memory, no
weights read) to learn every parameter and persistent buffer it expects, with its shape
(:class:`Expectation`); :func:`compare_weights` then compares a weight file's names and shapes
with it. torch, diffusers and transformers are imported inside the functions that need them,
never at module import. Used by :mod:`assetkit.check.folder_check`.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..findings import Finding, capped, truncated

__all__ = ["LIST_LIMIT", "ClassSpec", "Expectation", "build_expectation", "compare_weights", "one_line",
           "resolve_class"]

#: Names listed in a message before "(+N more)".
LIST_LIMIT = 8
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    text = truncated(text, limit)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---- class lookup ------------------------------------------------------------------------------
@dataclass
class ClassSpec:
    """What a ``[library, class]`` pair names: ``kind`` is model, scheduler, tokenizer, processor,
    pipeline or unknown; ``cls`` is the class object for the known kinds."""

    library: str | None
    name: str | None
    kind: str
    cls: Any = None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence diffusers/transformers logging and Python warnings while classes are built."""
    restore: list[Callable[[], None]] = []
    for module_name in ("diffusers.utils.logging", "transformers.utils.logging"):
        try:
            logging_module = importlib.import_module(module_name)
        except ImportError:
            continue
        level = logging_module.get_verbosity()
        logging_module.set_verbosity_error()
        restore.append(lambda m=logging_module, lv=level: m.set_verbosity(lv))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for undo in restore:
            undo()


#: The base classes that tell a component's kind, per library (looked up by name on the module).
_BASES = {
    "diffusers": [("model", "ModelMixin"), ("scheduler", "SchedulerMixin"), ("pipeline", "DiffusionPipeline")],
    "transformers": [("model", "PreTrainedModel"), ("tokenizer", "PreTrainedTokenizerBase"),
                     ("processor", "ImageProcessingMixin"), ("processor", "FeatureExtractionMixin"),
                     ("processor", "ProcessorMixin")],
}


def resolve_class(library: str | None, name: str | None) -> ClassSpec:
    """Look ``name`` up on the diffusers or transformers module (only there) and classify it."""
    if library not in ("diffusers", "transformers") or not name or not _IDENTIFIER.fullmatch(name):
        return ClassSpec(library, name, "unknown")
    try:
        with _quiet():
            module = importlib.import_module(library)
            cls = getattr(module, name, None)
            bases = [(kind, getattr(module, base_name, None)) for kind, base_name in _BASES[library]]
    except Exception:  # noqa: BLE001 - a backend missing or broken: the class is unknown to us
        return ClassSpec(library, name, "unknown")
    if isinstance(cls, type):
        for kind, base in bases:
            if isinstance(base, type) and issubclass(cls, base):
                return ClassSpec(library, name, kind, cls)
    return ClassSpec(library, name, "unknown")


# ---- what a class expects ----------------------------------------------------------------------
@dataclass
class Expectation:
    """Every state-dict entry a class built from a config expects (name -> shape), and the
    class's own rules for keys it tolerates (ignored patterns, tied weights, key renamings)."""

    class_name: str
    shapes: dict[str, tuple[int, ...]]
    ignore_missing: list[re.Pattern[str]] = field(default_factory=list)
    ignore_unexpected: list[re.Pattern[str]] = field(default_factory=list)
    tied: dict[str, str] = field(default_factory=dict)  #: target -> source
    #: checkpoint keys -> (renamed keys, keys produced by a converter whose shape may differ)
    rename: Callable[[dict[str, tuple[int, ...]]], tuple[dict[str, tuple[int, ...]], set[str]]] | None = None


def _patterns(values: Any) -> list[re.Pattern[str]]:
    compiled = []
    for value in values or ():
        with contextlib.suppress(re.error, TypeError):
            compiled.append(re.compile(value))
    return compiled


def build_expectation(spec: ClassSpec, config: dict[str, Any]) -> Expectation:
    """Instantiate ``spec.cls`` from ``config`` on the meta device and record its state dict.

    Raises whatever the class raises for a bad config (the caller reports ``config-invalid``).
    """
    import torch

    with _quiet(), torch.device("meta"):
        if spec.library == "diffusers":
            model = spec.cls.from_config(dict(config))
        else:
            config_object = spec.cls.config_class.from_dict(dict(config))
            model = spec.cls(config_object)
    shapes = {name: tuple(int(d) for d in tensor.shape) for name, tensor in model.state_dict().items()}
    expectation = Expectation(type(model).__name__, shapes)
    if spec.library == "diffusers":
        expectation.ignore_unexpected = _patterns(getattr(model, "_keys_to_ignore_on_load_unexpected", None))
        fix = getattr(model, "_fix_state_dict_keys_on_load", None)
        if callable(fix):
            def rename(actual: dict[str, tuple[int, ...]]) -> tuple[dict[str, tuple[int, ...]], set[str]]:
                from collections import OrderedDict

                renamed = OrderedDict(actual)
                fix(renamed)  # diffusers' own fix-up of deprecated attention names; works on keys only
                return dict(renamed), set()

            expectation.rename = rename
    else:
        _transformers_rules(model, expectation)
    return expectation


def _transformers_rules(model: Any, expectation: Expectation) -> None:
    """transformers' load-time tolerances: ignore patterns, tied weights, key renamings."""
    unexpected = set(getattr(model, "_keys_to_ignore_on_load_unexpected", None) or ())
    buffers = [name for name, _ in model.named_buffers()]
    if any(name.endswith("position_ids") for name in buffers):
        unexpected.add(r"(^|\.)position_ids$")  # persistent in old checkpoints, not any more
    if any(name.endswith("rotary_emb.inv_freq") for name in buffers):
        unexpected.add(r"rotary_emb\.inv_freq")
    expectation.ignore_unexpected = _patterns(unexpected)
    expectation.ignore_missing = _patterns(getattr(model, "_keys_to_ignore_on_load_missing", None))
    expectation.tied = dict(getattr(model, "all_tied_weights_keys", None) or {})
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightRenaming, rename_source_key

        transforms = get_model_conversion_mapping(model, None, None)
    except Exception:  # noqa: BLE001 - an older/newer transformers: compare names as they are
        return
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if not isinstance(t, WeightRenaming)]
    prefix = getattr(model, "base_model_prefix", None) or None
    meta_shapes = expectation.shapes

    def rename(actual: dict[str, tuple[int, ...]]) -> tuple[dict[str, tuple[int, ...]], set[str]]:
        renamed: dict[str, tuple[int, ...]] = {}
        converted: set[str] = set()
        for key, shape in actual.items():
            try:
                new_key, converter_pattern = rename_source_key(key, renamings, converters, prefix, meta_shapes)
            except Exception:  # noqa: BLE001 - keep the key as stored
                new_key, converter_pattern = key, None
            renamed[new_key] = shape
            if converter_pattern is not None:
                converted.add(new_key)
        return renamed, converted

    expectation.rename = rename


def compare_weights(expectation: Expectation, actual: dict[str, tuple[int, ...]], where: str) -> list[Finding]:
    """Missing, unexpected and wrongly shaped weights (one finding per kind, names capped)."""
    converted: set[str] = set()
    if expectation.rename is not None:
        actual, converted = expectation.rename(dict(actual))
    expected = expectation.shapes
    missing = [
        name for name in expected
        if name not in actual
        and not any(p.search(name) for p in expectation.ignore_missing)
        and not (name in expectation.tied and expectation.tied[name] in actual)
    ]
    unexpected = [
        name for name in actual
        if name not in expected and not any(p.search(name) for p in expectation.ignore_unexpected)
    ]
    mismatched = [
        f"{name} {_shape(actual[name])} != expected {_shape(expected[name])}"
        for name in expected
        if name in actual and name not in converted and tuple(actual[name]) != expected[name]
    ]
    cls = expectation.class_name
    findings = []
    if missing:
        findings.append(Finding(
            "config-missing-weight", "error",
            f"{len(missing)} of {len(expected)} weight(s) that {cls} (built from config.json) expects are "
            f"missing: {capped(missing, LIST_LIMIT)}", where))
    if unexpected:
        findings.append(Finding(
            "config-unexpected-weight", "error",
            f"{len(unexpected)} weight(s) that {cls} (built from config.json) has no place for: {capped(unexpected, LIST_LIMIT)}",
            where))
    if mismatched:
        findings.append(Finding(
            "config-shape-mismatch", "error",
            f"{len(mismatched)} weight(s) shaped differently from what {cls} (built from config.json) expects: "
            f"{capped(mismatched, 4)}", where))
    return findings


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"
