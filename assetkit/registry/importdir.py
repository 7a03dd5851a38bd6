"""``import-dir``: register everything in an A1111 ``models/`` tree, a ComfyUI ``models/`` tree or a
Hugging Face hub cache into the user's registry, skipping what is already there (the hash cache
makes a re-import read nothing). Symbolic links that leave the tree are not followed unless asked
(a Hugging Face cache's snapshot links into its own ``blobs/`` are inside the tree)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import AssetkitError
from .add import add_path, walk_files

if TYPE_CHECKING:
    from .api import Registry

MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
A1111_FOLDERS = ("Stable-diffusion", "Lora", "VAE", "ControlNet", "LyCORIS", "embeddings")
COMFYUI_FOLDERS = ("checkpoints", "loras", "vae", "controlnet", "clip", "text_encoders", "unet",
                   "diffusion_models", "embeddings", "diffusers")


@dataclass
class ImportReport:
    layout: str
    items: list[dict[str, Any]] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for item in self.items if item["status"] == status)

    @property
    def ok(self) -> bool:
        return not any(item["status"] in ("failed", "unsafe") for item in self.items)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "layout": self.layout, "added": self.count("added"), "skipped": self.count("skipped"),
                "failed": self.count("failed") + self.count("unsafe"), "items": list(self.items)}


def detect_layout(folder: Path) -> str:
    names = {entry.name for entry in os.scandir(folder) if entry.is_dir()}
    if folder.name.startswith("models--") or any(n.startswith("models--") for n in names):
        return "hf-cache"
    if names & {"Stable-diffusion", "Lora"} or (folder / "models" / "Stable-diffusion").is_dir():
        return "a1111"
    if names & {"checkpoints", "loras", "diffusion_models"}:
        return "comfyui"
    return "plain"


def _candidates(folder: Path, follow_root: Path) -> list[Path]:
    """Model files and diffusers folders (a folder with model_index.json, or a component folder
    with config.json and weights, is one candidate; nothing inside it is listed again)."""
    found: list[Path] = []
    for dirpath, dirs, files in os.walk(folder, followlinks=False):
        here = Path(dirpath)
        if "model_index.json" in files or ("config.json" in files and
                                           any(f.endswith((".safetensors", ".bin")) for f in files)):
            found.append(here)
            dirs[:] = []
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = here / name
            if not name.lower().endswith(MODEL_SUFFIXES) or name.startswith("."):
                continue
            if path.is_symlink():
                try:
                    path.resolve().relative_to(follow_root)
                except ValueError:
                    continue
            found.append(path)
    return found


def _hf_snapshots(folder: Path) -> list[tuple[Path, Path, str]]:
    """(snapshot folder, repo folder, name) for each repo of a hub cache (the ``main`` ref, else the
    newest snapshot)."""
    repos = [folder] if folder.name.startswith("models--") else sorted(
        p for p in folder.iterdir() if p.is_dir() and p.name.startswith("models--"))
    out = []
    for repo in repos:
        snapshots = repo / "snapshots"
        if not snapshots.is_dir():
            continue
        ref = repo / "refs" / "main"
        chosen = snapshots / ref.read_text().strip() if ref.is_file() else None
        if chosen is None or not chosen.is_dir():
            revs = sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime)
            if not revs:
                continue
            chosen = revs[-1]
        out.append((chosen, repo, repo.name[len("models--"):]))
    return out


def import_dir(reg: Registry, folder: Path, *, layout: str = "auto", follow_links: bool = False,
               tags: tuple[str, ...] = (), progress: Any = None) -> ImportReport:
    from ..errors import UnsafeInputError

    if not folder.is_dir():
        raise AssetkitError("not a folder", where=str(folder))
    if layout == "auto":
        layout = detect_layout(folder)
    report = ImportReport(layout)
    limit = Path("/") if follow_links else folder.resolve()
    jobs: list[tuple[Path, str | None, Path]] = []
    if layout == "hf-cache":
        for snapshot, repo, name in _hf_snapshots(folder):
            follow = Path("/") if follow_links else repo.resolve()
            if (snapshot / "model_index.json").is_file():
                jobs.append((snapshot, name, follow))
            else:
                for path in walk_files(snapshot, follow):
                    if path.name.lower().endswith(MODEL_SUFFIXES):
                        jobs.append((path, None, follow))
    else:
        jobs = [(path, None, limit) for path in _candidates(folder, limit)]
    with reg.lock.shared():
        for path, name, follow in jobs:
            item: dict[str, Any] = {"path": str(path)}
            try:
                result = add_path(reg, path, name=None, tags=tags, progress=progress, follow_root=follow) \
                    if name is None else _add_named(reg, path, name, tags, progress, follow)
                item.update(status="added" if result.created else "skipped", name=result.record.name,
                            kind=result.record.kind)
            except UnsafeInputError as exc:
                item.update(status="unsafe", error=str(exc))
            except AssetkitError as exc:
                item.update(status="failed", error=str(exc))
            report.items.append(item)
    return report


def _add_named(reg: Registry, path: Path, name: str, tags: tuple[str, ...], progress: Any, follow: Path) -> Any:
    from .add import name_from_path

    clean = name_from_path(Path(name.replace("/", "--")))
    wanted = clean if not reg._name_taken(clean) else None
    return add_path(reg, path, name=wanted, tags=tags, progress=progress, follow_root=follow)
