"""pytest-benchmark view of benchmarks/cases/gram.py:

    python -m pytest benchmarks/bench_gram.py --benchmark-only -q [-k CASE]
"""
from benchmarks.pytest_cases import family_benchmark
from benchmarks.cases import gram

test_gram = family_benchmark(gram)
