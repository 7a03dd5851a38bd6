"""Pipeline specs (YAML): what to assemble and how to smoke-test it.

A spec names a base model and the components laid over it; every name is a registry name or a
path (relative paths are relative to the spec file). Unknown keys and wrong types are errors that
name the line. Light: imports neither torch nor diffusers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AssetkitError

DTYPES = ("auto", "fp32", "fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda")
TASKS = ("text-to-image", "image-to-image", "inpainting")

#: The role of the base's own configs (``base: {name: FILE, config: DIR}``): pinned by a lock like
#: any component, read by the single-file conversion, never scanned or probed as a checkpoint.
BASE_CONFIG_ROLE = "base_config"

#: The one table of numeric limits, for the spec and for ``assetkit smoke`` (``--steps``, ``--size``):
#: key -> (lowest, highest) allowed. Height and width must also be multiples of :data:`SIZE_MULTIPLE`.
LIMITS: dict[str, tuple[float, float]] = {
    "steps": (1, 1000), "height": (8, 4096), "width": (8, 4096), "seed": (0, 2**64 - 1),
    "guidance_scale": (0, 100), "scale": (-100, 100)}
SIZE_MULTIPLE = 8


def limit_problem(key: str, value: float) -> str | None:
    """What is wrong with ``value`` for the limited field ``key`` (``steps``, ``height``, ``width``,
    ``seed``, ``guidance_scale``, ``scale``), or None when it is allowed."""
    low, high = LIMITS[key]
    if not low <= value <= high:
        return f"must be between {low:g} and {high:g}, not {value:g}" if key != "seed" else \
            f"must be between 0 and 2**64 - 1, not {value}"
    if key in ("height", "width") and value % SIZE_MULTIPLE:
        return f"must be a multiple of {SIZE_MULTIPLE}, not {value}"
    return None


class SpecError(AssetkitError):
    """A spec (or lock) that cannot be read: names the file and line."""


@dataclass
class Adapter:
    """A LoRA (``scale``), ControlNet (``scale`` is the conditioning scale, ``image`` an optional
    conditioning image), textual inversion (``token``) or IP-Adapter (``scale``, ``image_encoder``:
    the CLIP vision model it reads images with)."""

    name: str
    scale: float = 1.0
    token: str | None = None
    image: str | None = None
    image_encoder: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Smoke:
    prompt: str = "a photograph of an astronaut riding a horse"
    negative_prompt: str = ""
    steps: int = 4
    height: int = 64
    width: int = 64
    seed: int = 0
    guidance_scale: float = 5.0
    strength: float | None = None  #: image-to-image / inpainting; None: the pipeline's default
    init_image: str | None = None  #: paths (relative to the spec); None: a synthetic image
    mask_image: str | None = None
    ip_adapter_image: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class PipelineSpec:
    base: str
    base_config: str | None = None  #: the single-file base's diffusers configs (a folder), else the catalogue's
    vae: str | None = None
    loras: list[Adapter] = field(default_factory=list)
    controlnets: list[Adapter] = field(default_factory=list)
    textual_inversions: list[Adapter] = field(default_factory=list)
    ip_adapter: Adapter | None = None
    scheduler: dict[str, Any] | None = None  #: {"class": name, **overrides}
    dtype: str = "auto"
    device: str = "auto"
    task: str | None = None  #: None: inferred (assetkit.pipeline.tasks.resolve_task)
    smoke: Smoke = field(default_factory=Smoke)
    source: Path | None = None  #: the spec file (relative names resolve against its folder)
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)  #: role -> line in the spec
    label: str = field(default="spec", compare=False, repr=False)  #: the spec file as the user named it

    def where(self, role: str) -> str:
        """``spec.yaml:LINE`` of a component's name (the file alone when the line is not known)."""
        return f"{self.label}:{self.lines[role]}" if role in self.lines else self.label

    @property
    def root(self) -> Path:
        return self.source.parent if self.source else Path.cwd()

    def components(self) -> list[tuple[str, str]]:
        """(role, name) for every named component: ``base``, ``vae``, ``lora[0]``, ``controlnet[0]``..."""
        out = [("base", self.base)]
        if self.base_config:
            out.append((BASE_CONFIG_ROLE, self.base_config))
        if self.vae:
            out.append(("vae", self.vae))
        out += [(f"lora[{i}]", a.name) for i, a in enumerate(self.loras)]
        out += [(f"controlnet[{i}]", a.name) for i, a in enumerate(self.controlnets)]
        out += [(f"textual_inversion[{i}]", a.name) for i, a in enumerate(self.textual_inversions)]
        if self.ip_adapter:
            out.append(("ip_adapter", self.ip_adapter.name))
            if self.ip_adapter.image_encoder:
                out.append(("image_encoder", self.ip_adapter.image_encoder))
        return out

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"base": {"name": self.base, "config": self.base_config} if self.base_config
                               else self.base}
        if self.vae:
            doc["vae"] = self.vae
        for key in ("loras", "controlnets", "textual_inversions"):
            items = getattr(self, key)
            if items:
                doc[key] = [_adapter_doc(key, a) for a in items]
        if self.ip_adapter:
            doc["ip_adapter"] = self.ip_adapter.to_dict()
        if self.scheduler:
            doc["scheduler"] = dict(self.scheduler)
        doc.update(dtype=self.dtype, device=self.device)
        if self.task:
            doc["task"] = self.task
        doc["smoke"] = self.smoke.to_dict()
        return doc


def _adapter_doc(key: str, a: Adapter) -> dict[str, Any]:
    if key == "loras":
        return {"name": a.name, "scale": a.scale}
    if key == "controlnets":
        doc: dict[str, Any] = {"name": a.name, "conditioning_scale": a.scale}
        if a.image:
            doc["image"] = a.image
        return doc
    return {"name": a.name, **({"token": a.token} if a.token else {})}


# ---- parsing with line numbers ----------------------------------------------------------------

class _Reader:
    def __init__(self, where: str) -> None:
        self.where = where

    def error(self, node: Any, message: str) -> SpecError:
        line = node.start_mark.line + 1 if node is not None else 1
        return SpecError(message, where=f"{self.where}:{line}")

    def mapping(self, node: Any, what: str, allowed: dict[str, str]) -> dict[str, Any]:
        """key -> value node of a mapping node, unknown keys refused (``allowed``: key -> help)."""
        import yaml

        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{what} must be a mapping")
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if key not in allowed:
                raise self.error(key_node, f"unknown key {key!r} in {what} (allowed: {', '.join(allowed)})")
            if key in out:
                raise self.error(key_node, f"duplicate key {key!r} in {what}")
            out[key] = value_node
        return out

    def scalar(self, node: Any, what: str, kind: type | tuple[type, ...]) -> Any:
        import yaml

        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, f"{what} must be {_kind_name(kind)}")
        value = _plain_value(node)
        ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)
        if not ok:
            raise self.error(node, f"{what} must be {_kind_name(kind)}, not {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error(node, f"{what} must be a finite number, not {value!r}")
        return float(value) if kind == (int, float) else value

    def name(self, node: Any, what: str) -> str:
        """A non-empty string: a registry name or a path (an empty one would name the spec's folder)."""
        value = self.scalar(node, what, str)
        if not value.strip():
            raise self.error(node, f"{what} must not be empty")
        return value

    def choice(self, node: Any, what: str, choices: tuple[str, ...]) -> str:
        value = self.scalar(node, what, str)
        if value not in choices:
            raise self.error(node, f"{what} must be one of {', '.join(choices)}, not {value!r}")
        return value

    def sequence(self, node: Any, what: str) -> list[Any]:
        import yaml

        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, f"{what} must be a list")
        return list(node.value)


def _plain_value(node: Any) -> Any:
    """The Python value of a scalar node (None for an empty value, as YAML reads it)."""
    import yaml

    return yaml.constructor.SafeConstructor().construct_object(node, deep=True)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    if kind == (int, float):
        return "a number"
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}.get(kind, str(kind))  # type: ignore[arg-type]


_TOP = {"base": "", "vae": "", "loras": "", "controlnets": "", "textual_inversions": "", "ip_adapter": "",
        "scheduler": "", "dtype": "", "device": "", "task": "", "smoke": ""}
_SMOKE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "prompt": str, "negative_prompt": str, "steps": int, "height": int, "width": int, "seed": int,
    "guidance_scale": (int, float), "strength": (int, float), "init_image": str, "mask_image": str,
    "ip_adapter_image": str}


def _adapter(r: _Reader, node: Any, what: str, scale_key: str | None, extra: tuple[str, ...] = ()) -> Adapter:
    import yaml

    if isinstance(node, yaml.ScalarNode):
        return Adapter(name=r.name(node, f"{what} name"))
    allowed = {"name": "", **({scale_key: ""} if scale_key else {}), **{k: "" for k in extra}}
    fields = r.mapping(node, what, allowed)
    if "name" not in fields:
        raise r.error(node, f"{what} needs a name")
    adapter = Adapter(name=r.name(fields["name"], f"{what} name"))
    if scale_key and scale_key in fields:
        adapter.scale = r.scalar(fields[scale_key], f"{what} {scale_key}", (int, float))
        if problem := limit_problem("scale", adapter.scale):
            raise r.error(fields[scale_key], f"{what} {scale_key} {problem}")
    if "token" in fields:
        adapter.token = r.scalar(fields["token"], f"{what} token", str)
    if "image" in fields:
        adapter.image = r.name(fields["image"], f"{what} image")
    if "image_encoder" in fields:
        adapter.image_encoder = r.name(fields["image_encoder"], f"{what} image_encoder")
    return adapter


def parse_spec(text: str, where: str = "spec", source: Path | None = None) -> PipelineSpec:
    """Parse the YAML text of a spec; errors name ``where:line``."""
    import yaml

    r = _Reader(where)
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise SpecError(f"not valid YAML: {getattr(exc, 'problem', None) or exc}", where=f"{where}{line}") from None
    if root is None:
        raise SpecError("empty spec (it needs at least a base)", where=where)
    top = r.mapping(root, "the spec", _TOP)
    if "base" not in top:
        raise r.error(root, "the spec needs a base (a registry name or a path)")
    spec = PipelineSpec(base="", source=source, label=where)
    _base(r, top["base"], spec)
    if "vae" in top:
        spec.vae = r.name(top["vae"], "vae")
        spec.lines["vae"] = _line(top["vae"])
    for key, role, scale_key, extra in (("loras", "lora", "scale", ()),
                                        ("controlnets", "controlnet", "conditioning_scale", ("image",)),
                                        ("textual_inversions", "textual_inversion", None, ("token",))):
        if key in top:
            nodes = r.sequence(top[key], key)
            setattr(spec, key, [_adapter(r, n, f"{key}[{i}]", scale_key, extra) for i, n in enumerate(nodes)])
            spec.lines.update({f"{role}[{i}]": _line(n) for i, n in enumerate(nodes)})
    if "ip_adapter" in top:
        spec.ip_adapter = _adapter(r, top["ip_adapter"], "ip_adapter", "scale", ("image_encoder",))
        spec.lines["ip_adapter"] = spec.lines["image_encoder"] = _line(top["ip_adapter"])
    if "scheduler" in top:
        spec.scheduler = _scheduler(r, top["scheduler"])
    if "dtype" in top:
        spec.dtype = r.choice(top["dtype"], "dtype", DTYPES)
    if "device" in top:
        spec.device = r.choice(top["device"], "device", DEVICES)
    if "task" in top:
        spec.task = r.choice(top["task"], "task", TASKS)
    if "smoke" in top:
        fields = r.mapping(top["smoke"], "smoke", dict.fromkeys(_SMOKE_FIELDS, ""))
        for key, node in fields.items():
            value = r.scalar(node, f"smoke.{key}", _SMOKE_FIELDS[key])
            if key in LIMITS and (problem := limit_problem(key, value)):
                raise r.error(node, f"smoke.{key} {problem}")
            if key == "ip_adapter_image" and spec.ip_adapter is None:
                raise r.error(node, "smoke.ip_adapter_image needs an ip_adapter")
            if key == "strength" and not 0 < value <= 1:
                raise r.error(node, f"smoke.strength must be above 0 and at most 1, not {value}")
            setattr(spec.smoke, key, value)
    implied = task_from_smoke(spec.smoke)
    if spec.task is None:
        spec.task = implied
    elif implied and implied != spec.task and not (spec.task == "inpainting" and implied == "image-to-image"):
        key = "mask_image" if spec.smoke.mask_image else "init_image"
        raise r.error(top["task"], f"task {spec.task} does not take smoke.{key} (that is {implied})")
    if spec.task not in (None, "text-to-image") and spec.controlnets:
        raise r.error(top.get("task", top["controlnets"]),
                      f"task {spec.task} with controlnets is not supported (text-to-image only)")
    return spec


def _line(node: Any) -> int:
    return node.start_mark.line + 1


def _base(r: _Reader, node: Any, spec: PipelineSpec) -> None:
    """``base: NAME`` or ``base: {name: FILE, config: DIR}`` (a single file's own diffusers configs)."""
    import yaml

    if isinstance(node, yaml.ScalarNode):
        spec.base = r.name(node, "base")
        spec.lines["base"] = _line(node)
        return
    if not isinstance(node, yaml.MappingNode):
        raise r.error(node, "base must be a string (a registry name or a path) or a mapping {name, config}")
    fields = r.mapping(node, "base", {"name": "", "config": ""})
    if "name" not in fields:
        raise r.error(node, "base needs a name")
    spec.base = r.name(fields["name"], "base name")
    spec.lines["base"] = _line(fields["name"])
    if "config" in fields:
        spec.base_config = r.name(fields["config"], "base config")
        spec.lines[BASE_CONFIG_ROLE] = _line(fields["config"])


def task_from_smoke(smoke: Smoke) -> str | None:
    """The task the smoke inputs ask for: a mask means inpainting, an init image image-to-image;
    None when they do not say (the base then decides, see :mod:`.tasks`)."""
    if smoke.mask_image:
        return "inpainting"
    if smoke.init_image:
        return "image-to-image"
    return None


def _scheduler(r: _Reader, node: Any) -> dict[str, Any]:
    import yaml

    if isinstance(node, yaml.ScalarNode):
        return {"class": r.scalar(node, "scheduler", str)}
    if not isinstance(node, yaml.MappingNode):
        raise r.error(node, "scheduler must be a class name or a mapping with a class")
    out: dict[str, Any] = {}
    for key_node, value_node in node.value:
        if not isinstance(value_node, yaml.ScalarNode):
            raise r.error(value_node, f"scheduler.{key_node.value} must be a plain value")
        out[key_node.value] = _plain_value(value_node)
    if not isinstance(out.get("class"), str):
        raise r.error(node, "scheduler needs a class (e.g. EulerDiscreteScheduler)")
    return out


def load_spec(path: str | Path) -> PipelineSpec:
    """Read and parse a spec file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("no such file", where=str(p)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read: {getattr(exc, 'strerror', None) or exc}", where=str(p)) from None
    return parse_spec(text, where=str(p), source=p.resolve())


def spec_from_dict(doc: dict[str, Any], source: Path | None = None, where: str = "spec") -> PipelineSpec:
    """A spec from its :meth:`PipelineSpec.to_dict` form (as a lock stores it)."""
    import yaml

    return parse_spec(yaml.safe_dump(doc, sort_keys=False), where=where, source=source)
