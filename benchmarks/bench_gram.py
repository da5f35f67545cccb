"""pytest-benchmark view of benchmarks/cases/gram.py:

python -m pytest benchmarks/bench_gram.py --benchmark-only -q [-k CASE]
"""

from benchmarks.cases import gram
from benchmarks.pytest_cases import family_benchmark

test_gram = family_benchmark(gram)
