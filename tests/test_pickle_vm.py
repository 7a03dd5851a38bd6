"""The pickle interpreter: every opcode, values equal to what pickle builds, caps, inert globals."""

from __future__ import annotations

import pickle
import pickletools
import struct
from collections import OrderedDict

import pytest

from assetkit.formats.pickle_vm import (
    ALLOWLIST,
    OPCODE_NAMES,
    InertDict,
    Limits,
    PickleLimitError,
    PickleVMError,
    UnknownCall,
    UnknownGlobal,
    run_pickle,
)

VALUES = [
    None, True, False, 0, 1, -1, 255, 256, 65535, 65536, -2**31, 2**31, 2**64, -2**100, 1.5, float("inf"),
    "", "text", "ünïcödé ✓", "a\nb", b"", b"bytes\x00\xff", bytearray(b"ba"), (), (1,), (1, 2), (1, 2, 3),
    (1, 2, 3, 4), [], [1, [2, [3]]], {}, {"a": 1, 2: "b", (1, 2): [3]}, {1, 2, 3}, frozenset({"x", 4}),
    {"nested": {"deep": [{"k": (None, True)}]}}, "x" * 300, b"y" * 70000, list(range(2000)),
    {str(i): i for i in range(1500)},
]


@pytest.mark.parametrize("protocol", range(0, 6))
def test_values_match_pickle(protocol: int):
    for value in VALUES:
        data = pickle.dumps(value, protocol=protocol)
        got, trace = run_pickle(data)
        assert got == value and type(got) is type(value), (protocol, value)
        assert trace.stopped
        assert all(g.allowed for g in trace.globals), trace.globals


@pytest.mark.parametrize("protocol", range(0, 6))
def test_shared_references_and_recursion(protocol: int):
    shared = [1, 2]
    value = {"a": shared, "b": shared}
    loop: list = []
    loop.append(loop)
    got, _ = run_pickle(pickle.dumps(value, protocol=protocol))
    assert got["a"] is got["b"]
    got_loop, _ = run_pickle(pickle.dumps(loop, protocol=protocol))
    assert got_loop[0] is got_loop


def test_every_opcode_has_a_handler():
    assert {op.name for op in pickletools.opcodes} == set(OPCODE_NAMES.values())
    assert {op.code.encode("latin-1")[0] for op in pickletools.opcodes} == set(OPCODE_NAMES)


def test_ordered_dict_is_allowlisted_and_inert():
    got, trace = run_pickle(pickle.dumps(OrderedDict(a=1, b=2), protocol=2))
    assert isinstance(got, InertDict) and list(got) == ["a", "b"]
    assert [g.qualname for g in trace.globals] == ["collections.OrderedDict"]
    assert trace.globals[0].allowed


def test_unknown_global_is_a_placeholder_never_imported():
    data = b"\x80\x02cos\nsystem\n(X\x02\x00\x00\x00lstR."
    got, trace = run_pickle(data)
    assert isinstance(got, UnknownCall)
    assert isinstance(got.func, UnknownGlobal) and got.func.qualname == "os.system"
    assert trace.unknown_names() == ["os.system"]
    assert [e.kind for e in trace.events] == ["call-unknown"]
    assert trace.events[0].target == "os.system"


def test_dotted_names_are_never_walked():
    data = b"\x80\x04\x8c\x13torch.serialization\x8c\tos.system\x93."
    got, trace = run_pickle(data)
    assert isinstance(got, UnknownGlobal)
    assert not trace.globals[0].allowed
    assert trace.globals[0].name == "os.system"


def test_python2_names_are_canonicalised_for_protocol_below_3():
    _, trace = run_pickle(b"\x80\x02c__builtin__\nset\n]\x85R.")
    assert trace.globals[0].canonical == "builtins.set" and trace.globals[0].allowed
    _, trace = run_pickle(b"\x80\x04c__builtin__\nset\n]\x85R.")
    assert not trace.globals[0].allowed  # protocol 4 does not map: __builtin__ does not exist


def test_allowlist_is_exact():
    assert ("torch._utils", "_rebuild_tensor_v2") in ALLOWLIST
    assert ("torch", "HalfStorage") in ALLOWLIST
    assert ("torch", "load") not in ALLOWLIST
    assert not any("." in name for _, name in ALLOWLIST)


def test_ext_opcode_is_traced_not_resolved():
    _, trace = run_pickle(b"\x80\x02\x82\x01)R.")
    assert [e.kind for e in trace.events][:1] == ["ext"]
    assert trace.globals[0].opcode == "EXT"


def test_positions_and_stop():
    data = pickle.dumps({"a": 1}, 2)
    _, trace = run_pickle(data + b"junk", where="f")
    assert trace.stopped and trace.end == len(data)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "no STOP"),
        (b"\x80\x02", "no STOP"),
        (b"\x80\x09N.", "unsupported pickle protocol"),
        (b"\xff", "invalid opcode"),
        (b"0.", "MARK expected"),
        (b"t.", "MARK expected"),
        (b"h\x05.", "memo entry 5"),
        (b"X\xff\xff\xff\x00abc.", "truncated"),
        (b"ca\n", "no end of line"),
        (b"](NNu.", "SETITEM on a list"),
        (b"}]]s.", "unhashable"),
        (b"R.", "stack underflow"),
        (b"\x80\x04\x95\xff\x00\x00\x00\x00\x00\x00\x00N.", "frame runs past"),
        (b"Ifoo\n.", "INT argument"),
        (b"\x80\x04K\x01K\x02\x93.", "STACK_GLOBAL requires"),
        (b"N\x97.", "out-of-band"),
        (b".", "empty stack"),
    ],
)
def test_errors_are_ours_and_name_the_problem(data: bytes, fragment: str):
    with pytest.raises(PickleVMError) as info:
        run_pickle(data, where="x.pkl")
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("x.pkl: ")


@pytest.mark.parametrize(
    ("limits", "data"),
    [
        (Limits(max_opcodes=100), b"N0" * 100 + b"N."),
        (Limits(max_memo=10), b"N" + b"".join(b"q" + bytes([i]) for i in range(20)) + b"."),
        (Limits(max_stack=50), b"N" * 60 + b"."),
        (Limits(max_marks=5), b"(" * 10 + b"N."),
        (Limits(max_bytes=100), b"X\x40\x00\x00\x00" + b"a" * 64 + b"0" + b"X\x40\x00\x00\x00" + b"a" * 64 + b"."),
        (Limits(max_item=10), b"B\x20\x00\x00\x00" + b"a" * 32 + b"."),
        (Limits(max_frame=10), b"\x80\x04\x95\x20\x00\x00\x00\x00\x00\x00\x00" + b"N" * 31 + b"."),
        (Limits(max_persistent_ids=2), b"NQ0" * 3 + b"N."),
        (Limits(max_line=8), b"I" + b"1" * 20 + b"\n."),
    ],
)
def test_caps_raise_a_limit_error(limits: Limits, data: bytes):
    with pytest.raises(PickleLimitError):
        run_pickle(data, limits=limits)


def test_deeply_nested_dict_key_is_refused_not_a_crash():
    # 100,000 nested 1-tuples used as a dict key would overflow the C stack when hashed.
    data = b"\x80\x02}N" + b"\x85" * 100_000 + b"Ns."
    with pytest.raises(PickleVMError, match="nested deeper"):
        run_pickle(data)


def test_numpy_scalar_decoded_inertly():
    import numpy as np

    got, trace = run_pickle(pickle.dumps({"step": np.int64(7), "lr": np.float32(0.25)}, protocol=2))
    assert got == {"step": 7, "lr": 0.25}
    assert not any(g.allowed for g in trace.globals if g.module.startswith("numpy"))


def test_persistent_ids_go_through_the_callback():
    seen = []
    data = b"\x80\x02(X\x07\x00\x00\x00storageK\x01tQ."
    got, trace = run_pickle(data, persistent_load=lambda pid, pos: seen.append(pid) or "S")
    assert got == "S" and seen == [("storage", 1)]
    assert trace.persistent_ids == 1


def test_binfloat_long_and_text_protocol_values():
    data = b"G" + struct.pack(">d", 2.5) + b"0L12345678901234567890L\n0F1.25\n0V\\u00e9\n0S'a\\nb'\n."
    got, _ = run_pickle(data)
    assert got == "a\nb"


def test_runs_on_an_mmap(tmp_path):
    import mmap

    path = tmp_path / "p.pkl"
    path.write_bytes(pickle.dumps({"k": list(range(10))}, 2))
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        got, _ = run_pickle(mapped)
    assert got == {"k": list(range(10))}
