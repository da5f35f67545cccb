"""pytest-benchmark view of benchmarks/cases/nms.py:

python -m pytest benchmarks/bench_nms.py --benchmark-only -q [-k CASE]
"""

from benchmarks.cases import nms
from benchmarks.pytest_cases import family_benchmark

test_nms = family_benchmark(nms)
