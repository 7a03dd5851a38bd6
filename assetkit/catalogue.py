"""Loader for the bundled catalogue in ``registry/`` (families, kinds, signatures, configs).

The catalogue is data: what assetkit knows out of the box. It is found at ``$ASSETKIT_CATALOGUE``,
else inside the installed package (``assetkit/_catalogue``, where a wheel puts ``registry/``),
else in the ``registry/`` folder of the checkout (source and editable installs).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any


def catalogue_dir() -> Path:
    override = os.environ.get("ASSETKIT_CATALOGUE")
    if override:
        return Path(override)
    here = Path(__file__).resolve().parent
    packaged = here / "_catalogue"
    return packaged if packaged.is_dir() else here.parent / "registry"


@functools.cache
def load(relative: str) -> Any:
    """Parse ``registry/<relative>`` (YAML or JSON), cached."""
    path = catalogue_dir() / relative
    with open(path, encoding="utf-8") as fh:
        if path.suffix == ".json":
            return json.load(fh)
        import yaml  # only when a YAML file is asked for: importing it costs ~10 ms per process

        return yaml.safe_load(fh)


#: CLIP BPE vocabulary shipped in the catalogue (gzip text from the open_clip_torch wheel).
BPE_VOCABULARY = "bpe_simple_vocab_16e6.txt.gz"
#: Merges CLIP uses: the vocabulary has 49408 entries = 2 x 256 bytes + merges + 2 special tokens.
_CLIP_MERGES = 49152 - 256 - 2
#: Padding token per text-encoder tokenizer type: OpenAI CLIP pads with its end token, the
#: OpenCLIP-based tokenizers diffusers ships (SD2, SDXL ``tokenizer_2``) pad with ``!`` (id 0).
_CLIP_PAD = {"clip-l": "<|endoftext|>", "openclip-h": "!", "openclip-bigg": "!"}


def _byte_characters() -> list[str]:
    """GPT-2/CLIP byte -> printable character table, in vocabulary order: the printable bytes as
    themselves first, then every other byte as ``chr(256 + n)``."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]  # "!".."~", "¡".."¬", "®".."ÿ"
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


@functools.cache
def _clip_vocab_and_merges() -> tuple[bytes, bytes]:
    import gzip

    with gzip.open(catalogue_dir() / BPE_VOCABULARY, "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _CLIP_MERGES + 1]]
    chars = _byte_characters()
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    vocab_json = json.dumps(vocab, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    merges_txt = ("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n").encode("utf-8")
    return vocab_json, merges_txt


def json_bytes(value: Any) -> bytes:
    """A JSON document as the catalogue writes config files: indented, sorted keys, final newline."""
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode("utf-8")


def clip_tokenizer_files(encoder: str = "clip-l") -> dict[str, bytes]:
    """The files of a diffusers ``tokenizer/`` folder for a CLIP text encoder type (``clip-l``,
    ``openclip-h``, ``openclip-bigg``), built deterministically from the shipped BPE vocabulary:
    ``vocab.json``, ``merges.txt``, ``tokenizer_config.json``, ``special_tokens_map.json``.
    Only the padding token differs between the types."""
    if encoder not in _CLIP_PAD:
        raise KeyError(f"no CLIP tokenizer for text encoder type {encoder!r} (known: {', '.join(_CLIP_PAD)})")
    vocab_json, merges_txt = _clip_vocab_and_merges()
    pad = _CLIP_PAD[encoder]
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": pad,
               "unk_token": "<|endoftext|>"}
    config = {**special, "add_prefix_space": False, "clean_up_tokenization_spaces": True,
              "do_lower_case": True, "errors": "replace", "model_max_length": 77,
              "tokenizer_class": "CLIPTokenizer"}
    return {"vocab.json": vocab_json, "merges.txt": merges_txt,
            "tokenizer_config.json": json_bytes(config), "special_tokens_map.json": json_bytes(special)}


def family_tokenizer_files(family: str, component: str = "tokenizer") -> dict[str, bytes]:
    """Tokenizer folder files for a family's ``tokenizer`` or ``tokenizer_2`` component, chosen
    by the family's text encoder types in ``families.json`` (``text_encoder`` -> ``tokenizer``)."""
    families = load("families.json")["families"]
    if family not in families:
        raise KeyError(f"unknown family {family!r}")
    encoders = families[family].get("text_encoders") or {}
    encoder = encoders.get(component.replace("tokenizer", "text_encoder"))
    if encoder is None:
        raise KeyError(f"family {family!r} has no {component}")
    return clip_tokenizer_files(encoder)
