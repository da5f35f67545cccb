"""pytest-benchmark view of benchmarks/cases/binary.py:

python -m pytest benchmarks/bench_binary.py --benchmark-only -q [-k CASE]
"""

from benchmarks.cases import binary
from benchmarks.pytest_cases import family_benchmark

test_binary = family_benchmark(binary)
