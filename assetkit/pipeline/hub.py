"""Hugging Face Hub ids in specs, resolved only when asked (``--hub``).

A spec name is a path or a registry name first (:mod:`.sources`). With ``hub=True`` a name that is
neither may be a Hub id: ``org/name`` (a repository), or explicitly ``hf://org/name[@revision]
[/path/in/repo]`` (a repository, or one file of it). It is resolved through ``huggingface_hub``:
the local Hugging Face cache, and the network only when ``HF_HUB_OFFLINE`` is not set. A lock pins
the commit it got, so a locked Hub component resolves to exactly those files again (from the cache,
or downloaded by that commit). The one module of assetkit that talks to the Hub.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AssetkitError
from ..formats.sniff import SCANNED_SUFFIXES

PREFIX = "hf://"
_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_ID = re.compile(rf"^(?P<repo>{_PART}/{_PART})(?:@(?P<rev>[A-Za-z0-9._/-]+?))?(?:/(?P<file>.+))?$")
_BARE = re.compile(rf"^{_PART}/{_PART}$")
#: Formats no diffusers pipeline on torch reads: never downloaded for a whole repository.
IGNORED = ["*.onnx", "*.onnx_data", "*.pb", "*.h5", "*.msgpack", "*.ot", "*.mlmodel", "*.mlpackage/*", "*.gguf",
           "flax_model*", "tf_model*", "*.tflite"]


@dataclass(frozen=True)
class HubRef:
    """A repository (``filename`` None) or one file of it, at ``revision`` (None: the default branch)."""

    repo_id: str
    revision: str | None = None
    filename: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"repo_id": self.repo_id, "revision": self.revision, "filename": self.filename}


def parse_hub_id(name: str) -> HubRef | None:
    """``hf://org/name[@rev][/file]`` or a bare ``org/name``; None for anything else.

    A bare name with a file suffix or more than two parts is a (missing) path, not a Hub id."""
    if name.startswith(PREFIX):
        match = _ID.match(name[len(PREFIX):])
        if match is None or ".." in name or "--" in match["repo"]:
            return None
        return HubRef(match["repo"], match["rev"], match["file"])
    if (_BARE.match(name) and ".." not in name and "--" not in name
            and not name.lower().endswith(SCANNED_SUFFIXES + (".json", ".yaml", ".yml"))):
        return HubRef(name)
    return None


def offline() -> bool:
    """``HF_HUB_OFFLINE`` as huggingface_hub reads it (any of 1/true/yes/on), read at each call."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def fetch(ref: HubRef, where: str, *, cache_only: bool = False) -> tuple[Path, str]:
    """(local path of the repository snapshot or file, the commit it is at). Offline (or
    ``cache_only``): the local cache only."""
    try:
        import huggingface_hub as hf
        from huggingface_hub import errors as hf_errors
    except ImportError:  # pragma: no cover - a dependency of diffusers and of assetkit
        raise AssetkitError("resolving a Hub id needs huggingface_hub (pip install huggingface_hub)",
                            where=where) from None
    local_only = cache_only or offline()
    try:
        if ref.filename:
            path = Path(hf.hf_hub_download(ref.repo_id, ref.filename, revision=ref.revision,
                                           local_files_only=local_only))
            snapshot = path.parents[len(Path(ref.filename).parts) - 1]
        else:
            ignore = list(IGNORED)
            if not local_only and _has_safetensors(hf, ref):
                ignore += ["*.bin", "*.ckpt", "*.pt", "*.pth"]
            snapshot = path = Path(hf.snapshot_download(ref.repo_id, revision=ref.revision, ignore_patterns=ignore,
                                                        local_files_only=local_only))
    except (hf_errors.LocalEntryNotFoundError, FileNotFoundError):
        if local_only:
            why = "HF_HUB_OFFLINE is set" if offline() else "--hub was not given"
            raise AssetkitError(f"{_describe(ref)} is not in the local Hugging Face cache, and {why}: nothing is "
                                "downloaded", where=where) from None
        raise AssetkitError(f"cannot download {_describe(ref)} (no connection to the Hub?)", where=where) from None
    except hf_errors.RepositoryNotFoundError:
        raise AssetkitError(f"no such repository on the Hub (or it is private/gated): {ref.repo_id}",
                            where=where) from None
    except hf_errors.RevisionNotFoundError:
        raise AssetkitError(f"no revision {ref.revision!r} in {ref.repo_id}", where=where) from None
    except hf_errors.EntryNotFoundError:
        raise AssetkitError(f"no file {ref.filename!r} in {ref.repo_id}", where=where) from None
    except (OSError, hf_errors.HfHubHTTPError, ValueError) as exc:
        raise AssetkitError(f"cannot fetch {_describe(ref)}: {exc}", where=where) from None
    # not resolved: the cache's snapshot entries are links to blobs named by hash, without suffixes
    return Path(os.path.abspath(path)), snapshot.name


def _has_safetensors(hf: Any, ref: HubRef) -> bool:
    """Whether the repository holds safetensors weights (then its pickled duplicates are skipped)."""
    try:
        return any(f.endswith(".safetensors") for f in hf.list_repo_files(ref.repo_id, revision=ref.revision))
    except Exception:  # noqa: BLE001 - listing is an optimisation; snapshot_download reports real errors
        return False


def _describe(ref: HubRef) -> str:
    at = f"@{ref.revision}" if ref.revision else ""
    return f"{PREFIX}{ref.repo_id}{at}" + (f"/{ref.filename}" if ref.filename else "")
