"""Benchmark: ``assetkit check`` vs a plain diffusers script doing the same load and generations.

Tiny SD1 pipeline + LoRA + ControlNet (built once in the work folder), CPU. The plain script is
what a careful user would write by hand for the same smoke checks: build the ControlNet pipeline
offline, load the LoRA, then the same five 2-step generations at 64 px that ``check`` runs (output,
same seed again, LoRA disabled, LoRA scale 0, ControlNet scale 0) and a NaN test. ``check`` adds
the lock verification (sha256 of every file), scan + validate of every file, the compatibility
pass and the report folder. Both run as whole processes, in interleaved pairs (plain, check) so that both see the
same machine load; the figure is the median of the per-pair ratios. Target (issue 10): within
1.1x. Also prints the compatibility pass alone on full-size sparse layouts (SD1.5 and SDXL
bases with kohya LoRAs, headers only), which must cost milliseconds.

    python bench/bench_check.py [--workdir bench/out] [--runs 3] [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (  # noqa: E402
    DEFAULT_WORKDIR,
    PYTHON,
    Measurement,
    assetkit_cmd,
    print_table,
    run_once,
    user_env,
)

BUILD = """
import sys
from pathlib import Path
from assetkit.factory.diffusers_models import save_tiny_sd1_pipeline
from assetkit.factory.pipeline_assets import save_tiny_controlnet, save_tiny_lora
d = Path(sys.argv[1])
save_tiny_sd1_pipeline(d / "sd1")
save_tiny_lora(d / "sd1", d / "lora.safetensors", text_encoder=True)
save_tiny_controlnet(d / "sd1", d / "cn")
"""

PLAIN = """
import sys
import numpy as np
import torch
from diffusers import AutoPipelineForText2Image, ControlNetModel
from assetkit.pipeline.smoke import synthetic_condition
d = sys.argv[1]
cn = ControlNetModel.from_pretrained(d + "/cn", local_files_only=True)
pipe = AutoPipelineForText2Image.from_pretrained(d + "/sd1", controlnet=cn, local_files_only=True)
pipe.load_lora_weights(d + "/lora.safetensors", adapter_name="lora0")
pipe.set_adapters(["lora0"], adapter_weights=[0.8])
pipe.set_progress_bar_config(disable=True)
image = synthetic_condition(64, 64)
def gen(scale=1.0):
    g = torch.Generator("cpu").manual_seed(0)
    out = pipe("a photograph of an astronaut riding a horse", image=image, num_inference_steps=2, height=64,
               width=64, guidance_scale=5.0, generator=g, controlnet_conditioning_scale=scale, output_type="np")
    return out.images[0]
a = gen(); b = gen()
pipe.disable_lora(); base = gen(); pipe.enable_lora()
pipe.set_adapters(["lora0"], adapter_weights=[0.0]); zero = gen(); pipe.set_adapters(["lora0"], adapter_weights=[0.8])
off = gen(0.0)
assert np.isfinite(a).all() and np.array_equal(a, b) and np.array_equal(zero, base)
assert np.abs(a - base).mean() > 1e-3 and np.abs(a - off).mean() > 1e-3
"""

SPEC = """base: sd1
loras: [{name: lora.safetensors, scale: 0.8}]
controlnets: [{name: cn}]
smoke: {steps: 2, height: 64, width: 64}
"""

COMPAT = """
import sys, time
from pathlib import Path
from assetkit.factory import make_fixture
from assetkit.pipeline import parse_spec
from assetkit.pipeline.compat import compat_paths
d = Path(sys.argv[1])
for base, lora in (("sd15", "lora_sd15_kohya"), ("sdxl_base", "lora_sdxl_kohya")):
    for f in (base, lora):
        if not (d / f"{f}.safetensors").exists():
            make_fixture(f, d, "safetensors", full=True)
    spec = parse_spec(f"base: {d}/{base}.safetensors\\nloras: [{{name: {d}/{lora}.safetensors}}]\\n")
    times = []
    for _ in range(5):
        t = time.perf_counter(); r = compat_paths(spec); times.append(time.perf_counter() - t)
    cov = ", ".join(f"{c} {v['matched']}/{v['total']}" for c, v in r.components["lora[0]"]["coverage"].items())
    print(f"compatibility pass, full-size {base} + kohya LoRA (headers only): best {min(times) * 1000:.0f} ms, "
          f"median {sorted(times)[2] * 1000:.0f} ms; coverage {cov}; torch imported: {'torch' in sys.modules}")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = args.workdir / "check"
    if not (work / "cn").is_dir():
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        subprocess.run([PYTHON, "-c", BUILD, str(work)], check=True, capture_output=True)
    (work / "plain.py").write_text(textwrap.dedent(PLAIN))
    (work / "spec.yaml").write_text(SPEC)
    env = {**user_env(), "HF_HUB_OFFLINE": "1"}
    plain_cmd = [PYTHON, str(work / "plain.py"), str(work)]
    check_cmd = assetkit_cmd("check", str(work / "spec.yaml"), "--report", str(work / "report"), "--device", "cpu")
    light_cmd = assetkit_cmd("check", str(work / "spec.yaml"), "--no-smoke")
    if subprocess.run(check_cmd, env=env, capture_output=True).returncode != 0:  # also the warm-up
        raise SystemExit("assetkit check does not pass on the benchmark pipeline")
    run_once(plain_cmd, env)
    plain = Measurement("plain diffusers script (same 5 generations)", [], [])
    check = Measurement("assetkit check spec.yaml --report", [], [])
    light = Measurement("assetkit check spec.yaml --no-smoke", [], [])
    ratios = []
    for _ in range(args.runs):  # interleaved pairs: both sides see the same machine load
        for m, cmd in ((plain, plain_cmd), (check, check_cmd)):
            wall, rss = run_once(cmd, env)
            m.wall_s.append(wall)
            m.peak_rss_mib.append(rss)
        ratios.append(check.wall_s[-1] / plain.wall_s[-1])
        wall, rss = run_once(light_cmd, env)
        light.wall_s.append(wall)
        light.peak_rss_mib.append(rss)
    print_table("check overhead, tiny SD1 + LoRA + ControlNet, CPU", [plain, check, light], baseline=plain)
    print(f"ratio check/plain, median of {len(ratios)} interleaved pairs: {statistics.median(ratios):.3f}x "
          f"(pairs: {', '.join(f'{r:.3f}' for r in ratios)}; target <= 1.1x)")
    full = args.workdir / "full-size"
    full.mkdir(parents=True, exist_ok=True)
    print(subprocess.run([PYTHON, "-c", COMPAT, str(full)], check=True, capture_output=True, text=True,
                         env=env).stdout.strip())
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(full, ignore_errors=True)


if __name__ == "__main__":
    main()
