"""The small helpers several layers share (sniffing heads, shard names, capped lists, view bounds)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from assetkit.findings import capped
from assetkit.formats import not_a_checkpoint_error, reads_as_safetensors
from assetkit.formats.base import TensorInfo
from assetkit.formats.diffusers_folder import is_shard_name
from assetkit.formats.sniff import foreign_kind, is_pickle_head, is_zip_head, sniff_bytes


def test_capped_lists_the_first_names_then_a_count() -> None:
    assert capped(["a", "b"], 3) == "a, b"
    assert capped(["a", "b", "c"], 3) == "a, b, c"
    assert capped(["a", "b", "c", "d", "e"], 3) == "a, b, c (+2 more)"


@pytest.mark.parametrize(("head", "zip_", "pickle_"), [
    (b"PK\x03\x04rest", True, False),
    (b"PK\x05\x06" + bytes(18), True, False),
    (b"\x80\x02}q\x00", False, True),
    (b"\x80\x05\x95", False, True),
    (b"\x80\x01", False, False),  # protocol 1 has no PROTO opcode
    (b"\x80\x06", False, False),
    (b"\x80", False, False),
    (b"", False, False),
])
def test_zip_and_pickle_heads(head: bytes, zip_: bool, pickle_: bool) -> None:
    assert is_zip_head(head) is zip_
    assert is_pickle_head(head) is pickle_


def test_foreign_kind_agrees_with_sniff() -> None:
    assert foreign_kind(b"\x1f\x8b\x08\x00") == "gzip stream" == sniff_bytes(b"\x1f\x8b\x08\x00", 100)
    tar = bytes(257) + b"ustar\x0000"
    assert foreign_kind(tar) == "tar archive" == sniff_bytes(tar, 1024)
    assert foreign_kind(b"\x80\x02}q\x00.") is None


@pytest.mark.parametrize(("name", "ok"), [
    ("model-00001-of-00002.safetensors", True),
    ("", False), (".", False), ("..", False), ("../x.safetensors", False), ("a\\b", False), (None, False),
    (3, False),
])
def test_shard_names_are_plain_file_names(name: object, ok: bool) -> None:
    assert is_shard_name(name) is ok


def test_safetensors_routing_and_unsupported_messages(tmp_path: Path) -> None:
    assert reads_as_safetensors("safetensors", tmp_path / "x.bin")
    (tmp_path / "x.SafeTensors").write_bytes(b"\xff" * 16)  # binary under the name: the strict reader names the rule
    assert reads_as_safetensors("unknown", tmp_path / "x.SafeTensors")
    (tmp_path / "t.safetensors").write_bytes(b'{"a": 1}\n')  # text under the name: not a safetensors file
    assert not reads_as_safetensors("unknown", tmp_path / "t.safetensors")
    assert not_a_checkpoint_error("unknown", tmp_path / "t.safetensors").message == \
        "not a safetensors file (starts with '{\"a\": 1}\\n')"
    assert not reads_as_safetensors("unknown", tmp_path / "x.ckpt")
    assert not reads_as_safetensors("zip", tmp_path / "x.safetensors")
    assert not_a_checkpoint_error("empty", tmp_path / "e").message == "file is empty"
    assert "neither safetensors" in not_a_checkpoint_error("unknown", tmp_path / "u").message
    assert not_a_checkpoint_error("PNG image", tmp_path / "p").message == "not a checkpoint: this is a PNG image"


def test_last_element_of_strided_and_offset_views(tmp_path: Path) -> None:
    contiguous = TensorInfo("w", "F32", (2, 3), tmp_path, 0)
    assert contiguous.last_element == 5
    transposed = TensorInfo("t", "F32", (3, 2), tmp_path, 0, storage_offset=4, stride=(1, 3))
    assert transposed.last_element == 4 + 2 * 1 + 1 * 3


def test_importing_the_cli_leaves_xml_out() -> None:
    """JUnit rendering imports xml.etree only when a report is written."""
    script = "import sys, assetkit.cli, assetkit.findings; print('xml.etree.ElementTree' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_scan_sends_whitespace_led_safetensors_to_the_strict_reader(tmp_path: Path) -> None:
    """A safetensors header with leading whitespace is a broken safetensors file (verdict error,
    the rule named), not "not a checkpoint"."""
    import json
    import struct

    from assetkit.check.scan import scan_path

    header = b" " + json.dumps({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    path = tmp_path / "spaced.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\x00" * 4)
    result = scan_path(path)
    assert result.verdict == "error"
    assert any("whitespace" in f.message or "start" in f.message for f in result.findings), result.findings


def test_truncated_is_the_one_cut_for_messages() -> None:
    from assetkit.findings import truncated

    assert truncated("abcdef", 6) == "abcdef"
    assert truncated("abcdefg", 6) == "abc..."
    assert len(truncated("x" * 1000, 80)) == 80
