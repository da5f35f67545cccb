"""The pytest-benchmark view of a family's report cases (benchmarks/cases/<family>.py), shared by
every benchmarks/bench_<family>.py. Each case gives two tests, peer and cvops, in one benchmark
group so they print side by side. Not part of the test suite (testpaths is tests/)."""

import pytest
import torch

from benchmarks.cases import available_devices


def case_id(case):
    return f"{case.op}-{case.shape}-{case.device}".replace(" ", "_")


def synchronized(fn):
    def run():
        out = fn()
        torch.cuda.synchronize()  # time the kernels, not their launch
        return out

    return run


def family_benchmark(family):
    """A parametrised pytest-benchmark test over every case of `family` on every device."""
    cases = [case for device in available_devices() for case in family.cases(device)]

    @pytest.mark.parametrize("impl", ["peer", "cvops"])
    @pytest.mark.parametrize("case", cases, ids=case_id)
    def test(benchmark, case, impl):
        peer_fn, cvops_fn = case.build()
        fn = cvops_fn if impl == "cvops" else peer_fn
        if case.device == "cuda":
            fn = synchronized(fn)
        benchmark.group = case_id(case)
        benchmark.extra_info["peer"] = case.peer
        fn()  # warm-up: one-off allocations and lazy initialisation stay out of the timing
        benchmark(fn)

    return test
