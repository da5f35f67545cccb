"""The build's registrations and CPU levels: every op has its loops on every device the build has
(read from the loop tables the op bodies dispatch through), and every CPU level gives the same bits."""

import os
import subprocess
import sys

import torch

import cvops
from cvops import info

LEVELS = ("baseline", "avx2", "avx512", "amx")


def test_every_op_has_a_cpu_kernel_and_a_cuda_kernel_in_a_cuda_build():
    ops = info.registered_ops()
    assert len(ops) >= 23
    devices = ["CPU", "CUDA"] if cvops._C.with_cuda() else ["CPU"]
    missing = [(op, d) for op, keys in ops.items() for d in devices if not keys[d]]
    assert missing == []
    if not cvops._C.with_cuda():  # only the ATen-only (composite) ops count for CUDA there
        with_cuda = {op for op, keys in ops.items() if keys["CUDA"]}
        assert with_cuda == {"_gram_matrix_backward", "_style_loss_backward"}


def test_loop_tables_name_every_op_that_dispatches_through_them():
    tables = {t["family"]: t for t in cvops._C.loop_tables()}
    assert set(tables) == {"bilinear", "binary", "boxes", "gram", "instance_norm", "local", "nms", "xcorr"}
    want = ["CPU", "CUDA"] if cvops._C.with_cuda() else ["CPU"]
    for family, table in tables.items():
        assert table["devices"] == want, family
        assert table["ops"], family
    assert {"nms", "batched_nms", "multiclass_nms", "soft_nms"} == set(tables["nms"]["ops"])
    names = {n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("cvops::")}
    in_tables = {op for t in tables.values() for op in t["ops"]}
    composite = {
        n for n in names if torch._C._dispatch_has_kernel_for_dispatch_key(f"cvops::{n}", "CompositeExplicitAutograd")
    }
    assert names == in_tables | composite
    assert composite == {"_gram_matrix_backward", "_style_loss_backward"}


# Each CPU level runs the multiversioned loops (box rows, NMS suppression, instance norm planes and
# channel blocks, the Gram mirror, the xcorr planes, bit packing, the XNOR tiles (popcounts, or
# AMX int8 tiles at the amx level) and the locally connected rows (small-batch and batch-lanes) in a
# child process; the results must be the same bits.
_PROGRAM = r"""
import sys, torch, cvops
torch.manual_seed(0)
out = {"level": cvops._C.cpu_level()["level"]}
a = torch.rand(300, 4) * 50; a[:, 2:] += a[:, :2]
b = torch.rand(200, 4) * 50; b[:, 2:] += b[:, :2]
for kind in ("iou", "giou", "diou", "ciou"):
    out["box_iou_" + kind] = cvops.box_iou(a, b, kind=kind)
boxes = torch.rand(2000, 4) * 100; boxes[:, 2:] += boxes[:, :2] * 0.2 + 1
scores = torch.rand(2000)
out["nms"] = cvops.nms(boxes, scores, 0.5)
out["nms64"] = cvops.nms(boxes.double(), scores.double(), 0.5)
x = torch.randn(2, 8, 9, 11)
w, bias = torch.randn(3, 8), torch.randn(3, 8)
out["cin"] = cvops.conditional_instance_norm(x, w, bias, torch.tensor([0, 2]))
search, template = torch.randn(2, 20, 22, 22), torch.randn(1, 20, 6, 6)
out["xcorr_full"] = cvops.xcorr(search, template)
out["xcorr_depthwise"] = cvops.xcorr(search, template, mode="depthwise")
out["cin_cl"] = cvops.conditional_instance_norm(x.to(memory_format=torch.channels_last), w, bias, torch.tensor([1, 2]))
out["gram"] = cvops.gram_matrix(torch.randn(2, 67, 5, 7))
xb, wb = torch.randn(3, 130, 9, 8), torch.randn(21, 130, 3, 3)
out["pack_bits"] = cvops.pack_bits(xb)
out["pack_bits_cl"] = cvops.pack_bits(xb.contiguous(memory_format=torch.channels_last))
out["pack_clip"] = torch.ops.cvops._pack_bits(xb.double(), 1.0)
bounds = torch.randn(2, 130).sort(0).values
out["pack_bounds"] = torch.ops.cvops._pack_bits(xb, None, bounds)
out["pack_bounds_cl"] = torch.ops.cvops._pack_bits(xb.contiguous(memory_format=torch.channels_last), None, bounds)
for pad in (0.0, 1.0):
    out[f"xnor{pad}"] = cvops.xnor_conv2d(xb, wb, padding=1, dilation=(1, 2), pad_value=pad, scaling="alpha_k")
out["xnor64"] = cvops.xnor_conv2d(xb.double(), wb.double(), stride=2, bias=torch.randn(21).double())
# The AMX tiles: 16 output pixels from one run of the padded input (stride 1) or from one output
# row (a 16-wide output, strides), filter tiles in pairs and alone, the linear layer's batch rows.
xw, ww = torch.randn(2, 70, 6, 16), torch.randn(40, 70, 3, 3)
out["xnor_rows"] = cvops.xnor_conv2d(xw, ww, padding=1, pad_value=-1.0, bias=torch.randn(40))
out["xnor_stride"] = cvops.xnor_conv2d(xw, ww, stride=(2, 1), padding=(0, 1), scaling="alpha_k")
out["xnor_linear"] = cvops.xnor_linear(torch.randn(37, 300), torch.randn(50, 300), bias=torch.randn(50))
lx, lw = torch.randn(3, 5, 9, 8, requires_grad=True), torch.randn(7, 6, 4, 5, 3, 3, requires_grad=True)
out["local"] = cvops.locally_connected2d(lx, lw)
out["local_grad_x"], out["local_grad_w"] = torch.autograd.grad((out["local"] * torch.randn(3, 4, 7, 6)).sum(), (lx, lw))
# Past 4 samples the batch is the vector dimension: 21 samples fill whole and partial vectors.
lx = torch.randn(21, 5, 9, 8)
out["local_lanes"] = cvops.locally_connected2d(lx, torch.randn(5, 2, 6, 5, 3, 3), stride=2, padding=(1, 0), dilation=(1, 2))
out["local_lanes64"] = cvops.locally_connected2d(lx.double(), torch.randn(9, 8, 6, 5, 3, 3).double(), padding=1)
torch.save(out, sys.argv[1])
"""


def _run_at(level, path):
    env = dict(os.environ, CVOPS_CPU_LEVEL=level)
    subprocess.run([sys.executable, "-c", _PROGRAM, str(path)], env=env, check=True, timeout=120)
    return torch.load(path)


def test_every_cpu_level_computes_the_same_bits(tmp_path):
    supported = cvops._C.cpu_level()["supported"]
    levels = LEVELS[: LEVELS.index(supported) + 1]
    results = {level: _run_at(level, tmp_path / f"{level}.pt") for level in levels}
    reference = results["baseline"]
    for level, result in results.items():
        assert result.pop("level") == level
        reference.pop("level", None)
        for name, value in reference.items():
            assert torch.equal(result[name], value), (level, name)


def _level_at(value):
    env = dict(os.environ, CVOPS_CPU_LEVEL=value)
    code = "import cvops; print(cvops._C.cpu_level()['level'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


def test_cpu_level_never_passes_the_cpu_and_amx_runs_only_on_request():
    supported = LEVELS.index(cvops._C.cpu_level()["supported"])
    avx512 = LEVELS.index("avx512")
    assert _level_at("") == LEVELS[min(supported, avx512)]  # unset: never amx
    for level in LEVELS:
        assert _level_at(level) == LEVELS[min(supported, LEVELS.index(level))]
    env = dict(os.environ, CVOPS_CPU_LEVEL="sse9")
    code = "import torch, cvops; cvops.box_iou(torch.rand(3, 4), torch.rand(2, 4))"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0
    assert "CVOPS_CPU_LEVEL must be 'baseline', 'avx2', 'avx512' or 'amx', got 'sse9'" in bad.stderr
