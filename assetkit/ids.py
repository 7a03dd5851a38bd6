"""Every id assetkit prints or returns, as ``Literal`` types in one place.

The catalogue (``registry/families.json``) is the data these ids come from; ``tests/test_ids.py``
fails when a catalogue file and these types drift apart, so a new family or kind is added in both
places or the suite says so. Nothing here is imported at run time by the hot paths: the types are
for annotations, type checkers and readers.
"""

from __future__ import annotations

from typing import Literal, get_args

#: What a checkpoint is (``registry/families.json`` ``kinds``).
Kind = Literal["pipeline", "unet", "transformer", "vae", "text_encoder", "lora", "controlnet",
               "textual_inversion", "ip_adapter", "t2i_adapter", "unknown"]
#: Model families (``registry/families.json`` ``families``).
Family = Literal["sd1", "sd2", "sdxl", "sdxl-refiner", "sd3", "flux"]
#: Task variants of a family (``registry/families.json`` ``variants``).
Variant = Literal["inpaint", "depth", "instruct-pix2pix", "upscale"]
#: Prediction types (``registry/families.json`` ``prediction_types``).
PredictionType = Literal["epsilon", "v_prediction"]
#: Key layouts (``registry/families.json`` ``layouts``).
Layout = Literal["original", "diffusers", "kohya", "peft", "diffusers-attn-procs", "lycoris", "xlabs", "a1111",
                 "open_clip", "transformers"]
#: Text encoder types (``registry/families.json`` ``text_encoders``).
TextEncoderType = Literal["clip-l", "openclip-h", "openclip-bigg", "t5-xxl"]
#: Finding severities, most severe first (:data:`assetkit.findings.SEVERITIES`).
Severity = Literal["dangerous", "error", "suspicious", "warning", "info"]
#: ``scan`` verdicts (:data:`assetkit.check.scan.VERDICTS`).
ScanVerdict = Literal["safe", "unsafe", "unsupported", "error"]
#: Batch item outcomes (:class:`assetkit.convert.BatchItem`).
BatchStatus = Literal["converted", "unsafe", "failed", "skipped"]
#: What a file's first bytes say it is (:func:`assetkit.formats.sniff.sniff_bytes`, besides the
#: descriptions of foreign containers).
SniffKind = Literal["safetensors", "zip", "pickle", "empty", "unknown"]


def ids(literal: object) -> tuple[str, ...]:
    """The ids of one of the ``Literal`` types above, in declaration order."""
    return get_args(literal)


__all__ = ["BatchStatus", "Family", "Kind", "Layout", "PredictionType", "ScanVerdict", "Severity", "SniffKind",
           "TextEncoderType", "Variant", "ids"]
