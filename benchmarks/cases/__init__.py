"""Benchmark cases, one module per op family, shared by run.py and the pytest-benchmark files.

A family module exposes `cases(device) -> list[Case]`; add it to FAMILIES at the bottom.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

Closure = Callable[[], torch.Tensor]


@dataclass(frozen=True)
class Case:
    """One cvops-vs-peer comparison.

    build() makes the inputs and returns the zero-arg closures (peer_fn, cvops_fn) over them, each
    returning the tensor to compare. It runs only for the cases selected, outside the timed region.
    """

    op: str
    shape: str
    device: str
    peer: str
    build: Callable[[], tuple[Closure, Closure]]
    peak_memory: bool = False  # report peak CUDA memory of one call
    quick: bool = False  # part of the --quick run
    rtol: float = 1e-3  # agreement check; looser for low-precision dtypes
    atol_scale: float = 1e-4  # agreement check's atol, as a fraction of the peer output's largest value
    bytes_moved: int = 0  # fewest bytes one cvops call must move (inputs read, outputs written): GB/s
    family: str = ""  # the family module's name (gram for benchmarks/cases/gram.py), set by all_cases

    @property
    def label(self):
        return f"{self.op} {self.shape} {self.device}"


def available_devices():
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def family_name(module):
    return module.__name__.rsplit(".", 1)[-1]


def all_cases(devices):
    return [
        replace(case, family=family_name(family))
        for device in devices
        for family in FAMILIES
        for case in family.cases(device)
    ]


# Imported last: the family modules import Case from this package.
from benchmarks.cases import bilinear, binary, boxes, gram, instance_norm, local, nms, xcorr  # noqa: E402

FAMILIES = [gram, instance_norm, boxes, nms, bilinear, xcorr, local, binary]
