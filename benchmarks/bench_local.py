"""pytest-benchmark view of benchmarks/cases/local.py:

python -m pytest benchmarks/bench_local.py --benchmark-only -q [-k CASE]
"""

from benchmarks.cases import local
from benchmarks.pytest_cases import family_benchmark

test_local = family_benchmark(local)
