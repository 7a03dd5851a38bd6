"""The CLIP tokenizer folders the catalogue builds offline from the shipped BPE vocabulary."""

from __future__ import annotations

import json

import pytest

from assetkit import catalogue

PROMPT = "a photograph of an astronaut riding a horse"
# The ids every released CLIP tokenizer gives for PROMPT (bos ... eos).
PROMPT_IDS = [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]


def _write(tmp_path, files):
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


@pytest.mark.parametrize("encoder,pad_id", [("clip-l", 49407), ("openclip-h", 0), ("openclip-bigg", 0)])
@pytest.mark.parametrize("fast", [False, True])
def test_transformers_tokenizer_from_catalogue_files(tmp_path, encoder, pad_id, fast):
    from transformers import CLIPTokenizer, CLIPTokenizerFast

    folder = _write(tmp_path, catalogue.clip_tokenizer_files(encoder))
    cls = CLIPTokenizerFast if fast else CLIPTokenizer
    tok = cls.from_pretrained(folder, local_files_only=True)
    assert tok(PROMPT).input_ids == PROMPT_IDS
    assert len(tok) == 49408
    assert tok.pad_token_id == pad_id
    padded = tok(PROMPT, padding="max_length", max_length=tok.model_max_length).input_ids
    assert len(padded) == 77 and padded[:10] == PROMPT_IDS and set(padded[10:]) == {pad_id}


def test_files_are_deterministic_and_complete():
    a = catalogue.clip_tokenizer_files("clip-l")
    catalogue._clip_vocab_and_merges.cache_clear()
    b = catalogue.clip_tokenizer_files("clip-l")
    assert a == b
    assert set(a) == {"vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"}
    vocab = json.loads(a["vocab.json"])
    assert len(vocab) == 49408 and vocab["<|endoftext|>"] == 49407 and vocab["!"] == 0
    assert a["merges.txt"].decode().splitlines()[0].startswith("#version")
    assert len(a["merges.txt"].decode().splitlines()) == 1 + 48894


def test_family_tokenizers():
    assert json.loads(catalogue.family_tokenizer_files("sd1")["special_tokens_map.json"])["pad_token"] == "<|endoftext|>"
    assert json.loads(catalogue.family_tokenizer_files("sd2")["special_tokens_map.json"])["pad_token"] == "!"
    sdxl_2 = catalogue.family_tokenizer_files("sdxl", "tokenizer_2")
    assert json.loads(sdxl_2["special_tokens_map.json"])["pad_token"] == "!"
    with pytest.raises(KeyError):
        catalogue.family_tokenizer_files("sd1", "tokenizer_2")
    with pytest.raises(KeyError):
        catalogue.clip_tokenizer_files("t5-xxl")
