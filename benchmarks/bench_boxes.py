"""pytest-benchmark view of benchmarks/cases/boxes.py:

python -m pytest benchmarks/bench_boxes.py --benchmark-only -q [-k CASE]
"""

from benchmarks.cases import boxes
from benchmarks.pytest_cases import family_benchmark

test_boxes = family_benchmark(boxes)
