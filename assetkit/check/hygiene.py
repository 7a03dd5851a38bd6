"""Checkpoint hygiene: junk keys, EMA copies (with sizes) and broken CLIP ``position_ids``.

What A1111's Model Toolkit reports, as :class:`~assetkit.findings.Finding` rows for ``inspect``:

* ``ema-weights``: LitEma copies (``model_ema.<name without dots>``) of the model's weights, and its
  ``decay``/``num_updates`` bookkeeping; ``convert --prune`` drops them, ``--ema`` makes them the model.
* ``junk-keys``: tensors of a single-file checkpoint outside every component it can hold (training
  leftovers such as ``embedding_manager.*`` or stray ``lora_*`` keys).
* ``broken-position-ids``: a CLIP ``embeddings.position_ids`` buffer that is not ``0..N-1`` (a known
  defect of several popular merges: float ids that drifted, shifted ids); read from the few bytes
  of that one tensor, under every CLIP prefix (SD1 ``cond_stage_model.transformer.``, SDXL
  ``conditioner.embedders.0.transformer.``, SD3 ``text_encoders.clip_l/clip_g.transformer.``,
  diffusers ``text_encoder/``, with or without ``text_model.``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..findings import Finding
from ..formats.base import Asset, TensorInfo, count_bytes

#: LitEma (CompVis/SGM) stores each model parameter as ``model_ema.`` + its name under ``model.``
#: with the dots removed, plus two bookkeeping scalars.
EMA_PREFIX = "model_ema."
EMA_BOOKKEEPING = ("model_ema.decay", "model_ema.num_updates")
#: The model whose parameters LitEma copies.
EMA_SOURCE_PREFIX = "model."
#: Where a CLIP text encoder's position ids live, whatever prefix holds the encoder.
POSITION_IDS_SUFFIX = "embeddings.position_ids"
#: Known CLIP prefixes (documentation and tests; detection goes by the suffix above).
CLIP_PREFIXES = ("cond_stage_model.transformer.", "conditioner.embedders.0.transformer.",
                 "text_encoders.clip_l.transformer.", "text_encoders.clip_g.transformer.",
                 "text_encoder/", "text_encoder_2/")
#: Top-level names a single-file checkpoint legitimately holds (components, schedule buffers).
CHECKPOINT_PREFIXES = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.", "conditioner.",
                       "model_ema.", "text_encoders.", "control_model.", "denoiser.", "embedder.")
SCHEDULE_BUFFERS = frozenset({
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
    "logvar", "lvlb_weights", "model_ema.decay", "model_ema.num_updates",
})


@dataclass
class Hygiene:
    """What :func:`hygiene_report` found: names, so that ``convert`` can act on them."""

    ema: dict[str, str] = field(default_factory=dict)  #: EMA tensor -> the model tensor it copies
    ema_orphans: list[str] = field(default_factory=list)  #: model_ema.* that copy no model tensor
    ema_bookkeeping: list[str] = field(default_factory=list)
    junk: list[str] = field(default_factory=list)
    broken_position_ids: dict[str, str] = field(default_factory=dict)  #: name -> what is wrong
    findings: list[Finding] = field(default_factory=list)


def ema_pairs(names: list[str]) -> tuple[dict[str, str], list[str], list[str]]:
    """(EMA name -> model name, EMA names without a model tensor, bookkeeping names)."""
    flat = {EMA_PREFIX + n[len(EMA_SOURCE_PREFIX):].replace(".", ""): n
            for n in names if n.startswith(EMA_SOURCE_PREFIX)}
    pairs: dict[str, str] = {}
    orphans: list[str] = []
    bookkeeping: list[str] = []
    for name in names:
        if not name.startswith(EMA_PREFIX):
            continue
        if name in EMA_BOOKKEEPING:
            bookkeeping.append(name)
        elif name in flat:
            pairs[name] = flat[name]
        else:
            orphans.append(name)
    return pairs, orphans, bookkeeping


def junk_keys(names: list[str]) -> list[str]:
    """Tensors of a single-file checkpoint outside its components (none unless it has a UNet)."""
    if not any(n.startswith("model.diffusion_model.") for n in names):
        return []
    return [n for n in names if not n.startswith(CHECKPOINT_PREFIXES) and n not in SCHEDULE_BUFFERS]


def position_ids_problem(info: TensorInfo, values: list[float]) -> str | None:
    """Why ``values`` (the buffer's elements) are not ``0..N-1``, or None."""
    if len(info.shape) not in (1, 2) or (len(info.shape) == 2 and info.shape[0] != 1):
        return f"shape {list(info.shape)}, expected [1, N]"
    wrong = [i for i, v in enumerate(values) if v != i]
    if not wrong:
        return None
    first = wrong[0]
    return (f"not 0..{len(values) - 1}: {len(wrong)} of {len(values)} ids differ (index {first} holds "
            f"{values[first]!r}){' stored as ' + info.dtype if not info.dtype.startswith(('I', 'U')) else ''}")


def read_values(asset: Asset, name: str) -> list[float]:
    """The elements of a small tensor as Python numbers (bf16 widened exactly)."""
    import numpy as np

    info = asset.tensors[name]
    array = asset.tensor_array(name)
    if info.dtype == "BF16":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return [v.item() for v in array.reshape(-1)]


def hygiene_report(asset: Asset, read: Callable[[str], list[float]] | None = None) -> Hygiene:
    """Hygiene findings of ``asset`` (headers, plus the bytes of its ``position_ids`` buffers)."""
    from ..errors import AssetkitError
    from ..findings import capped

    names = list(asset.tensors)
    out = Hygiene()
    out.ema, out.ema_orphans, out.ema_bookkeeping = ema_pairs(names)
    ema_all = list(out.ema) + out.ema_orphans + out.ema_bookkeeping
    if ema_all:
        size = count_bytes(asset.tensors[n] for n in ema_all)
        out.findings.append(Finding(
            "ema-weights", "info",
            f"{len(out.ema)} EMA copies of model weights ({_mib(size)} in {len(ema_all)} tensors under "
            f"{EMA_PREFIX}); convert --prune drops them, --ema writes them as the model", EMA_PREFIX))
    out.junk = [n for n in junk_keys(names) if n not in ema_all]
    if out.junk:
        size = count_bytes(asset.tensors[n] for n in out.junk)
        out.findings.append(Finding(
            "junk-keys", "warning",
            f"{len(out.junk)} tensor(s) ({_mib(size)}) belong to no model component: {capped(out.junk, 4)}; "
            "convert --prune drops them", out.junk[0]))
    for name in names:
        if not name.endswith(POSITION_IDS_SUFFIX) or name.startswith(EMA_PREFIX):
            continue
        info = asset.tensors[name]
        try:
            values = (read or (lambda n: read_values(asset, n)))(name)
        except (AssetkitError, ValueError) as exc:  # a compressed record, a size that does not add up
            out.findings.append(Finding("position-ids-unreadable", "info", f"cannot read: {exc}", name))
            continue
        problem = position_ids_problem(info, values)
        if problem:
            out.broken_position_ids[name] = problem
            fix = "convert --fix-position-ids"
            if "/" in name and info.file is not None:  # a folder's component: convert fixes files, one at a time
                fix = f"convert {name.split('/', 1)[0]}/{Path(info.file).name} OUT --fix-position-ids"
            out.findings.append(Finding(
                "broken-position-ids", "warning",
                f"CLIP position_ids {problem}; {fix} writes 0..{len(values) - 1}", name))
    return out


def hygiene_findings(asset: Asset) -> list[Finding]:
    """Only the findings of :func:`hygiene_report` (what ``inspect`` shows)."""
    return hygiene_report(asset).findings



def _mib(n: int) -> str:
    return f"{n:,} bytes" if n < 2**20 else f"{n / 2**20:,.1f} MiB" if n < 2**30 else f"{n / 2**30:,.2f} GiB"
