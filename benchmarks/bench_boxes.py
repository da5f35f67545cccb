"""pytest-benchmark view of benchmarks/cases/boxes.py:

    python -m pytest benchmarks/bench_boxes.py --benchmark-only -q [-k CASE]
"""
from benchmarks.pytest_cases import family_benchmark
from benchmarks.cases import boxes

test_boxes = family_benchmark(boxes)
