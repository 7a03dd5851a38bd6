"""The probe: run every prober, keep every verdict, rank them, then read the metadata's claims in
the light of the best verdict (shown as evidence, contradictions reported, the tensors win)."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import AssetkitError
from ..findings import Finding
from ..formats.base import Asset
from . import catalog, checkpoint, folder
from .adapters import probe_ip_adapter, probe_t2i_adapter
from .base import Context
from .claims import Claims, read_claims
from .controlnet import probe_controlnet
from .embedding import probe_textual_inversion
from .keys import KeyView
from .lora import decode_scalar, probe_lora
from .other import probe_not_a_kind
from .result import Candidate, ProbeResult, Verdict
from .text_encoder import probe_text_encoder
from .transformer import probe_transformer
from .unet import probe_unet
from .vae import probe_vae

Prober = Callable[[KeyView, Context], "Verdict | None"]

#: Every prober, in tie-break order (earlier wins an equal score).
PROBERS: list[tuple[str, Prober]] = [
    ("checkpoint", checkpoint.probe_checkpoint),
    ("unet", probe_unet),
    ("transformer", probe_transformer),
    ("controlnet", probe_controlnet),
    ("lora", probe_lora),
    ("ip_adapter", probe_ip_adapter),
    ("t2i_adapter", probe_t2i_adapter),
    ("vae", probe_vae),
    ("text_encoder", probe_text_encoder),
    ("textual_inversion", probe_textual_inversion),
    ("not_a_kind", probe_not_a_kind),
]

_ORDER = {name: i for i, (name, _) in enumerate(PROBERS)}
_FLOAT_SCALARS = ("F16", "BF16", "F32", "F64")


def probe_view(view: KeyView, ctx: Context) -> list[Verdict]:
    """Every prober's verdict on ``view``, best first."""
    verdicts = [v for _, prober in PROBERS if (v := prober(view, ctx)) is not None]
    verdicts.sort(key=lambda v: (-v.score, _ORDER.get(v.prober.split(":", 1)[0], 99)))
    return verdicts


def scalar_reader(asset: Asset) -> Callable[[str], float | None]:
    """Read one float scalar tensor (a LoRA alpha) in place; None when it cannot."""

    def read(name: str) -> float | None:
        info = asset.tensors.get(name)
        if info is None or info.numel != 1 or info.dtype not in _FLOAT_SCALARS:
            return None
        try:
            raw = bytes(asset.tensor_bytes(name))
        except (AssetkitError, OSError, ValueError, BufferError, KeyError):
            return None
        return decode_scalar(info.dtype, raw)

    return read


def probe(asset: Asset) -> ProbeResult:
    """Identify ``asset``: kind, family, variant, prediction type, key layout, with the evidence."""
    claims = read_claims(asset.metadata)
    if asset.format == "diffusers":
        verdicts = folder.probe_pipeline_folder(asset, claims, probe_view, scalar_reader)
    elif asset.format == "diffusers-component":
        verdicts = folder.probe_component_folder(asset, claims, probe_view, scalar_reader)
    else:
        ctx = Context(claims=claims, scalar=scalar_reader(asset))
        verdicts = probe_view(KeyView.of(asset.tensors), ctx)
    return finish(asset, verdicts, claims)



def _unknown(asset: Asset) -> Verdict:
    view = KeyView.of(asset.tensors)
    if not len(view):
        evidence = ["no tensors"]
    else:
        evidence = [f"no known signature matched {len(view)} tensors; top-level names: "
                    + ", ".join(view.top_prefixes())]
    return Verdict(kind="unknown", family=None, layout=None, score=0.0, prober="none", evidence=evidence)


def finish(asset: Asset, verdicts: list[Verdict], claims: Claims) -> ProbeResult:
    best = verdicts[0] if verdicts else _unknown(asset)
    evidence = list(best.evidence)
    findings: list[Finding] = list(best.findings)
    family, families, variant = best.family, list(best.families), best.variant
    where = str(asset.path)

    for claim in claims.items:
        evidence.append(f"metadata {claim.describe()}: says {claim.field} {claim.value}")

    family, families = _cross_check_family(best, family, families, claims, evidence, findings, where)
    _cross_check_kind(best, claims, findings, where)
    variant = _cross_check_variant(best, variant, claims, findings, where)
    _cross_check_lora(best, claims, findings, where)
    if family is None and len(families) > 1:
        findings.append(Finding(
            "family-ambiguous", "info",
            f"the tensors fit {', '.join(families)}; nothing in the file says which", where))
    prediction = _prediction(best, family, claims, asset.metadata, evidence, findings, where)
    candidates = _candidates(verdicts)
    details = dict(best.details)
    quantization = _quantization(asset)
    if quantization:
        details["quantization"] = quantization
        evidence.append(f"storage: {quantization}")
    model_claim = claims.get("model")
    if model_claim and "model" not in details:
        details["model"] = model_claim.value
    return ProbeResult(
        kind=best.kind,
        family=family,
        variant=variant,
        prediction_type=prediction,
        layout=best.layout,
        evidence=evidence,
        candidates=candidates,
        details=details,
        components=dict(best.components),
        findings=findings,
    )


def _cross_check_family(best: Verdict, family: str | None, families: list[str], claims: Claims,
                        evidence: list[str], findings: list[Finding], where: str) -> tuple[str | None, list[str]]:
    if best.kind == "unknown":
        return family, families
    for claim in claims.all("family"):
        if family is not None:
            if claim.value != family:
                findings.append(Finding(
                    "metadata-contradiction", "warning",
                    f"metadata {claim.describe()} says {claim.value} but the tensors say {family} "
                    f"(the tensors win)", where))
        elif claim.value in families:
            family = claim.value
            evidence.append(f"family {family} from metadata {claim.describe()} "
                            f"(the tensors allow {', '.join(families)})")
            families = []
        elif not families:
            family = claim.value
            evidence.append(f"family {family} from metadata {claim.describe()} (the tensors do not tell)")
        else:
            findings.append(Finding(
                "metadata-contradiction", "warning",
                f"metadata {claim.describe()} says {claim.value} but the tensors fit only "
                f"{', '.join(families)}", where))
    return family, families


def _cross_check_kind(best: Verdict, claims: Claims, findings: list[Finding], where: str) -> None:
    if best.kind == "unknown":
        return
    for claim in claims.all("kind"):
        if claim.value != best.kind:
            findings.append(Finding(
                "metadata-contradiction", "warning",
                f"metadata {claim.describe()} says {claim.value} but the tensors are a {best.kind} "
                f"(the tensors win)", where))
            break


def _cross_check_variant(best: Verdict, variant: str | None, claims: Claims, findings: list[Finding],
                         where: str) -> str | None:
    if best.kind not in ("pipeline", "unet", "transformer"):
        return variant
    for claim in claims.all("variant"):
        if claim.value != variant:
            findings.append(Finding(
                "metadata-contradiction", "warning",
                f"metadata {claim.describe()} says {claim.value} but the UNet input says "
                f"{variant or 'a plain model'} (the tensors win)", where))
    return variant


def _cross_check_lora(best: Verdict, claims: Claims, findings: list[Finding], where: str) -> None:
    if best.kind != "lora":
        return
    rank = best.details.get("rank")
    ranks = best.details.get("ranks") or ([rank] if rank is not None else [])
    conv_rank = best.details.get("conv_rank")
    claim = claims.get("rank")
    if claim and ranks and claim.value not in ranks and claim.value != conv_rank \
            and best.details.get("algo") in ("lora", "locon"):
        findings.append(Finding(
            "metadata-contradiction", "warning",
            f"metadata {claim.describe()} says rank {claim.value} but the tensors have rank {rank}", where))
    alpha_claim = claims.get("alpha")
    alpha = best.details.get("alpha")
    if alpha_claim and best.details.get("alpha_source") == "tensors" and alpha is not None \
            and abs(float(alpha_claim.value) - float(alpha)) > 1e-3 * max(1.0, abs(float(alpha))):
        findings.append(Finding(
            "metadata-contradiction", "warning",
            f"metadata {alpha_claim.describe()} says alpha {alpha_claim.value:g} but the .alpha tensors hold "
            f"{alpha:g}", where))


def _prediction(best: Verdict, family: str | None, claims: Claims, metadata: dict, evidence: list[str],
                findings: list[Finding], where: str) -> str | None:
    if best.kind in ("vae", "text_encoder", "textual_inversion", "unknown"):
        return None
    if best.details.get("edm"):
        evidence.append("EDM formulation: the prediction type is neither plain epsilon nor v-prediction")
        return None
    marker = best.details.get("v_prediction_marker")
    if marker:
        evidence.append(f"{marker} key present: v-prediction model")
        return "v_prediction"
    scheduler = best.details.get("scheduler_prediction_type")
    if scheduler in ("epsilon", "v_prediction"):
        evidence.append(f"scheduler/scheduler_config.json prediction_type {scheduler}")
        return scheduler
    stated = sorted(claims.all("prediction_type"), key=lambda c: c.source.endswith("architecture"))
    if stated:
        values = {c.value for c in stated}
        if len(values) > 1:
            findings.append(Finding(
                "metadata-contradiction", "warning",
                "metadata disagrees with itself on the prediction type: "
                + "; ".join(c.describe() for c in stated), where))
        evidence.append(f"prediction type {stated[0].value} from metadata {stated[0].describe()}")
        return stated[0].value
    if best.kind not in ("pipeline", "unet") or family is None:
        return None
    if family == "sd2":
        step = _release_step(metadata)
        if step:
            prediction, release = step
            evidence.append(f"global_step {metadata[catalog.metadata_rules()['global_step_key']]} identifies "
                            f"{release}: {prediction}")
            return prediction
    row = catalog.family_table().get(family, {})
    default = row.get("prediction_type")
    if default:
        best.details.setdefault("usual_prediction_type", default)
        evidence.append(f"prediction type not stated in the file ({family} models are normally {default})")
        return None
    note = row.get("prediction_note")
    if note:
        evidence.append(f"prediction type unknown: {note}; nothing in the file says which")
    return None


def _quantization(asset: Asset) -> str | None:
    """How the weights are quantized (fp8, ComfyUI scaled fp8, bitsandbytes 4-bit), or None."""
    spec = catalog.signatures().get("quantization")
    if not spec or not asset.tensors:
        return None
    fp8 = set(spec["fp8_dtypes"])
    fp8_count = sum(1 for info in asset.tensors.values() if info.dtype in fp8)
    packed = spec["packed_suffixes"]
    packed_ends = tuple(packed)
    scale_ends = tuple(spec["scale_suffixes"])
    scales = 0
    for name in asset.tensors:
        if name.endswith(packed_ends):
            return next(text for sfx, text in packed.items() if name.endswith(sfx))
        if name.endswith(scale_ends):
            scales += 1
    if not fp8_count:
        return None
    text = f"{fp8_count} of {len(asset.tensors)} tensors in fp8"
    markers = [name for name in asset.tensors if name.rsplit(".", 1)[-1] in spec["scaled_fp8_markers"]]
    if markers or scales:
        text += f" (ComfyUI scaled fp8: {scales} per-layer scale tensors" \
                + (f", marker {markers[0]}" if markers else "") + ")"
    return text


def _release_step(metadata: dict) -> tuple[str, str] | None:
    """(prediction type, release) when a pickle's ``global_step`` names a known SD 2.x release."""
    rules = catalog.metadata_rules()
    raw = metadata.get(rules["global_step_key"])
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        return None
    found = rules["sd2_global_steps"]["steps"].get(str(raw).strip())
    return (found[0], found[1]) if found else None


def _candidates(verdicts: list[Verdict]) -> list[Candidate]:
    out: list[Candidate] = []
    for v in verdicts:
        options = v.family_options or [None]
        for fam in options:
            out.append(Candidate(kind=v.kind, family=fam, layout=v.layout, score=v.score, prober=v.prober))
    return out
