"""IP-Adapters in pipeline specs: read and locked with their image encoder, checked from headers
against the base UNet and the encoder before anything is loaded, assembled offline and smoke-tested
(the adapter changes the output, scale 0 gives the base image)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _pipeline_helpers import task_assets, write_spec  # noqa: F401 - fixture

from assetkit.pipeline import lock_spec, parse_spec
from assetkit.pipeline.compat import compat_paths
from assetkit.pipeline.spec import spec_from_dict


def test_spec_reads_and_round_trips_the_ip_adapter() -> None:
    spec = parse_spec("base: x\nip_adapter: {name: ip.safetensors, scale: 0.6, image_encoder: enc}\n"
                      "smoke: {ip_adapter_image: face.png}\n")
    assert (spec.ip_adapter.name, spec.ip_adapter.scale, spec.ip_adapter.image_encoder) == ("ip.safetensors", 0.6, "enc")
    assert spec.components() == [("base", "x"), ("ip_adapter", "ip.safetensors"), ("image_encoder", "enc")]
    assert spec.smoke.ip_adapter_image == "face.png"
    assert spec_from_dict(spec.to_dict()).to_dict() == spec.to_dict()


def test_lock_pins_adapter_and_encoder(task_assets, tmp_path: Path) -> None:  # noqa: F811
    import hashlib

    a = task_assets
    spec = parse_spec(f"base: {a['sd1']}\nip_adapter: {{name: {a['ip_adapter.safetensors']}, "
                      f"image_encoder: {a['encoder']}}}\n")
    lock = lock_spec(spec)
    by_role = {c.role: c for c in lock.components}
    assert list(by_role) == ["base", "ip_adapter", "image_encoder"]
    assert by_role["ip_adapter"].files[0].sha256 == hashlib.sha256(a["ip_adapter.safetensors"].read_bytes()).hexdigest()
    pinned = {f.path: f.sha256 for f in by_role["image_encoder"].files}
    assert set(pinned) == {"config.json", "model.safetensors"}
    assert pinned["model.safetensors"] == hashlib.sha256((a["encoder"] / "model.safetensors").read_bytes()).hexdigest()


def test_matching_ip_adapter_is_compatible(task_assets) -> None:  # noqa: F811
    a = task_assets
    report = compat_paths(parse_spec(f"base: {a['sd1']}\nip_adapter: {{name: {a['ip_adapter.safetensors']}, "
                                     f"image_encoder: {a['encoder']}}}\n"))
    assert report.ok, report.findings
    ip = report.components["ip_adapter"]
    assert (ip["context_dim"], ip["layers"], ip["projection"], ip["image_input_width"]) == (768, 4, "linear", 32)
    assert report.components["image_encoder"]["projection_dim"] == 32


@pytest.mark.parametrize(("adapter", "encoder", "code", "words"), [
    ("ip_adapter_1024.safetensors", "encoder", "ip-adapter-mismatch",
     "IP-Adapter cross-attention width 1024 (ip_adapter.1.to_k_ip.weight [32, 1024]) != base 768"),
    ("ip_adapter.safetensors", "encoder_64", "image-encoder-mismatch",
     "image embeddings 64 wide (visual_projection.weight [64, 32]) != the 32 the IP-Adapter's linear projection"),
    ("ip_adapter.safetensors", None, "image-encoder-missing", "needs an image_encoder"),
])
def test_mismatched_ip_adapter_is_a_finding(task_assets, adapter: str, encoder: str | None, code: str,  # noqa: F811
                                            words: str) -> None:
    a = task_assets
    encoder_field = f", image_encoder: {a[encoder]}" if encoder else ""
    report = compat_paths(parse_spec(f"base: {a['sd1']}\nip_adapter: {{name: {a[adapter]}{encoder_field}}}\n"))
    hits = [f for f in report.findings if f.code == code]
    assert not report.ok and len(hits) == 1 and words in hits[0].message, report.findings
    assert hits[0].severity == "error"
