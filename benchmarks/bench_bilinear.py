"""pytest-benchmark view of benchmarks/cases/bilinear.py:

python -m pytest benchmarks/bench_bilinear.py --benchmark-only -q [-k CASE]
"""

from benchmarks.cases import bilinear
from benchmarks.pytest_cases import family_benchmark

test_bilinear = family_benchmark(bilinear)
