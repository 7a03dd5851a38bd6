"""Pipeline locks: every file pinned (sha256 and size), paths relative to the lock, registry assets
by name and content id (found again on a teammate's registry), versions, and ``check LOCK``
refusing a changed or missing file with a finding that names it."""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from assetkit.cli import main
from assetkit.pipeline import read_lock


def _cli(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder: a tiny SD1 pipeline, a LoRA file, a ControlNet folder and a spec naming them
    by relative paths."""
    from assetkit.factory.diffusers_models import save_tiny_sd1_pipeline
    from assetkit.factory.pipeline_assets import save_tiny_controlnet, save_tiny_lora

    root = tmp_path_factory.mktemp("lock-project") / "project"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_tiny_sd1_pipeline(root / "sd1")
        save_tiny_lora(root / "sd1", root / "lora.safetensors", text_encoder=True)
        save_tiny_controlnet(root / "sd1", root / "cn")
    (root / "spec.yaml").write_text("base: sd1\nloras: [{name: lora.safetensors, scale: 0.8}]\ncontrolnets: [cn]\n")
    return root


@pytest.fixture()
def copy(project: Path, tmp_path: Path) -> Path:
    """A private copy of the project (tests edit its files)."""
    dest = tmp_path / "work"
    shutil.copytree(project, dest)
    return dest


def _lock(folder: Path) -> dict:
    result = _cli("lock", str(folder / "spec.yaml"))
    assert result.exit_code == 0, result.output
    return json.loads((folder / "spec.lock").read_text())


def test_lock_pins_every_file_relative_to_the_lock(copy: Path, tmp_path: Path) -> None:
    doc = _lock(copy)
    assert doc["assetkit_lock"] == 2
    by_role = {c["role"]: c for c in doc["components"]}
    assert [by_role[r]["path"] for r in ("base", "lora[0]", "controlnet[0]")] == ["sd1", "lora.safetensors", "cn"]
    for component in doc["components"]:
        root = copy / component["path"]
        on_disk = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) \
            if root.is_dir() else [""]
        assert sorted(f["path"] for f in component["files"]) == on_disk
        for pinned in component["files"]:
            path = root / pinned["path"] if pinned["path"] else root
            assert pinned["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
            assert pinned["bytes"] == path.stat().st_size
        assert component["registry"] is None
    # The project moved elsewhere (another checkout): the lock still finds and verifies its files.
    moved = tmp_path / "elsewhere"
    shutil.move(copy, moved)
    result = _cli("check", str(moved / "spec.lock"), "--no-smoke", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["compatibility"]["base"]["path"] == str((moved / "sd1").resolve())


def test_one_changed_byte_of_a_lora_is_refused_naming_the_file(copy: Path) -> None:
    _lock(copy)
    assert _cli("check", str(copy / "spec.lock"), "--no-smoke").exit_code == 0
    lora = copy / "lora.safetensors"
    data = bytearray(lora.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of the tensor data; same size, so only the sha256 can tell
    lora.write_bytes(bytes(data))
    result = _cli("check", str(copy / "spec.lock"), "--no-smoke", "--json")
    assert result.exit_code == 1
    doc = json.loads(result.output)
    findings = doc["suites"]["lock"]["findings"]
    assert [f["code"] for f in findings] == ["lock-changed"]
    assert str(lora.resolve()) in findings[0]["message"] and findings[0]["where"] == "lora[0] lora.safetensors"
    assert [f["code"] for f in doc["suites"]["validate"]["findings"]] == ["validate-not-run"]
    text = _cli("check", str(copy / "spec.lock"), "--no-smoke")
    assert text.exit_code == 1 and "lock-changed" in text.output and "FAIL" in text.output


def test_a_missing_file_of_a_folder_component_is_refused(copy: Path) -> None:
    _lock(copy)
    weights = next((copy / "cn").glob("*.safetensors"))
    weights.unlink()
    result = _cli("check", str(copy / "spec.lock"), "--no-smoke", "--json")
    assert result.exit_code == 1
    findings = json.loads(result.output)["suites"]["lock"]["findings"]
    assert [f["code"] for f in findings] == ["lock-missing"] and str(weights.resolve()) in findings[0]["message"]


def test_a_teammate_registry_finds_the_asset_by_content_id(project: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from assetkit.registry import Registry

    mine = tmp_path / "mine"
    monkeypatch.setenv("ASSETKIT_HOME", str(mine))
    with Registry() as registry:
        record = registry.add(project / "lora.safetensors", name="detail-lora").record
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"base: {project / 'sd1'}\nloras: [detail-lora]\n")
    assert _cli("lock", str(spec)).exit_code == 0
    stored = json.loads((tmp_path / "spec.lock").read_text())["components"][1]
    assert stored["registry"] == {"name": "detail-lora", "sha256": record.sha256, "id": str(record.id)}
    shutil.rmtree(mine)  # my registry is gone: its paths in the lock point nowhere

    # The teammate holds the same bytes under another name and another local id.
    theirs = tmp_path / "theirs"
    monkeypatch.setenv("ASSETKIT_HOME", str(theirs))
    with Registry() as registry:
        registry.add(project / "cn", name="some-controlnet")
        their_record = registry.add(project / "lora.safetensors", name="team-detail").record
        their_path = registry.path("team-detail", layout="file").resolve()
    assert their_record.id != record.id and their_record.sha256 == record.sha256
    result = _cli("check", str(tmp_path / "spec.lock"), "--no-smoke", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["compatibility"]["components"]["lora[0]"]["path"] == str(their_path)

    # A registry asset of the pinned name but other content: refused, saying the name names another asset.
    other = tmp_path / "other"
    monkeypatch.setenv("ASSETKIT_HOME", str(other))
    changed = tmp_path / "changed.safetensors"
    data = bytearray((project / "lora.safetensors").read_bytes())
    data[-1] ^= 0x01
    changed.write_bytes(bytes(data))
    with Registry() as registry:
        impostor = registry.add(changed, name="detail-lora").record
    result = _cli("check", str(tmp_path / "spec.lock"), "--no-smoke", "--json")
    assert result.exit_code == 1
    (finding,) = json.loads(result.output)["suites"]["lock"]["findings"]
    assert finding["code"] == "lock-registry-changed"
    assert f"content id {impostor.sha256[:16]}" in finding["message"]
    assert f"pinned one (content id {record.sha256[:16]}" in finding["message"]


def _registry_project(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """A spec over registry assets (base folder by path, LoRA and ControlNet by name), locked."""
    from assetkit.registry import Registry

    monkeypatch.setenv("ASSETKIT_HOME", str(tmp_path / "home"))
    with Registry() as registry:
        registry.add(project / "cn", name="cn1")
        sha = registry.add(project / "lora.safetensors", name="lora-one").record.sha256
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"base: {project / 'sd1'}\nloras: [lora-one]\ncontrolnets: [cn1]\n")
    assert _cli("lock", str(spec)).exit_code == 0
    return tmp_path / "spec.lock", sha


def test_a_removed_registry_asset_is_named_with_how_to_get_it_back(project: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from assetkit.registry import Registry

    lock, _ = _registry_project(project, tmp_path, monkeypatch)
    cn_sha = {c["role"]: c for c in json.loads(lock.read_text())["components"]}["controlnet[0]"]["registry"]["sha256"]
    with Registry() as registry:
        registry.rm("cn1")
    result = _cli("check", str(lock), "--no-smoke", "--json")
    assert result.exit_code == 1
    doc = json.loads(result.output)
    (finding,) = doc["suites"]["lock"]["findings"]
    assert finding["code"] == "lock-registry-missing" and finding["where"] == "controlnet[0] cn1"
    message = finding["message"]
    assert f"registry asset 'cn1' (content id {cn_sha[:16]}...) is no longer in the registry" in message
    assert "assetkit registry add PATH --name cn1" in message and f"registry pull --lock {lock}" in message
    assert "views" not in message  # not the registry's internal folder
    # every later stage says it did not run on the pinned files (none "passes" on other files)
    for stage in ("validate", "compatibility"):
        assert [f["code"] for f in doc["suites"][stage]["findings"]] == [f"{stage}-not-run"]
        assert "the lock stage failed" in doc["suites"][stage]["findings"][0]["message"]
    assert doc["compatibility"] is None


def test_a_pinned_name_that_now_names_another_asset_says_so_and_nothing_runs_on_it(
        project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from assetkit.registry import Registry

    lock, sha = _registry_project(project, tmp_path, monkeypatch)
    other = tmp_path / "other-lora.safetensors"
    from assetkit.factory.pipeline_assets import save_tiny_lora

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_tiny_lora(project / "sd1", other, naming="kohya", seed=3)
    with Registry() as registry:
        registry.rm("lora-one")
        newcomer = registry.add(other, name="kohya1").record
        registry.rename("kohya1", "lora-one")
    result = _cli("check", str(lock), "--json")
    assert result.exit_code == 1
    doc = json.loads(result.output)
    (finding,) = doc["suites"]["lock"]["findings"]
    assert finding["code"] == "lock-registry-changed" and finding["where"] == "lora[0] lora-one"
    assert (f"registry name 'lora-one' now names another asset (#{newcomer.id} lora-one, content id "
            f"{newcomer.sha256[:16]}...), not the pinned one (content id {sha[:16]}...)") in finding["message"]
    assert "size" not in finding["message"]
    assert [f["code"] for f in doc["suites"]["compatibility"]["findings"]] == ["compatibility-not-run"]
    assert [f["code"] for f in doc["suites"]["smoke"]["findings"]] == ["smoke-not-run"]
    assert doc["compatibility"] is None


def test_lock_changed_compares_sizes_with_sizes(copy: Path) -> None:
    _lock(copy)
    lora = copy / "lora.safetensors"
    lora.write_bytes(lora.read_bytes() + b" ")
    result = _cli("check", str(copy / "spec.lock"), "--no-smoke", "--json")
    (finding,) = json.loads(result.output)["suites"]["lock"]["findings"]
    size = lora.stat().st_size
    assert finding["message"] == (f"{lora.resolve()} changed since the lock (size {size} bytes != pinned "
                                  f"{size - 1} bytes)")


def test_old_versions_read_and_future_versions_refused(copy: Path) -> None:
    doc = _lock(copy)
    v1 = {"assetkit_lock": 1, "spec": doc["spec"],
          "components": [{"role": c["role"], "name": c["name"], "path": str((copy / c["path"]).resolve()),
                          "registry_id": None, "files": c["files"]} for c in doc["components"]]}
    (copy / "v1.lock").write_text(json.dumps(v1))
    old = read_lock(copy / "v1.lock")
    assert old.version == 1 and old.components[1].path == str((copy / "lora.safetensors").resolve())
    assert _cli("check", str(copy / "v1.lock"), "--no-smoke").exit_code == 0
    (copy / "future.lock").write_text(json.dumps({**doc, "assetkit_lock": 3}))
    result = _cli("check", str(copy / "future.lock"), "--no-smoke")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "lock version 3" in result.stderr and "newer" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("edit", ["drop", "rename", "repeat", "empty"])
def test_a_hand_edited_lock_whose_components_do_not_match_its_spec_is_refused(copy: Path, edit: str) -> None:
    doc = _lock(copy)
    lora = doc["components"][1]
    if edit == "drop":  # the spec's LoRA would pass the gate without being pinned, hashed or checked
        doc["components"].remove(lora)
    elif edit == "rename":
        lora["role"] = "lora[7]"
    elif edit == "repeat":
        doc["components"].append(lora)
    else:
        doc["components"] = []
    (copy / "spec.lock").write_text(json.dumps(doc))
    result = _cli("check", str(copy / "spec.lock"), "--no-smoke")
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [result.output.strip()]
    assert "its components do not match its spec" in result.output


def test_single_file_conversion_is_cached_by_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A single file is converted to a diffusers folder once per sha256, under the registry root;
    the second use converts nothing, changed bytes get their own folder."""
    from safetensors import safe_open

    from assetkit.factory import make_fixture
    from assetkit.pipeline.assemble import as_diffusers_folder

    monkeypatch.setenv("ASSETKIT_HOME", str(tmp_path / "home"))
    vae = make_fixture("vae_sd", tmp_path, "safetensors", full=True)  # sparse: the released VAE's shapes
    first = as_diffusers_folder(vae)
    assert first == tmp_path / "home" / "assembled" / hashlib.sha256(vae.read_bytes()).hexdigest()
    weights = first / "diffusion_pytorch_model.safetensors"
    with safe_open(str(weights), "pt") as fh:
        assert "decoder.conv_in.weight" in set(fh.keys())
    written = weights.stat().st_mtime_ns
    assert as_diffusers_folder(vae) == first and weights.stat().st_mtime_ns == written
    assert as_diffusers_folder(vae, sha256=hashlib.sha256(vae.read_bytes()).hexdigest()) == first  # a lock's pin
    with open(vae, "r+b") as fh:
        fh.seek(-1, 2)
        fh.write(b"\x01")
    second = as_diffusers_folder(vae)
    assert second != first and second.name == hashlib.sha256(vae.read_bytes()).hexdigest()
    shutil.rmtree(tmp_path / "home")


def test_a_lock_that_is_not_json_says_json_with_its_line(copy: Path) -> None:
    (copy / "bad.lock").write_text("{not json\n")
    (copy / "cut.lock").write_text('{"assetkit_lock": 2,\n')
    for name, line in (("bad.lock", 1), ("cut.lock", 2)):
        result = _cli("check", str(copy / name), "--no-smoke")
        assert result.exit_code == 2
        assert result.output.strip().splitlines() == [result.output.strip()]
        assert f"{copy / name}:{line}: not valid JSON (a lock is JSON): " in result.output
        assert "YAML" not in result.output


def test_a_hand_edited_spec_section_is_refused_and_old_locks_still_read(copy: Path) -> None:
    doc = _lock(copy)
    assert doc["spec_sha256"] and doc["spec"]["loras"][0]["scale"] == 0.8
    doc["spec"]["loras"][0]["scale"] = 5.0  # the pins of every file still hold
    (copy / "edited.lock").write_text(json.dumps(doc))
    result = _cli("check", str(copy / "edited.lock"), "--json")
    assert result.exit_code == 1
    out = json.loads(result.output)
    assert [f["code"] for f in out["suites"]["lock"]["findings"]] == ["lock-spec-changed"]
    assert [f["code"] for f in out["suites"]["smoke"]["findings"]] == ["smoke-not-run"]
    del doc["spec_sha256"]  # a lock written before locks pinned their spec: read, with a warning
    doc["spec"]["loras"][0]["scale"] = 0.8
    (copy / "old.lock").write_text(json.dumps(doc))
    result = _cli("check", str(copy / "old.lock"), "--no-smoke", "--json")
    assert result.exit_code == 0, result.output
    findings = json.loads(result.output)["suites"]["lock"]["findings"]
    assert [(f["code"], f["severity"]) for f in findings] == [("lock-spec-unpinned", "warning")]


def test_check_names_the_junit_file_as_junit_not_as_the_report(copy: Path) -> None:
    _lock(copy)
    junit = copy / "j.xml"
    result = _cli("check", str(copy / "spec.lock"), "--no-smoke", "--junit", str(junit))
    assert result.exit_code == 0 and junit.is_file()
    assert f"junit: {junit}" in result.output.splitlines() and "report:" not in result.output
