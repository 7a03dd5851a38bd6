"""``assetkit scan``: text and JSON output, summary, JUnit, exit codes."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from assetkit.cli import main

EVIL = b"\x80\x02cos\nsystem\n(X\x04\x00\x00\x00truetR."


def test_missing_path_is_one_line_exit_2(tmp_path: Path):
    out = CliRunner().invoke(main, ["scan", str(tmp_path / "nope.ckpt")])
    assert out.exit_code == 2
    assert out.output.strip().count("\n") == 0 and "no such file" in out.output


def test_text_output_has_verdicts_and_summary(tmp_path: Path):
    (tmp_path / "ok.pkl").write_bytes(pickle.dumps({"a": 1}, 2))
    (tmp_path / "evil.ckpt").write_bytes(EVIL)
    (tmp_path / "wrapped.7z").write_bytes(b"7z\xbc\xaf\x27\x1c" + b"\x00" * 30)
    out = CliRunner().invoke(main, ["scan", str(tmp_path)])
    assert out.exit_code == 1
    assert "UNSAFE" in out.output and "os.system" in out.output and "dangerous" in out.output
    assert "UNSUPPORTED" in out.output
    lines = {line.split()[0]: line.split()[1] for line in out.output.splitlines()[-5:]}
    assert lines == {"safe": "1", "unsafe": "1", "unsupported": "1", "error": "0", "total": "3"}


def test_json_document_and_junit(tmp_path: Path):
    evil = tmp_path / "evil.bin"
    evil.write_bytes(EVIL)
    junit = tmp_path / "report.xml"
    out = CliRunner().invoke(main, ["scan", "--json", "--junit", str(junit), str(evil)])
    assert out.exit_code == 1
    doc = json.loads(out.output)
    assert doc["summary"] == {"safe": 0, "unsafe": 1, "unsupported": 0, "error": 0, "files": 1}
    (result,) = doc["results"]
    assert result["path"] == str(evil) and result["verdict"] == "unsafe"
    finding = result["findings"][0]
    assert set(finding) == {"code", "severity", "message", "where"}
    assert finding["code"] == "unsafe-global" and finding["severity"] == "dangerous"
    xml = junit.read_text()
    assert 'failures="1"' in xml and "os.system" in xml


def test_all_safe_exits_0(tmp_path: Path):
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3], 2))
    out = CliRunner().invoke(main, ["scan", "--json", str(path)])
    assert out.exit_code == 0
    assert json.loads(out.output)["results"][0]["verdict"] == "safe"


def test_scan_command_does_not_import_torch(tmp_path: Path):
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps({"a": 1}, 2))
    code = ("import sys; from assetkit.cli import main; "
            "sys.argv = ['assetkit', 'scan', '--json', sys.argv[1]]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
