"""IP-Adapters in pipeline specs: read and locked with their image encoder, checked from headers
against the base UNet and the encoder before anything is loaded, assembled offline and smoke-tested
(the adapter changes the output, scale 0 gives the base image)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _pipeline_helpers import assemble_and_smoke, task_assets, write_spec  # noqa: F401 - fixture

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


def _cli(*args: str):
    from click.testing import CliRunner

    from assetkit.cli import main

    return CliRunner().invoke(main, list(args))


@pytest.mark.slow
def test_spec_lock_check_with_ip_adapter_passes_on_cpu(task_assets, tmp_path: Path) -> None:  # noqa: F811
    import json

    a = task_assets
    spec = write_spec(tmp_path, f"base: {a['sd1']}\nip_adapter: {{name: {a['ip_adapter.safetensors']}, scale: 0.8, "
                                f"image_encoder: {a['encoder']}}}\nsmoke: {{steps: 2, height: 32, width: 32}}\n")
    assert _cli("lock", str(spec)).exit_code == 0
    result = _cli("check", str(tmp_path / "spec.lock"), "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["ok"] and set(doc["suites"]) == {"lock", "validate", "compatibility", "smoke"}
    labels = [i["label"] for i in doc["smoke"]["images"]]
    assert labels == ["output", "IP-Adapter image", "without IP-Adapter"]
    assert doc["compatibility"]["components"]["ip_adapter"]["context_dim"] == 768


def test_mismatched_ip_adapter_fails_before_loading(task_assets, tmp_path: Path) -> None:  # noqa: F811
    from assetkit.pipeline.gate import run_check

    a = task_assets
    spec = write_spec(tmp_path, f"base: {a['sd1']}\nip_adapter: {{name: {a['ip_adapter_1024.safetensors']}, "
                                f"image_encoder: {a['encoder']}}}\n")
    result = run_check(spec, device="cpu")
    assert not result.ok
    assert "ip-adapter-mismatch" in {f.code for f in result.suites["compatibility"]}
    assert [f.code for f in result.suites["smoke"]] == ["smoke-not-run"]  # nothing was loaded
    assert result.smoke is None


@pytest.mark.slow
def test_ip_adapter_smoke_equals_plain_diffusers_and_changes_the_output(task_assets, tmp_path: Path) -> None:  # noqa: F811
    import numpy as np
    import torch
    from diffusers import StableDiffusionPipeline
    from PIL import Image
    from transformers import CLIPVisionModelWithProjection


    a = task_assets
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(tmp_path / "ref.png")
    spec_path = write_spec(tmp_path, f"base: {a['sd1']}\nip_adapter: {{name: {a['ip_adapter.safetensors']}, "
                                     f"scale: 0.7, image_encoder: {a['encoder']}}}\n"
                                     "smoke: {prompt: a dog, steps: 2, seed: 4, ip_adapter_image: ref.png, height: 32, "
                                     "width: 32}\n")
    _assembled, result = assemble_and_smoke(spec_path)
    assert result.ok, result.findings
    images = {i.label: i.array for i in result.images}
    # the adapter changes the image, and the base image (adapter unloaded) is diffusers' own without it
    assert np.abs(images["output"] - images["without IP-Adapter"]).max() > 1e-2
    oracle = StableDiffusionPipeline.from_pretrained(
        str(a["sd1"]), local_files_only=True,
        image_encoder=CLIPVisionModelWithProjection.from_pretrained(str(a["encoder"]), local_files_only=True))
    oracle.set_progress_bar_config(disable=True)

    def run(**extra):
        return oracle("a dog", num_inference_steps=2, guidance_scale=5.0, height=32, width=32, output_type="np",
                      generator=torch.Generator("cpu").manual_seed(4), **extra).images[0]

    plain = run()
    assert np.abs(images["without IP-Adapter"] - plain).max() < 1e-4
    oracle.load_ip_adapter(str(a["ip_adapter.safetensors"].parent), subfolder="",
                           weight_name=a["ip_adapter.safetensors"].name, image_encoder_folder=None)
    oracle.set_ip_adapter_scale(0.7)
    expected = run(ip_adapter_image=Image.open(tmp_path / "ref.png").convert("RGB"))
    assert np.abs(images["output"] - expected).max() < 1e-4


@pytest.mark.slow
def test_ip_adapter_that_does_nothing_is_found(task_assets, tmp_path: Path) -> None:  # noqa: F811
    from assetkit.factory.task_assets import save_tiny_ip_adapter
    from assetkit.pipeline.gate import run_check

    a = task_assets
    zero = save_tiny_ip_adapter(a["sd1"], tmp_path / "zero.safetensors", strength=0.0)
    spec = write_spec(tmp_path, f"base: {a['sd1']}\nip_adapter: {{name: {zero}, image_encoder: {a['encoder']}}}\n"
                                "smoke: {steps: 1, height: 32, width: 32}\n")
    result = run_check(spec, device="cpu")
    codes = [f.code for f in result.suites["smoke"] if f.failing]
    assert codes == ["ip-adapter-no-effect"], result.suites["smoke"]


def _rewrite(src: Path, dest: Path, edit) -> Path:
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(src))
    edit(tensors)
    save_file(tensors, str(dest))
    return dest


@pytest.mark.parametrize(("edit", "words"), [
    (lambda t: [t.pop(k) for k in [k for k in t if k.startswith("ip_adapter.7.")]],
     "the IP-Adapter has 3 cross-attention layers, the base UNet 4 (attn2 modules)"),
    (lambda t: t.update({k: np.zeros((64, 768), np.float32) for k in ("ip_adapter.1.to_k_ip.weight",
                                                                       "ip_adapter.1.to_v_ip.weight")}),
     "IP-Adapter layer widths 2 x 32, 2 x 64 != the base's cross-attention layers 3 x 32, 1 x 64 "
     "(to_k_ip.weight rows vs attn2.to_q.weight columns)"),
])
def test_ip_adapter_layers_against_the_base(task_assets, tmp_path: Path, edit, words: str) -> None:  # noqa: F811
    a = task_assets
    broken = _rewrite(a["ip_adapter.safetensors"], tmp_path / "broken.safetensors", edit)
    report = compat_paths(parse_spec(f"base: {a['sd1']}\nip_adapter: {{name: {broken}, image_encoder: {a['encoder']}}}\n"))
    hits = [f.message for f in report.findings if f.code == "ip-adapter-mismatch"]
    assert hits == [words], report.findings


@pytest.mark.slow
def test_pickle_ip_adapter_is_converted_not_unpickled(task_assets, tmp_path: Path) -> None:  # noqa: F811
    import torch
    from safetensors.torch import load_file

    from assetkit.pipeline.ip_adapter_load import as_safetensors

    a = task_assets
    flat = load_file(str(a["ip_adapter.safetensors"]))
    nested = {group: {k.removeprefix(group + "."): v for k, v in flat.items() if k.startswith(group + ".")}
              for group in ("image_proj", "ip_adapter")}
    torch.save(nested, tmp_path / "ip.bin")  # as the released ip-adapter_sd15.bin
    converted = as_safetensors(tmp_path / "ip.bin", tmp_path / "work")
    assert converted.suffix == ".safetensors" and converted.parent == tmp_path / "work"
    again = load_file(str(converted))
    assert sorted(again) == sorted(flat) and all(torch.equal(again[k], flat[k]) for k in flat)
    assert as_safetensors(a["ip_adapter.safetensors"], tmp_path / "work") == a["ip_adapter.safetensors"]
    outputs = []
    for name in ("ip.bin", a["ip_adapter.safetensors"]):
        spec = write_spec(tmp_path, f"base: {a['sd1']}\nip_adapter: {{name: {name}, image_encoder: {a['encoder']}}}\n"
                                    "smoke: {steps: 1, height: 32, width: 32}\n")
        _assembled, result = assemble_and_smoke(spec)
        assert result.ok, result.findings
        outputs.append(result.images[0].array)
    assert np.array_equal(outputs[0], outputs[1])


def test_full_size_ip_adapters_against_full_size_bases(tmp_path: Path) -> None:
    import time

    from assetkit.factory import make_fixture

    for fixture in ("sd15", "sdxl_base", "ip_adapter_sd15", "ip_adapter_sdxl"):
        make_fixture(fixture, tmp_path, "safetensors", full=True)  # sparse: shapes of the real releases

    def ip_findings(base: str, adapter: str) -> tuple[dict, list[str]]:
        report = compat_paths(parse_spec(f"base: {tmp_path}/{base}.safetensors\n"
                                         f"ip_adapter: {tmp_path}/{adapter}.safetensors\n"))
        codes = {f.code for f in report.findings} - {"image-encoder-missing"}  # no full-size CLIP-H layout
        return report.components["ip_adapter"], sorted(codes)

    started = time.perf_counter()
    facts, codes = ip_findings("sd15", "ip_adapter_sd15")
    assert codes == [] and (facts["layers"], facts["context_dim"], facts["image_input_width"]) == (16, 768, 1024)
    facts, codes = ip_findings("sdxl_base", "ip_adapter_sdxl")
    assert codes == [] and (facts["layers"], facts["context_dim"], facts["image_input_width"]) == (70, 2048, 1280)
    assert time.perf_counter() - started < 10  # headers only
    report = compat_paths(parse_spec(f"base: {tmp_path}/sd15.safetensors\n"
                                     f"ip_adapter: {tmp_path}/ip_adapter_sdxl.safetensors\n"))
    messages = [f.message for f in report.findings if f.code == "ip-adapter-mismatch"]
    assert messages[0].startswith("IP-Adapter cross-attention width 2048") and messages[0].endswith("!= base 768")
    assert messages[1] == "the IP-Adapter has 70 cross-attention layers, the base UNet 16 (attn2 modules)"
