"""Property-based fuzzing of the pickle interpreter: random and mutated streams raise only our
own error types, never hang (opcode caps) and never grow memory without bound."""

from __future__ import annotations

import contextlib
import pickle
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


def _run(data: bytes) -> None:
    with contextlib.suppress(PickleVMError):
        run_pickle(data, limits=LIMITS)


@settings(max_examples=400, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_random_bytes(data: bytes):
    _run(data)


@settings(max_examples=400, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(OPCODE_BYTES.map(lambda b: bytes([b])), st.binary(max_size=4)), max_size=200))
def test_opcode_soup(parts: list[bytes]):
    _run(b"".join(parts))


@settings(max_examples=400, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
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
