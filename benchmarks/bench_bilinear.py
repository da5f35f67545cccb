"""pytest-benchmark view of benchmarks/cases/bilinear.py:

    python -m pytest benchmarks/bench_bilinear.py --benchmark-only -q [-k CASE]
"""
from benchmarks.pytest_cases import family_benchmark
from benchmarks.cases import bilinear

test_bilinear = family_benchmark(bilinear)
