"""Deployment of every model's inference path: torch.export.export with a dynamic batch dimension
(run at a batch size other than the exported one), torch.export.save / load through a file, the loaded
program (which calls the torch.ops.cvops ops by name) against eager, also in a fresh process that only
imports torch and cvops; and AOTInductor packages (aoti_compile_and_package / aoti_load_package) of
DetectionPostprocess and of the packed XNOR digits CNN (its bit-packed ops called from the package's
C++), on CPU and, marked cuda, DetectionPostprocess on the GPU."""

import dataclasses
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn
from torch.export import Dim

from cvops.models import bilinear_cnn, mfb_vqa, siamfc, style_transfer, xnor_net
from cvops.models.deepface import DeepFace
from cvops.models.detection import DetectionPostprocess, Detections, grid_anchors

# Fields whose values are integers (classes, indices, counts): loaded and eager must agree exactly.
EXACT = {"classes", "indices", "num_valid"}


def batch_dim():
    return Dim("batch", min=1, max=64)


def assert_same(got, want):
    """got (a tensor or a Detections) equals want: within float tolerance, integer fields exactly."""
    assert type(got) is type(want)
    if isinstance(want, torch.Tensor):
        torch.testing.assert_close(got, want)
        return
    for field in dataclasses.fields(want):
        g, w = getattr(got, field.name), getattr(want, field.name)
        if field.name in EXACT:
            assert g.dtype == w.dtype and torch.equal(g, w), field.name
        else:
            torch.testing.assert_close(g, w, msg=lambda m, name=field.name: f"{name}: {m}")


def cvops_ops(program):
    """The names of the torch.ops.cvops ops the exported program calls."""
    return {
        node.target.name()
        for node in program.graph.nodes
        if isinstance(node.target, torch._ops.OpOverload) and node.target.namespace == "cvops"
    }


def check_round_trip(model, args, other_args, dynamic_shapes, path, ops):
    """Export model(*args) with dynamic_shapes, save it to path and load it back: the loaded program
    calls the cvops ops `ops`, and it and the exported program match eager on args and on
    other_args (another batch size). Returns the loaded program's outputs."""
    model.eval()
    program = torch.export.export(model, args, dynamic_shapes=dynamic_shapes)
    torch.export.save(program, path)
    loaded = torch.export.load(path)
    assert cvops_ops(loaded) == {f"cvops::{op}" for op in ops}
    outputs = []
    with torch.no_grad():
        for inputs in (args, other_args):
            want = model(*inputs)
            assert_same(program.module()(*inputs), want)
            got = loaded.module()(*inputs)
            assert_same(got, want)
            outputs.append(got)
    return outputs


def aoti_round_trip(model, args, other_args, dynamic_shapes, path):
    """Package model(*args) with AOTInductor at path, load the package and compare it with eager on
    args and on other_args. Returns the package's outputs."""
    model.eval()
    program = torch.export.export(model, args, dynamic_shapes=dynamic_shapes)
    package = torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    compiled = torch._inductor.aoti_load_package(package)
    outputs = []
    with torch.no_grad():
        for inputs in (args, other_args):
            got = compiled(*inputs)
            assert_same(got, model(*inputs))
            outputs.append(got)
    return outputs


FRESH_LOADER = textwrap.dedent(
    """
    import sys
    import torch
    import cvops
    kind, path, inputs_path, out_path = sys.argv[1:]
    run = torch.export.load(path).module() if kind == "export" else torch._inductor.aoti_load_package(path)
    with torch.no_grad():
        out = run(*torch.load(inputs_path))
    values = (out,) if isinstance(out, torch.Tensor) else tuple(out)
    torch.save((type(out).__name__, values), out_path)
    """
)


def run_in_fresh_process(kind, path, inputs, tmp_path):
    """Load the saved program (kind "export") or AOTInductor package ("aoti") at path in a new Python
    that imports torch and cvops only, run it on inputs; returns (output type name, its tensors)."""
    inputs_path, out_path = tmp_path / "inputs.pt", tmp_path / "outputs.pt"
    torch.save(tuple(inputs), inputs_path)
    command = [sys.executable, "-c", FRESH_LOADER, kind, str(path), str(inputs_path), str(out_path)]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]
    return torch.load(out_path)


# ---------------------------------------------------------------------------- detection


def detection_case(device="cpu"):
    anchors = grid_anchors((4, 4), 16, [(24.0, 24.0), (48.0, 32.0)], device=device)
    model = DetectionPostprocess(anchors, 3, max_per_class=5, max_total=8, image_size=(64, 64)).eval()
    raw = torch.randn(5, anchors.shape[0], 5 + 3, device=device) * 2
    return model, (raw[:2],), (raw[2:],)


def check_detections(outputs, device="cpu"):
    assert all(isinstance(out, Detections) for out in outputs)
    assert outputs[1].boxes.shape == (3, 8, 4) and outputs[1].boxes.device.type == device
    assert (outputs[1].num_valid > 0).all()  # real detections, not only padding


def check_fresh_detections(name_and_values, model, inputs):
    name, values = name_and_values
    assert name == "Detections"
    with torch.no_grad():
        assert_same(Detections(*values), model(*inputs))


def test_detection_postprocess_export_save_load(tmp_path):
    model, args, other = detection_case()
    outputs = check_round_trip(model, args, other, ({0: batch_dim()},), tmp_path / "model.pt2", ["multiclass_nms"])
    check_detections(outputs)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_saved_program_loads_in_a_fresh_process(tmp_path):
    """The loading side needs only torch and cvops: import cvops registers the ops and Detections."""
    model, args, other = detection_case()
    path = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(model, args, dynamic_shapes=({0: batch_dim()},)), path)
    check_fresh_detections(run_in_fresh_process("export", path, other, tmp_path), model, other)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_detection_postprocess_aoti_package(tmp_path):
    model, args, other = detection_case()
    path = tmp_path / "detection.pt2"
    check_detections(aoti_round_trip(model, args, other, ({0: batch_dim()},), path))
    check_fresh_detections(run_in_fresh_process("aoti", path, other, tmp_path), model, other)


@pytest.mark.cuda
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_detection_postprocess_aoti_package_cuda(tmp_path):
    model, args, other = detection_case("cuda")
    check_detections(aoti_round_trip(model, args, other, ({0: batch_dim()},), tmp_path / "detection_cuda.pt2"), "cuda")


# ---------------------------------------------------------------------------- style transfer


@pytest.mark.parametrize("style_form", ["index", "weights"])
def test_transformer_net_export_save_load(tmp_path, style_form):
    num_styles = 3
    model = style_transfer.TransformerNet(num_styles)
    images = torch.rand(5, 3, 16, 16)
    if style_form == "index":  # int64 style indices [B]
        style = torch.tensor([0, 2, 1, 1, 0])
    else:  # mixing weights [B, S]
        style = torch.softmax(torch.randn(5, num_styles), dim=1)
    batch = batch_dim()
    check_round_trip(
        model,
        (images[:2], style[:2]),
        (images[2:], style[2:]),
        ({0: batch}, {0: batch}),
        tmp_path / "model.pt2",
        ["_conditional_instance_norm"],
    )


# ---------------------------------------------------------------------------- bilinear CNN

POOLING_OPS = {
    "full": "_bilinear_pool",
    "compact_ts": "_compact_bilinear_pool_ts",
    "compact_rm": "_compact_bilinear_pool_rm",
    "lowrank": "lowrank_bilinear_score",
}


@pytest.mark.parametrize("pooling", bilinear_cnn.POOLINGS)
def test_bilinear_cnn_export_save_load(tmp_path, pooling):
    model = bilinear_cnn.BilinearCNN(5, pooling, output_dim=64, rank=4, width_mult=1 / 16)
    images = torch.rand(5, 3, 32, 32)
    check_round_trip(
        model, (images[:2],), (images[2:],), ({0: batch_dim()},), tmp_path / "model.pt2", [POOLING_OPS[pooling]]
    )


# ---------------------------------------------------------------------------- MFB / MFH VQA


@pytest.mark.parametrize("high_order", [False, True], ids=["mfb", "mfh"])
@pytest.mark.filterwarnings("ignore:The tensor attributes self.lstm._flat_weights")  # nn.LSTM's, under export
def test_mfb_vqa_export_save_load(tmp_path, high_order):
    model = mfb_vqa.MFBVQA(
        7, 20, image_channels=16, embed_dim=8, hidden_dim=12, k=2, o=6, attention_dim=8, high_order=high_order
    )
    image = torch.randn(5, 16, 3, 3)
    tokens = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0], [6, 0, 0, 0], [7, 8, 9, 10], [11, 12, 0, 0]])
    batch = batch_dim()
    check_round_trip(
        model,
        (image[:2], tokens[:2]),
        (image[2:], tokens[2:]),
        ({0: batch}, {0: batch}),
        tmp_path / "model.pt2",
        ["_factorized_bilinear_pool"],
    )


# ---------------------------------------------------------------------------- XNOR-Net (packed)

XNOR_OPS = ["_pack_bits", "_xnor_conv2d"]


def packed(model, fold_batchnorm=False):
    return xnor_net.pack_model(model.eval(), keep_latent=False, fold_batchnorm=fold_batchnorm)


@pytest.mark.parametrize("fold_batchnorm", [False, True], ids=["packed", "batchnorm_folded"])
def test_packed_xnor_digits_cnn_export_save_load(tmp_path, fold_batchnorm):
    model = packed(xnor_net.xnor_digits_cnn(width=8), fold_batchnorm)
    images = torch.randn(5, 1, 8, 8)
    path = tmp_path / "model.pt2"
    check_round_trip(model, (images[:2],), (images[2:],), ({0: batch_dim()},), path, XNOR_OPS)
    # The saved program holds the binary layers' packed int64 bits, not their latent float weights.
    state = torch.export.load(path).state_dict
    for layer in ("features.4", "features.8"):
        assert state[f"{layer}.packed_bits"].dtype == torch.int64 and f"{layer}.weight" not in state
        assert (f"{layer}.input_bounds" in state) == fold_batchnorm


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_packed_xnor_resnet18_export_save_load(tmp_path):
    model = packed(xnor_net.xnor_resnet18(10, cifar=True))
    images = torch.randn(3, 3, 16, 16)
    check_round_trip(model, (images[:2],), (images[2:],), ({0: batch_dim()},), tmp_path / "model.pt2", XNOR_OPS)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_packed_xnor_digits_cnn_aoti_package(tmp_path):
    model = packed(xnor_net.xnor_digits_cnn(width=8))
    images = torch.randn(5, 1, 8, 8)
    path = tmp_path / "xnor_digits.pt2"
    aoti_round_trip(model, (images[:2],), (images[2:],), ({0: batch_dim()},), path)
    name, (logits,) = run_in_fresh_process("aoti", path, (images[2:],), tmp_path)
    with torch.no_grad():
        want = model(images[2:])
    assert name == "Tensor"
    torch.testing.assert_close(logits, want)


# ---------------------------------------------------------------------------- SiamFC


@pytest.mark.parametrize("exemplars", ["paired", "shared"])
def test_siamfc_export_save_load(tmp_path, exemplars):
    model = siamfc.SiamFC()
    z, x = torch.rand(3, 3, 127, 127) * 255, torch.rand(3, 3, 143, 143) * 255  # response 17 - 14 = 3×3
    batch = batch_dim()
    if exemplars == "paired":  # one exemplar per search image
        args, other, shapes = (z[:2], x[:2]), (z[2:], x[2:]), ({0: batch}, {0: batch})
    else:  # one exemplar z [1, …] for every search image
        args, other, shapes = (z[:1], x[:2]), (z[:1], x[2:]), (None, {0: batch})
    outputs = check_round_trip(model, args, other, shapes, tmp_path / "model.pt2", ["_xcorr"])
    assert outputs[0].shape == (2, 1, 3, 3) and outputs[1].shape == (1, 1, 3, 3)


# ---------------------------------------------------------------------------- DeepFace


class FaceEmbedder(nn.Module):
    """DeepFace's inference path, embed(x), as a module's forward."""

    def __init__(self, model: DeepFace):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.embed(x)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_deepface_embed_export_save_load(tmp_path):
    model = FaceEmbedder(DeepFace(num_classes=10))  # ~100M parameters: a ~400 MB file
    faces = torch.rand(3, 3, DeepFace.INPUT_SIZE, DeepFace.INPUT_SIZE)
    path = tmp_path / "model.pt2"
    outputs = check_round_trip(model, (faces[:2],), (faces[2:],), ({0: batch_dim()},), path, ["_locally_connected2d"])
    assert outputs[1].shape == (1, 4096)
