"""pytest-benchmark view of benchmarks/cases/instance_norm.py:

python -m pytest benchmarks/bench_instance_norm.py --benchmark-only -q [-k CASE]
"""

from benchmarks.cases import instance_norm
from benchmarks.pytest_cases import family_benchmark

test_instance_norm = family_benchmark(instance_norm)
