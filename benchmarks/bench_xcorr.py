"""pytest-benchmark view of benchmarks/cases/xcorr.py:

python -m pytest benchmarks/bench_xcorr.py --benchmark-only -q [-k CASE]
"""

from benchmarks.cases import xcorr
from benchmarks.pytest_cases import family_benchmark

test_xcorr = family_benchmark(xcorr)
