"""pytest-benchmark view of the gram cases of benchmarks/cases/gram.py (not part of the test suite):

    python -m pytest benchmarks/bench_gram.py --benchmark-only -q [-k "gram_matrix-8x512x28x28-cpu"]

Each case gives two tests, peer and cvops, in one benchmark group so they print side by side.
"""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.cases import available_devices, gram  # noqa: E402

CASES = [case for device in available_devices() for case in gram.cases(device)]


def case_id(case):
    return f"{case.op}-{case.shape}-{case.device}".replace(" ", "_")


@pytest.mark.parametrize("impl", ["peer", "cvops"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_gram(benchmark, case, impl):
    peer_fn, cvops_fn = case.build()
    fn = cvops_fn if impl == "cvops" else peer_fn
    if case.device == "cuda":
        fn = synchronized(fn)
    benchmark.group = case_id(case)
    benchmark.extra_info["peer"] = case.peer
    fn()  # warm-up: one-off allocations and lazy initialisation stay out of the timing
    benchmark(fn)


def synchronized(fn):
    def run():
        out = fn()
        torch.cuda.synchronize()  # time the kernels, not their launch
        return out

    return run
