"""Tell what a file is from its first bytes, never from its name alone."""

from __future__ import annotations

import struct
from pathlib import Path

#: Containers we recognise but never open or extract (reported as unsupported, never safe).
FOREIGN_MAGIC: list[tuple[bytes, int, str]] = [
    (b"7z\xbc\xaf\x27\x1c", 0, "7z archive"),
    (b"\x1f\x8b", 0, "gzip stream"),
    (b"BZh", 0, "bzip2 stream"),
    (b"\xfd7zXZ\x00", 0, "xz stream"),
    (b"\x28\xb5\x2f\xfd", 0, "zstd stream"),
    (b"Rar!\x1a\x07", 0, "rar archive"),
    (b"ustar", 257, "tar archive"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG image"),
    (b"\xff\xd8\xff", 0, "JPEG image"),
    (b"GIF8", 0, "GIF image"),
    (b"RIFF", 0, "RIFF (WebP/WAV) file"),
    (b"%PDF", 0, "PDF document"),
    (b"GGUF", 0, "GGUF model"),
    (b"\x89HDF\r\n\x1a\n", 0, "HDF5 (Keras) file"),
    (b"ONNX", 0, "ONNX model"),
]

#: Largest safetensors header the format allows (the reference implementation's limit); the
#: strict reader (formats.safetensors) and sniffing share this one definition.
HEADER_CAP = 100_000_000

PICKLE_PROTOCOL_BYTE = 0x80  # PROTO opcode that starts every protocol >= 2 pickle
#: A zip archive starts with a local file header, or (empty archive) the end-of-central-directory record.
ZIP_LOCAL_MAGIC = b"PK\x03\x04"
ZIP_MAGICS = (ZIP_LOCAL_MAGIC, b"PK\x05\x06")

# ---- file names ---------------------------------------------------------------------------------
# Names never decide what a file is (its bytes do); they decide which files a folder walk picks up
# and which output names are refused. One definition each, for every layer.
#: Pickle checkpoints by name (torch.save, diffusers/transformers ``.bin``, plain pickles).
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
#: Any checkpoint file by name: pickles and safetensors (``.sft``: ComfyUI / Black Forest Labs).
CHECKPOINT_SUFFIXES = PICKLE_SUFFIXES + (".safetensors", ".sft")
#: What ``scan`` also collects from a folder: wrappers and other containers a payload may hide in.
SCANNED_SUFFIXES = CHECKPOINT_SUFFIXES + (".zip", ".7z", ".gz", ".tgz", ".tar", ".bz2", ".xz", ".zst", ".rar",
                                          ".npy", ".npz", ".joblib", ".model", ".data", ".dat")


#: File names safetensors files go by (``.sft``: ComfyUI / Black Forest Labs releases).
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
#: Bytes of a file's head shown in a "not a ... file (starts with ...)" message.
SHOWN_HEAD_BYTES = 16
_TEXT_BYTES = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}


def is_text_head(head: bytes) -> bool:
    """True when the first 8 bytes are printable ASCII text (JSON, YAML, HTML, an LFS pointer...):
    no binary format assetkit reads starts that way, except protocol-0 pickles (sniffed first)."""
    return len(head) > 0 and all(b in _TEXT_BYTES for b in head[:8])


def shown_head(head: bytes) -> str:
    """The start of a file for a message: ``'{"a": 1}'``."""
    text = head[:SHOWN_HEAD_BYTES].decode("latin-1")
    return repr(text) + ("..." if len(head) > SHOWN_HEAD_BYTES else "")


def is_zip_head(head: bytes) -> bool:
    """True when ``head`` starts like a zip archive (a torch zip checkpoint or any other)."""
    return head[:4] in ZIP_MAGICS


def is_pickle_head(head: bytes) -> bool:
    """True when ``head`` starts with the PROTO opcode of pickle protocol 2 to 5 (what torch writes)."""
    return len(head) >= 2 and head[0] == PICKLE_PROTOCOL_BYTE and 2 <= head[1] <= 5


def is_safetensors_head(head: bytes) -> bool:
    """True when ``head`` starts like a safetensors file: an 8-byte header length within the
    format's cap, then the JSON header (``{``, or the whitespace the strict reader rejects by name).

    The length is not checked against the file size: a truncated safetensors file (whose length
    byte may well be ``(`` or ``c``, pickle opcodes) still goes to the strict reader, which names
    the truncation. Checked before the pickle protocol byte: a header length such as 0x0280 starts
    with the bytes 0x80 0x02, exactly like a protocol-2 pickle.
    """
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack_from("<Q", head)
    return 2 <= header_len <= HEADER_CAP and head[8:9] in (b"{", b" ", b"\t", b"\n", b"\r")


def foreign_kind(head: bytes) -> str | None:
    """The :data:`FOREIGN_MAGIC` description ``head`` matches, or None."""
    for magic, offset, label in FOREIGN_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return label
    return None


def sniff_bytes(head: bytes, size: int) -> str:
    """Classify a file from its first bytes (at least 512 of them when available) and its size.

    Returns ``"safetensors"``, ``"zip"``, ``"pickle"``, ``"empty"``, a :data:`FOREIGN_MAGIC`
    description, or ``"unknown"``.
    """
    if size == 0:
        return "empty"
    if is_zip_head(head):
        return "zip"
    foreign = foreign_kind(head)
    if foreign is not None:
        return foreign
    if is_safetensors_head(head):
        return "safetensors"
    if is_pickle_head(head):
        return "pickle"
    if head[:1] in (b"(", b"}", b"]", b"c", b"\x80"):
        # protocol 0/1 pickles start with MARK, EMPTY_DICT, EMPTY_LIST or GLOBAL
        return "pickle"
    return "unknown"


def read_head(path: Path, n: int = 512) -> bytes:
    """The first ``n`` bytes of a file."""
    with open(path, "rb") as fh:
        return fh.read(n)


def sniff(path: Path) -> str:
    """:func:`sniff_bytes` on a path."""
    size = path.stat().st_size
    return sniff_bytes(read_head(path), size)
