"""Property-based fuzzing of the pickle interpreter: random and mutated streams raise only our
own error types, never hang (opcode caps) and never grow memory without bound; and whatever
parses successfully satisfies what a successful parse must (:func:`_check_success`)."""

from __future__ import annotations

import contextlib
import pickle
import pickletools
import tracemalloc

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assetkit.formats.pickle_vm import Limits, PickleVMError, run_pickle

LIMITS = Limits(max_opcodes=20_000, max_memo=2_000, max_stack=5_000, max_marks=500, max_bytes=1 << 20,
                max_item=1 << 18, max_frame=1 << 18, max_persistent_ids=500, max_line=4096)

SEEDS = [
    pickle.dumps(value, protocol=protocol)
    for protocol in range(6)
    for value in ({"a": [1, 2.5, "x"], "b": (None, True)}, [b"bytes", {1, 2}, frozenset({3})], "text" * 5)
]
OPCODE_BYTES = st.sampled_from(list(b"()0123FIJKLMNPQRSTUVXabcde}ghijl]opqrstu\x80\x81\x82\x83\x84\x85\x86\x87"
                                    b"\x88\x89\x8a\x8b\x8c\x8d\x8e\x8f\x90\x91\x92\x93\x94\x95\x96\x97\x98GBC."))


#: Opcodes through which a pickle can reach code; a stream without them is plain data, which the
#: standard unpickler may load in this test as the oracle.
_CODE_OPCODES = frozenset({"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "BUILD", "NEWOBJ", "NEWOBJ_EX",
                           "EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID"})


def _opcode_names(data: bytes) -> list[str] | None:
    """The opcode names up to STOP, walked by pickletools (nothing is run); None when it cannot walk."""
    try:
        return [op.name for op, _arg, _pos in pickletools.genops(data)]
    except Exception:  # noqa: BLE001 - pickletools' own errors vary
        return None


def _check_success(data: bytes, value, trace) -> None:
    """Invariants of a successful parse."""
    assert trace.stopped, "a parse that returns must have ended at STOP"
    assert 0 < trace.end <= len(data) and data[trace.end - 1: trace.end] == b".", trace.end
    assert trace.opcodes <= LIMITS.max_opcodes
    for ref in trace.globals:  # every global is named by bytes that are in the stream
        assert ref.module.encode("utf-8", "surrogatepass") in data or ref.opcode == "STACK_GLOBAL", ref
        assert 0 <= ref.position < trace.end
    names = _opcode_names(data[: trace.end])
    if names is not None and not _CODE_OPCODES.intersection(names):
        assert not trace.globals and not trace.persistent_ids
        try:
            expected = pickle.loads(data[: trace.end])  # plain data only (checked above): nothing can run
        except Exception:  # noqa: BLE001 - the standard unpickler refusing is no invariant of ours
            return
        assert repr(value) == repr(expected), (value, expected)


def _run(data: bytes) -> None:
    try:
        value, trace = run_pickle(data, limits=LIMITS)
    except PickleVMError:
        return
    _check_success(data, value, trace)


def test_invariants_hold_for_the_seeds():
    """The oracle part of :func:`_check_success` really runs: every seed parses and equals pickle's."""
    for seed in SEEDS:
        value, trace = run_pickle(seed, limits=LIMITS)
        _check_success(seed, value, trace)
        assert repr(value) == repr(pickle.loads(seed))


@settings(max_examples=400, deadline=2000, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_random_bytes(data: bytes):
    _run(data)


@settings(max_examples=400, deadline=2000, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(OPCODE_BYTES.map(lambda b: bytes([b])), st.binary(max_size=4)), max_size=200))
def test_opcode_soup(parts: list[bytes]):
    _run(b"".join(parts))


@settings(max_examples=400, deadline=2000, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
       st.integers(0, 10_000))
def test_mutated_real_pickles(seed: bytes, flips: list[tuple[int, int]], cut: int):
    data = bytearray(seed)
    for index, value in flips:
        data[index % len(data)] = value
    _run(bytes(data[: max(1, len(data) - cut % len(data))]))


def test_amplification_is_bounded():
    """A stream that keeps duplicating big items stops at a cap with bounded memory."""
    item = b"B" + (1 << 17).to_bytes(4, "little") + b"a" * (1 << 17)
    data = b"\x80\x04" + b"(" + item * 16 + b"l" + b"2" * 10_000 + b"."
    tracemalloc.start()
    with contextlib.suppress(PickleVMError):
        run_pickle(data, limits=LIMITS)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 16 * 1024 * 1024


def test_billion_laughs_memo_is_capped():
    """Nested lists built from memo references cost opcodes, not memory: the opcode cap stops them."""
    data = b"\x80\x02]q\x00" + b"(h\x00h\x00h\x00h\x00lq\x00" * 10_000 + b"."
    try:
        run_pickle(data, limits=LIMITS)
        raise AssertionError("expected a cap")
    except PickleVMError as exc:
        assert "opcodes" in str(exc)
