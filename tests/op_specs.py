"""One table of every cvops callable, for the bad-input tests (tests/test_bad_inputs.py): each public
op of cvops.ops.__all__, each module of cvops.nn.__all__ and each raw torch.ops.cvops op (the backward
ops included). A spec says how to build one valid set of arguments and what each argument is; the
tests derive the bad inputs from that (a wrong dtype, rank or device, None, a non-tensor, a wrong
type of option) and require a `cvops.<name>: ` error that names the argument.

Adding an op is one entry in SPECS, e.g.

    spec("my_op", public("my_op"), lambda s: dict(x=rand(s, s.b, s.c, s.h, s.w), k=2),
         dict(x=T(FLOATING, rank=4), k=N("int"))),

- name: the name the errors carry (`cvops.<name>: `). Raw ops use the C++ op name: the schema name
  without its leading underscore (and without _ts / _rm for the compact pools).
- call: public("name") for cvops.<name>, raw("_name") for torch.ops.cvops._name, module(Class,
  *constructor argument names) for an nn module (the other arguments go to forward); or any
  function taking the arguments by keyword.
- make(s): one valid set of arguments, by name, in call order, from the drawn sizes s (Sizes:
  s.b batch, s.c and s.d channel counts, s.h and s.w a plane, s.spatial 0-2 free spatial dims, s.dtype
  float32 or float64). Keep tensors small; build a backward op's saved tensors by running its forward.
- args: every argument of make's dict. T(dtypes, rank=...) for a tensor: dtypes is the class it
  accepts (FLOATING, INDEX = int64, INTEGER, REAL = floating or integer, STYLE = int64 or floating,
  NUMERIC = floating, integer or bool, ANY);
  rank is the exact rank, a (min, max) range (max None: unbounded), the name of the argument whose rank
  it must equal, or None (any); optional=True where None is valid; accepts_int=True where an int may
  stand for it. N(kind) for anything else: kind is one of WRONG_VALUES' keys; optional=True where None
  is valid.
- names: further names its errors may carry (a module's errors from the ops it calls).
- holds_tensors: a module with parameters or buffers (moving its one input to meta mixes devices).
- meta=False for ops whose output shapes depend on the data (meta tensors cannot run them).

A new family (binary XNOR convolution, cross-correlation, locally connected layers): add its public
ops, modules and raw ops (forward and backward) here, one spec each; test_bad_inputs.py's coverage
test lists every op of the build and fails until each has a spec. Convolution-like inputs are
T(FLOATING, rank=4), weights T(FLOATING, rank=4) (or 6 for an unshared locally connected weight),
stride/padding/dilation N("int_pair"); a kind of argument that WRONG_VALUES lacks is a new entry there.
"""

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

import cvops

FLOATING, INDEX, INTEGER, REAL, STYLE, NUMERIC, ANY = "floating", "index", "integer", "real", "style", "numeric", "any"

# The dtypes each class accepts; the tests substitute the others of BAD_DTYPES.
ACCEPTED = {
    FLOATING: {torch.float16, torch.bfloat16, torch.float32, torch.float64},
    INDEX: {torch.int64},
    INTEGER: {torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8},
    REAL: {torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64, torch.int32},
    STYLE: {torch.int64, torch.float16, torch.bfloat16, torch.float32, torch.float64},
    NUMERIC: {torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64, torch.int32, torch.bool},
    ANY: None,
}
BAD_DTYPES = (torch.int64, torch.int32, torch.bool, torch.complex64, torch.float32)

# Wrong values for each kind of non-tensor argument. The dispatcher converts some types itself (a
# bool or int where a float or bool is declared, None for a bool), so raw ops get only the values
# it refuses (raw_ok).
WRONG_VALUES = {
    "bool": [(1, False), ("yes", True), (None, False), (2.5, False), ([True], True)],
    "int": [(2.5, True), (True, False), ("3", True), (None, True)],
    "float": [("0.5", True), (None, True), (True, False), ([0.5], True)],
    "choice": [(3, True), (None, True), (True, False), (["x"], False)],
    "gram_normalize": [(None, False), (True, False), ([1.0], False)],  # a choice or a positive number
    "params": [(3, False), ([1, 2], False)],  # compact_bilinear_pool's tuple of tensors
    "device": [(2.5, False), (["cpu"], False)],
    "dtype": [(2.5, False), ("float32", False)],  # a ScalarType: the dispatcher refuses the rest
    "size": [(3, False), ((1.0,), False), (("a", "b"), False), (None, False)],  # (height, width)
    "int_pair": [(2.5, False), ((1, 2, 3), False), ((1.5, 1), False), (None, False)],  # an int or (int, int)
    "batchnorm": [(3, False), (None, False), ("bn", False)],  # a torch BatchNorm module
}


@dataclass(frozen=True)
class T:
    """A tensor argument."""

    dtypes: str = FLOATING
    rank: object = None
    optional: bool = False
    accepts_int: bool = False


@dataclass(frozen=True)
class N:
    """A non-tensor argument."""

    kind: str
    optional: bool = False


@dataclass(frozen=True)
class Sizes:
    b: int = 2
    c: int = 3
    d: int = 2
    h: int = 3
    w: int = 2
    spatial: tuple = (3,)
    dtype: torch.dtype = torch.float32


@dataclass(frozen=True)
class Spec:
    name: str
    call: Callable
    make: Callable
    args: dict
    names: tuple = ()
    holds_tensors: bool = False
    meta: bool = True
    raw: bool = False
    target: str = ""  # what it covers: "cvops.NAME", "cvops.nn.NAME" or "cvops::NAME"
    id: str = field(default="", compare=False)

    @property
    def error_names(self):
        return (self.name, *self.names)

    def tensors(self, args):
        return [name for name, arg in self.args.items() if isinstance(arg, T) and args.get(name) is not None]


# ---------------------------------------------------------------------------- call helpers


def public(name):
    def call(**args):
        return getattr(cvops, name)(**args)

    call.target = f"cvops.{name}"
    return call


def raw(name):
    def call(**args):
        return getattr(torch.ops.cvops, name)(**args)

    call.target = f"cvops::{name}"
    call.raw = True
    return call


_MODULE_DEVICE = [None]


@contextlib.contextmanager
def modules_on(device):
    """Module specs build their module on `device` (the all-meta test); otherwise on the CPU."""
    _MODULE_DEVICE[0] = device
    try:
        yield
    finally:
        _MODULE_DEVICE[0] = None


def module(cls, *init):
    def call(**args):
        built = cls(**{k: args[k] for k in init})
        if _MODULE_DEVICE[0] is not None:
            built = built.to(_MODULE_DEVICE[0])
        return built(**{k: v for k, v in args.items() if k not in init})

    call.target = f"cvops.nn.{cls.__name__}"
    return call


def spec(name, call, make, args, **options):
    target = getattr(call, "target", name)
    label = target.removeprefix("cvops.")
    return Spec(
        name, call, make, args, raw=getattr(call, "raw", False), target=target, id=options.pop("id", label), **options
    )


# ---------------------------------------------------------------------------- valid inputs


def rand(s, *shape, dtype=None):
    return torch.randn(shape, dtype=dtype or s.dtype)


def boxes(s, *lead, dtype=None):
    """xyxy boxes [*lead, 4] with positive sides."""
    corner = torch.rand((*lead, 2), dtype=dtype or s.dtype) * 10
    return torch.cat([corner, corner + torch.rand((*lead, 2), dtype=dtype or s.dtype) * 5 + 1], -1)


def features(s, channels):
    return rand(s, s.b, channels, *s.spatial)


def _pool(s, y=True):
    return dict(x=features(s, s.c), y=features(s, s.d) if y else None)


EPILOGUE = dict(signed_sqrt=True, l2_normalize=True)
EPILOGUE_ARGS = dict(signed_sqrt=N("bool"), l2_normalize=N("bool"))
PAIR_ARGS = dict(x=T(FLOATING, rank="y"), y=T(FLOATING, rank="x", optional=True))


def _ts_params(s, output_dim=8):
    h1, s1, h2, s2 = cvops.compact_bilinear_params("ts", s.c, s.d, output_dim)
    return dict(h1=h1, s1=s1, h2=h2, s2=s2)


def _rm_params(s, output_dim=8):
    w1, w2 = cvops.compact_bilinear_params("rm", s.c, s.d, output_dim)
    return dict(w1=w1.to(s.dtype), w2=w2.to(s.dtype))


TS_ARGS = dict(h1=T(INDEX, rank=1), s1=T(FLOATING, rank=1), h2=T(INDEX, rank=1), s2=T(FLOATING, rank=1))
RM_ARGS = dict(w1=T(FLOATING, rank=2), w2=T(FLOATING, rank=2))
SAVED = dict(grad=T(FLOATING, rank=2), out=T(FLOATING, rank=2), norm=T(FLOATING, rank=1))


def _with_grad(forward_args, forward, **fixed):
    """A backward op's arguments: grad like the forward's first output, out and norm from it."""
    out, norm = forward(**forward_args)
    return dict(grad=torch.randn_like(out), **fixed, out=out, norm=norm)


def _bilinear_backward(s):
    pair = _pool(s)
    fwd = dict(pair, normalize="hw", **EPILOGUE, eps=1e-8)
    saved = _with_grad(fwd, torch.ops.cvops._bilinear_pool)
    return dict(grad=saved["grad"], **pair, out=saved["out"], norm=saved["norm"], normalize="hw", **EPILOGUE)


def _compact_backward(s, kind):
    pair, params = _pool(s), _ts_params(s) if kind == "ts" else _rm_params(s)
    if kind == "ts":
        out, norm = torch.ops.cvops._compact_bilinear_pool_ts(
            **pair, **params, output_dim=8, normalize="hw", **EPILOGUE, eps=1e-8
        )
    else:
        out, norm = torch.ops.cvops._compact_bilinear_pool_rm(**pair, **params, normalize="hw", **EPILOGUE, eps=1e-8)
    return dict(grad=torch.randn_like(out), **pair, **params, out=out, norm=norm, normalize="hw", **EPILOGUE)


def _factorized(s):
    return dict(x=rand(s, s.b, 2 * s.c), y=rand(s, s.b, 2 * s.c), k=2)


def _factorized_backward(s):
    pair = _factorized(s)
    out, norm = torch.ops.cvops._factorized_bilinear_pool(**pair, **EPILOGUE, eps=1e-8)
    return dict(grad=torch.randn_like(out), x=pair["x"], y=pair["y"], out=out, norm=norm, k=2, **EPILOGUE)


def _lowrank(s):
    return dict(x=features(s, s.c), U=rand(s, s.d, s.c, 2), num_positive=1)


def _gram_x(s):
    return rand(s, s.b, s.c, s.h, *s.spatial)


def _style_bank(s):
    return dict(x=_gram_x(s), target=rand(s, s.d, s.c, s.c), target_index=torch.arange(s.b) % s.d)


def _style_backward(s):
    bank = _style_bank(s)
    _, residual = torch.ops.cvops._style_loss(
        **bank, normalize="chw", divisor=1.0, reduction="none", keep_residual=True
    )
    return dict(grad_loss=rand(s, s.b), x=bank["x"], residual=residual, normalize="chw", divisor=1.0, reduction="none")


def _instance_norm(s, mix=False):
    style = torch.softmax(rand(s, s.b, s.d), 1) if mix else torch.arange(s.b) % s.d
    return dict(x=rand(s, s.b, s.c, s.h, s.w), weight=rand(s, s.d, s.c), bias=rand(s, s.d, s.c), style=style)


def _instance_norm_backward(s):
    inputs = _instance_norm(s)
    out, mean, rstd = torch.ops.cvops._conditional_instance_norm(**inputs, eps=1e-5, activation="relu")
    return dict(
        grad_out=torch.randn_like(out),
        x=inputs["x"],
        out=out,
        weight=inputs["weight"],
        bias=inputs["bias"],
        style=inputs["style"],
        mean=mean,
        rstd=rstd,
        activation="relu",
    )


INSTANCE_NORM_ARGS = dict(x=T(FLOATING, rank=4), weight=T(FLOATING, rank=2), bias=T(FLOATING, rank=2))


def _nms(s, n=6):
    return dict(boxes=boxes(s, n), scores=torch.rand(n, dtype=s.dtype))


def _multiclass(s):
    return dict(boxes=boxes(s, s.b, 5), scores=torch.rand(s.b, 5, s.d, dtype=s.dtype))


MULTICLASS_OPTIONS = dict(iou_threshold=0.5, score_threshold=0.1, max_per_class=3, max_total=4, class_agnostic=False)
MULTICLASS_ARGS = dict(
    boxes=T(FLOATING, rank=(3, 4)),
    scores=T(FLOATING, rank=3),
    iou_threshold=N("float"),
    score_threshold=N("float"),
    max_per_class=N("int"),
    max_total=N("int"),
    class_agnostic=N("bool"),
)
SOFT_NMS = dict(sigma=0.5, iou_threshold=0.3, score_threshold=0.001, method="gaussian")
SOFT_NMS_ARGS = dict(sigma=N("float"), iou_threshold=N("float"), score_threshold=N("float"), method=N("choice"))

BOXES_PAIR = dict(boxes1=T(REAL, rank=(2, None)), boxes2=T(REAL, rank=(2, None)))
BOXES_ALIGNED = dict(boxes1=T(REAL, rank=(1, None)), boxes2=T(REAL, rank=(1, None)))


def _box_pair(s):
    return dict(boxes1=boxes(s, s.c), boxes2=boxes(s, s.d))


def _box_aligned(s):
    return dict(boxes1=boxes(s, s.b, s.c), boxes2=boxes(s, s.b, s.c))


def _box_iou_backward(s):
    pair = _box_pair(s)
    out = torch.ops.cvops.box_iou(**pair, kind="giou", fmt="xyxy", eps=1e-7)
    return dict(grad=torch.randn_like(out), **pair, kind="giou", fmt="xyxy", eps=1e-7)


def _box_aligned_backward(s):
    pair = _box_aligned(s)
    out = torch.ops.cvops.box_iou_aligned(**pair, kind="giou", fmt="xyxy", eps=1e-7, loss_form=True)
    return dict(grad=torch.randn_like(out), **pair, kind="giou", fmt="xyxy", eps=1e-7, loss_form=True)


BOX_OPTIONS = dict(kind=N("choice"), fmt=N("choice"), eps=N("float"))


def _xcorr(s, mode="full"):
    """Search [b, c, h + 2, w + 3] by one template per image [b, c, h, w]."""
    return dict(x=rand(s, s.b, s.c, s.h + 2, s.w + 3), z=rand(s, s.b, s.c, s.h, s.w))


def _xcorr_raw(s):
    pair = _xcorr(s)
    return dict(pair, scale=torch.tensor(0.5, dtype=s.dtype), bias=None, mode="full", padding=1)


def _xcorr_backward(s):
    args = _xcorr_raw(s)
    out, corr = torch.ops.cvops._xcorr(**args)
    return dict(
        grad=torch.randn_like(out),
        **{k: args[k] for k in ("x", "z", "scale", "bias")},
        corr=corr,
        mode="full",
        padding=1,
    )


XCORR_PAIR = dict(x=T(FLOATING, rank=4), z=T(FLOATING, rank=4))
XCORR_AFFINE = dict(scale=T(FLOATING, rank=(0, 1), optional=True), bias=T(FLOATING, rank=(0, 1), optional=True))


def _local(s):
    """x [b, c, h + 2, w + 1] by a 3×2 kernel, stride (1, 2), padding (1, 0): h + 2 by (w - 1) // 2 + 1 locations."""
    out_h, out_w = s.h + 2, (s.w - 1) // 2 + 1
    return dict(
        x=rand(s, s.b, s.c, s.h + 2, s.w + 1),
        weight=rand(s, out_h, out_w, s.d, s.c, 3, 2),
        bias=rand(s, s.d, out_h, out_w),
    )


LOCAL_OPTIONS = dict(stride=(1, 2), padding=(1, 0), dilation=1)
LOCAL_RAW = dict(stride=[1, 2], padding=[1, 0], dilation=[1, 1])
LOCAL_PAIRS = dict(stride=N("int_pair"), padding=N("int_pair"), dilation=N("int_pair"))
LOCAL_ARGS = dict(
    x=T(FLOATING, rank=4), weight=T(FLOATING, rank=6), bias=T(FLOATING, rank=3, optional=True), **LOCAL_PAIRS
)


def _local_backward(s):
    args = _local(s)
    out = torch.ops.cvops._locally_connected2d(**args, **LOCAL_RAW)
    return dict(grad=torch.randn_like(out), x=args["x"], weight=args["weight"], **LOCAL_RAW)


def _binary(s):
    """x [b, c, h + 2, w + 2] by a 3×3 binary weight [d, c, 3, 3], padding 1."""
    return dict(x=rand(s, s.b, s.c, s.h + 2, s.w + 2), weight=rand(s, s.d, s.c, 3, 3))


BINARY_OPTIONS = dict(stride=1, padding=1, dilation=(1, 2), pad_value=1.0, scaling="alpha_k", weight_grad="xnor")
BINARY_ARGS = dict(
    x=T(FLOATING, rank=4),
    weight=T(FLOATING, rank=4),
    bias=T(FLOATING, rank=1, optional=True),
    stride=N("int_pair"),
    padding=N("int_pair"),
    dilation=N("int_pair"),
    pad_value=N("float"),
    scaling=N("choice"),
    weight_grad=N("choice"),
)


def _batchnorm_sign_bounds(bn):
    return cvops.nn.batchnorm_sign_bounds(bn)


_batchnorm_sign_bounds.target = "cvops.nn.batchnorm_sign_bounds"


def _xnor_raw(s):
    args = _binary(s)
    x, weight = args["x"], args["weight"]
    scale = weight.abs().mean((1, 2, 3)).to(torch.float64 if s.dtype == torch.float64 else torch.float32)
    k_map = torch.rand(s.b, 1, s.h + 2, s.w, dtype=scale.dtype)
    return dict(
        x_bits=torch.ops.cvops._pack_bits(x),
        weight_bits=torch.ops.cvops._pack_bits(weight),
        scale=scale,
        k_map=k_map,
        bias=torch.randn(s.d, dtype=scale.dtype),
        channels=s.c,
        stride=[1, 1],
        padding=[1, 1],
        dilation=[1, 2],
        pad_value=0,
    )


def _lowrank_classifier_spec(image, **options):
    """LowRankBilinearClassifier on features [b, c, *spatial] or images [b, c, h, w] (with a reduction)."""
    init = ("in_channels", "num_classes", *options)

    def make(s):
        x = rand(s, s.b, s.c, s.h, s.w, dtype=torch.float32) if image else features(s, s.c).float()
        return dict(in_channels=s.c, num_classes=s.d, **options, x=x)

    args = dict(
        in_channels=N("int"),
        num_classes=N("int"),
        rank=N("int"),
        num_positive=N("int", optional=True),
        reduced_channels=N("int", optional=True),
        bias=N("bool"),
        x=T(FLOATING, rank=4 if image else (2, None)),
    )
    extra = dict(id="nn.LowRankBilinearClassifier[reduced]") if image else {}
    return spec(
        "LowRankBilinearClassifier",
        module(cvops.nn.LowRankBilinearClassifier, *init),
        make,
        args,
        names=("lowrank_bilinear_score",),
        holds_tensors=True,
        **extra,
    )


# ---------------------------------------------------------------------------- the table

SPECS = [
    # ------------------------------------------------------------------ bilinear: public ops
    spec(
        "bilinear_pool",
        public("bilinear_pool"),
        lambda s: dict(_pool(s), normalize="hw", **EPILOGUE, eps=1e-8),
        dict(PAIR_ARGS, normalize=N("choice"), **EPILOGUE_ARGS, eps=N("float")),
    ),
    spec(
        "compact_bilinear_pool",
        public("compact_bilinear_pool"),
        lambda s: dict(_pool(s), output_dim=8, kind="ts", seed=0, normalize="hw", **EPILOGUE, eps=1e-8, params=None),
        dict(
            PAIR_ARGS,
            output_dim=N("int"),
            kind=N("choice"),
            seed=N("int"),
            normalize=N("choice"),
            **EPILOGUE_ARGS,
            eps=N("float"),
            params=N("params", optional=True),
        ),
    ),
    spec(
        "compact_bilinear_pool",
        lambda x, y, h1, s1, h2, s2, **kw: cvops.compact_bilinear_pool(x, y, params=(h1, s1, h2, s2), **kw),
        lambda s: dict(_pool(s), **_ts_params(s), output_dim=8, kind="ts", normalize="none", **EPILOGUE, eps=1e-8),
        dict(
            PAIR_ARGS,
            **TS_ARGS,
            output_dim=N("int"),
            kind=N("choice"),
            normalize=N("choice"),
            **EPILOGUE_ARGS,
            eps=N("float"),
        ),
        id="compact_bilinear_pool[ts params]",
    ),
    spec(
        "compact_bilinear_pool",
        lambda x, y, w1, w2, **kw: cvops.compact_bilinear_pool(x, y, params=(w1, w2), **kw),
        lambda s: dict(_pool(s), **_rm_params(s), output_dim=8, kind="rm", normalize="hw", **EPILOGUE, eps=1e-8),
        dict(
            PAIR_ARGS,
            **RM_ARGS,
            output_dim=N("int"),
            kind=N("choice"),
            normalize=N("choice"),
            **EPILOGUE_ARGS,
            eps=N("float"),
        ),
        id="compact_bilinear_pool[rm params]",
    ),
    spec(
        "compact_bilinear_params",
        public("compact_bilinear_params"),
        lambda s: dict(kind="rm", x_channels=s.c, y_channels=s.d, output_dim=4, seed=1, device="cpu"),
        dict(
            kind=N("choice"),
            x_channels=N("int"),
            y_channels=N("int", optional=True),
            output_dim=N("int"),
            seed=N("int"),
            device=N("device", optional=True),
        ),
    ),
    spec(
        "factorized_bilinear_pool",
        public("factorized_bilinear_pool"),
        lambda s: dict(_factorized(s), **EPILOGUE, eps=1e-8),
        dict(x=T(FLOATING, rank=2), y=T(FLOATING, rank=2), k=N("int"), **EPILOGUE_ARGS, eps=N("float")),
    ),
    spec(
        "lowrank_bilinear_score",
        public("lowrank_bilinear_score"),
        _lowrank,
        dict(x=T(FLOATING, rank=(2, None)), U=T(FLOATING, rank=3), num_positive=N("int")),
    ),
    # ------------------------------------------------------------------ gram: public ops
    spec(
        "gram_matrix",
        public("gram_matrix"),
        lambda s: dict(x=_gram_x(s), normalize="chw"),
        dict(x=T(FLOATING, rank=(3, None)), normalize=N("gram_normalize")),
    ),
    spec(
        "style_loss",
        public("style_loss"),
        lambda s: dict(_style_bank(s), normalize=2.0, reduction="sum"),
        dict(
            x=T(FLOATING, rank=(3, None)),
            target=T(FLOATING, rank=3),
            target_index=T(INDEX, rank=1, optional=True),
            normalize=N("gram_normalize"),
            reduction=N("choice"),
        ),
    ),
    # ------------------------------------------------------------------ instance_norm: public ops
    spec(
        "conditional_instance_norm",
        public("conditional_instance_norm"),
        lambda s: dict(_instance_norm(s), eps=1e-5, activation="relu"),
        dict(INSTANCE_NORM_ARGS, style=T(STYLE, rank=1), eps=N("float"), activation=N("choice", optional=True)),
    ),
    spec(
        "conditional_instance_norm",
        public("conditional_instance_norm"),
        lambda s: dict(_instance_norm(s, mix=True), eps=1e-3, activation=None),
        dict(INSTANCE_NORM_ARGS, style=T(STYLE, rank=2), eps=N("float"), activation=N("choice", optional=True)),
        id="conditional_instance_norm[mixing weights]",
    ),
    # ------------------------------------------------------------------ nms: public ops
    spec(
        "nms",
        public("nms"),
        lambda s: dict(_nms(s), iou_threshold=0.5),
        dict(boxes=T(FLOATING, rank=2), scores=T(FLOATING, rank=1), iou_threshold=N("float")),
        meta=False,
    ),
    spec(
        "batched_nms",
        public("batched_nms"),
        lambda s: dict(_nms(s), idxs=torch.arange(6) % 2, iou_threshold=0.5),
        dict(boxes=T(FLOATING, rank=2), scores=T(FLOATING, rank=1), idxs=T(NUMERIC, rank=1), iou_threshold=N("float")),
        meta=False,
    ),
    spec(
        "multiclass_nms",
        public("multiclass_nms"),
        lambda s: dict(_multiclass(s), **MULTICLASS_OPTIONS),
        MULTICLASS_ARGS,
    ),
    spec(
        "soft_nms",
        public("soft_nms"),
        lambda s: dict(_nms(s), **SOFT_NMS),
        dict(boxes=T(FLOATING, rank=2), scores=T(FLOATING, rank=1), **SOFT_NMS_ARGS),
        meta=False,
    ),
    # ------------------------------------------------------------------ boxes: public ops
    spec(
        "box_iou",
        public("box_iou"),
        lambda s: dict(_box_pair(s), fmt="xywh", kind="diou", eps=1e-7),
        dict(BOXES_PAIR, fmt=N("choice"), kind=N("choice"), eps=N("float")),
    ),
    spec(
        "box_iou",
        public("generalized_box_iou"),
        lambda s: dict(_box_pair(s), fmt="cxcywh"),
        dict(BOXES_PAIR, fmt=N("choice")),
    ),
    spec(
        "box_iou",
        public("distance_box_iou"),
        lambda s: dict(_box_pair(s), eps=1e-7, fmt="xyxy"),
        dict(BOXES_PAIR, eps=N("float"), fmt=N("choice")),
        names=("distance_box_iou",),
    ),
    spec(
        "box_iou",
        public("complete_box_iou"),
        lambda s: dict(_box_pair(s), eps=1e-7, fmt="xyxy"),
        dict(BOXES_PAIR, eps=N("float"), fmt=N("choice")),
        names=("complete_box_iou",),
    ),
    spec(
        "box_iou_aligned",
        public("box_iou_aligned"),
        lambda s: dict(_box_aligned(s), kind="ciou", fmt="xyxy", eps=1e-7),
        dict(BOXES_ALIGNED, **BOX_OPTIONS),
    ),
    *[
        spec(
            loss,
            public(loss),
            lambda s: dict(_box_aligned(s), reduction="mean", eps=1e-7),
            dict(BOXES_ALIGNED, reduction=N("choice"), eps=N("float")),
            names=("box_iou_aligned",),
        )
        for loss in ("generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss")
    ],
    spec(
        "box_area",
        public("box_area"),
        lambda s: dict(boxes=boxes(s, s.b, s.c), fmt="xyxy"),
        dict(boxes=T(REAL, rank=(1, None)), fmt=N("choice")),
    ),
    spec(
        "box_convert",
        public("box_convert"),
        lambda s: dict(boxes=boxes(s, s.c), in_fmt="xyxy", out_fmt="cxcywh"),
        dict(boxes=T(REAL, rank=(1, None)), in_fmt=N("choice"), out_fmt=N("choice")),
    ),
    spec(
        "clip_boxes_to_image",
        public("clip_boxes_to_image"),
        lambda s: dict(boxes=boxes(s, s.c), size=(6, 7)),
        dict(boxes=T(REAL, rank=(1, None)), size=N("size")),
    ),
    spec(
        "remove_small_boxes",
        public("remove_small_boxes"),
        lambda s: dict(boxes=boxes(s, s.c), min_size=1.5),
        dict(boxes=T(REAL, rank=(1, None)), min_size=N("float")),
        meta=False,
    ),
    # ------------------------------------------------------------------ nn modules
    spec(
        "BilinearPool",
        module(cvops.nn.BilinearPool, "normalize", "signed_sqrt", "l2_normalize", "eps"),
        lambda s: dict(normalize="none", **EPILOGUE, eps=1e-8, **_pool(s)),
        dict(normalize=N("choice"), **EPILOGUE_ARGS, eps=N("float"), **PAIR_ARGS),
        names=("bilinear_pool",),
    ),
    spec(
        "CompactBilinearPool",
        module(
            cvops.nn.CompactBilinearPool,
            "in_channels",
            "output_dim",
            "in_channels2",
            "kind",
            "seed",
            "normalize",
            "signed_sqrt",
            "l2_normalize",
            "eps",
        ),
        lambda s: dict(
            in_channels=s.c,
            output_dim=8,
            in_channels2=s.d,
            kind="rm",
            seed=3,
            normalize="hw",
            **EPILOGUE,
            eps=1e-8,
            **_pool(s),
        ),
        dict(
            in_channels=N("int"),
            output_dim=N("int"),
            in_channels2=N("int", optional=True),
            kind=N("choice"),
            seed=N("int"),
            normalize=N("choice"),
            **EPILOGUE_ARGS,
            eps=N("float"),
            **PAIR_ARGS,
        ),
        names=("compact_bilinear_pool",),
        holds_tensors=True,
    ),
    spec(
        "MFB",
        module(cvops.nn.MFB, "x_dim", "y_dim", "k", "o", "dropout", "signed_sqrt", "l2_normalize"),
        lambda s: dict(
            x_dim=s.c,
            y_dim=s.d,
            k=2,
            o=3,
            dropout=0.0,
            **EPILOGUE,
            x=rand(s, *s.spatial, s.c, dtype=torch.float32),
            y=rand(s, s.d, dtype=torch.float32),
        ),
        dict(
            x_dim=N("int"),
            y_dim=N("int"),
            k=N("int"),
            o=N("int"),
            dropout=N("float"),
            **EPILOGUE_ARGS,
            x=T(FLOATING, rank=(1, None)),
            y=T(FLOATING, rank=(1, None)),
        ),
        names=("factorized_bilinear_pool",),
        holds_tensors=True,
    ),
    spec(
        "MFH",
        module(cvops.nn.MFH, "x_dim", "y_dim", "k", "o", "order", "dropout", "signed_sqrt", "l2_normalize"),
        lambda s: dict(
            x_dim=s.c,
            y_dim=s.d,
            k=2,
            o=2,
            order=2,
            dropout=0.0,
            **EPILOGUE,
            x=rand(s, s.b, s.c, dtype=torch.float32),
            y=rand(s, 1, s.d, dtype=torch.float32),
        ),
        dict(
            x_dim=N("int"),
            y_dim=N("int"),
            k=N("int"),
            o=N("int"),
            order=N("int"),
            dropout=N("float"),
            **EPILOGUE_ARGS,
            x=T(FLOATING, rank=(1, None)),
            y=T(FLOATING, rank=(1, None)),
        ),
        names=("factorized_bilinear_pool",),
        holds_tensors=True,
    ),
    spec(
        "MLB",
        module(cvops.nn.MLB, "x_dim", "y_dim", "rank", "output_dim", "dropout"),
        lambda s: dict(
            x_dim=s.c,
            y_dim=s.d,
            rank=4,
            output_dim=3,
            dropout=0.0,
            x=rand(s, *s.spatial, s.c, dtype=torch.float32),
            y=rand(s, s.d, dtype=torch.float32),
        ),
        dict(
            x_dim=N("int"),
            y_dim=N("int"),
            rank=N("int"),
            output_dim=N("int", optional=True),
            dropout=N("float"),
            x=T(FLOATING, rank=(1, None)),
            y=T(FLOATING, rank=(1, None)),
        ),
        holds_tensors=True,
    ),
    _lowrank_classifier_spec(rank=2, num_positive=None, reduced_channels=None, bias=True, image=False),
    _lowrank_classifier_spec(rank=3, num_positive=2, reduced_channels=2, bias=False, image=True),
    spec(
        "GramMatrix",
        module(cvops.nn.GramMatrix, "normalize"),
        lambda s: dict(normalize="hw", x=_gram_x(s)),
        dict(normalize=N("gram_normalize"), x=T(FLOATING, rank=(3, None))),
        names=("gram_matrix",),
    ),
    spec(
        "StyleLoss",
        module(cvops.nn.StyleLoss, "target", "normalize", "reduction"),
        lambda s: dict(
            target=rand(s, s.d, s.c, s.c),
            normalize="chw",
            reduction="none",
            x=_gram_x(s),
            style_index=torch.arange(s.b) % s.d,
        ),
        dict(
            target=T(FLOATING, rank=(2, 3)),
            normalize=N("gram_normalize"),
            reduction=N("choice"),
            x=T(FLOATING, rank=(3, None)),
            style_index=T(INDEX, rank=1, optional=True, accepts_int=True),
        ),
        names=("style_loss",),
        holds_tensors=True,
    ),
    spec(
        "ConditionalInstanceNorm2d",
        module(cvops.nn.ConditionalInstanceNorm2d, "num_features", "num_styles", "eps", "activation"),
        lambda s: dict(
            num_features=s.c,
            num_styles=s.d,
            eps=1e-5,
            activation="relu",
            x=rand(s, s.b, s.c, s.h, s.w, dtype=torch.float32),
            style=torch.arange(s.b) % s.d,
        ),
        dict(
            num_features=N("int"),
            num_styles=N("int"),
            eps=N("float"),
            activation=N("choice", optional=True),
            x=T(FLOATING, rank=4),
            style=T(STYLE, rank=1, accepts_int=True),
        ),
        names=("conditional_instance_norm",),
        holds_tensors=True,
    ),
    # ------------------------------------------------------------------ raw ops: bilinear
    spec(
        "bilinear_pool",
        raw("_bilinear_pool"),
        lambda s: dict(_pool(s), normalize="hw", **EPILOGUE, eps=1e-8),
        dict(PAIR_ARGS, normalize=N("choice"), **EPILOGUE_ARGS, eps=N("float")),
    ),
    spec(
        "bilinear_pool_backward",
        raw("_bilinear_pool_backward"),
        _bilinear_backward,
        dict(
            grad=SAVED["grad"],
            **PAIR_ARGS,
            out=SAVED["out"],
            norm=SAVED["norm"],
            normalize=N("choice"),
            **EPILOGUE_ARGS,
        ),
    ),
    spec(
        "compact_bilinear_pool",
        raw("_compact_bilinear_pool_ts"),
        lambda s: dict(_pool(s), **_ts_params(s), output_dim=8, normalize="hw", **EPILOGUE, eps=1e-8),
        dict(PAIR_ARGS, **TS_ARGS, output_dim=N("int"), normalize=N("choice"), **EPILOGUE_ARGS, eps=N("float")),
    ),
    spec(
        "compact_bilinear_pool_backward",
        raw("_compact_bilinear_pool_ts_backward"),
        lambda s: _compact_backward(s, "ts"),
        dict(
            grad=SAVED["grad"],
            **PAIR_ARGS,
            **TS_ARGS,
            out=SAVED["out"],
            norm=SAVED["norm"],
            normalize=N("choice"),
            **EPILOGUE_ARGS,
        ),
    ),
    spec(
        "compact_bilinear_pool",
        raw("_compact_bilinear_pool_rm"),
        lambda s: dict(_pool(s), **_rm_params(s), normalize="hw", **EPILOGUE, eps=1e-8),
        dict(PAIR_ARGS, **RM_ARGS, normalize=N("choice"), **EPILOGUE_ARGS, eps=N("float")),
    ),
    spec(
        "compact_bilinear_pool_backward",
        raw("_compact_bilinear_pool_rm_backward"),
        lambda s: _compact_backward(s, "rm"),
        dict(
            grad=SAVED["grad"],
            **PAIR_ARGS,
            **RM_ARGS,
            out=SAVED["out"],
            norm=SAVED["norm"],
            normalize=N("choice"),
            **EPILOGUE_ARGS,
        ),
    ),
    spec(
        "factorized_bilinear_pool",
        raw("_factorized_bilinear_pool"),
        lambda s: dict(_factorized(s), **EPILOGUE, eps=1e-8),
        dict(x=T(FLOATING, rank=2), y=T(FLOATING, rank=2), k=N("int"), **EPILOGUE_ARGS, eps=N("float")),
    ),
    spec(
        "factorized_bilinear_pool_backward",
        raw("_factorized_bilinear_pool_backward"),
        _factorized_backward,
        dict(
            grad=SAVED["grad"],
            x=T(FLOATING, rank=2),
            y=T(FLOATING, rank=2),
            out=SAVED["out"],
            norm=SAVED["norm"],
            k=N("int"),
            **EPILOGUE_ARGS,
        ),
    ),
    spec(
        "lowrank_bilinear_score",
        raw("lowrank_bilinear_score"),
        _lowrank,
        dict(x=T(FLOATING, rank=(2, None)), U=T(FLOATING, rank=3), num_positive=N("int")),
    ),
    spec(
        "lowrank_bilinear_score_backward",
        raw("_lowrank_bilinear_score_backward"),
        lambda s: dict(grad=rand(s, s.b, s.d), **_lowrank(s)),
        dict(grad=T(FLOATING, rank=2), x=T(FLOATING, rank=(2, None)), U=T(FLOATING, rank=3), num_positive=N("int")),
    ),
    # ------------------------------------------------------------------ raw ops: gram
    spec(
        "gram_matrix",
        raw("gram_matrix"),
        lambda s: dict(x=_gram_x(s), normalize="value", divisor=2.0),
        dict(x=T(FLOATING, rank=(3, None)), normalize=N("choice"), divisor=N("float")),
    ),
    spec(
        "gram_matrix_backward",
        raw("_gram_matrix_backward"),
        lambda s: dict(grad=rand(s, s.b, s.c, s.c), x=_gram_x(s), normalize="hw", divisor=1.0),
        dict(grad=T(FLOATING, rank=3), x=T(FLOATING, rank=(3, None)), normalize=N("choice"), divisor=N("float")),
    ),
    spec(
        "style_loss",
        raw("_style_loss"),
        lambda s: dict(_style_bank(s), normalize="chw", divisor=1.0, reduction="mean", keep_residual=True),
        dict(
            x=T(FLOATING, rank=(3, None)),
            target=T(FLOATING, rank=3),
            target_index=T(INDEX, rank=1, optional=True),
            normalize=N("choice"),
            divisor=N("float"),
            reduction=N("choice"),
            keep_residual=N("bool"),
        ),
    ),
    spec(
        "style_loss_backward",
        raw("_style_loss_backward"),
        _style_backward,
        dict(
            grad_loss=T(FLOATING, rank=1),
            x=T(FLOATING, rank=(3, None)),
            residual=T(FLOATING, rank=3),
            normalize=N("choice"),
            divisor=N("float"),
            reduction=N("choice"),
        ),
    ),
    # ------------------------------------------------------------------ raw ops: instance_norm
    spec(
        "conditional_instance_norm",
        raw("_conditional_instance_norm"),
        lambda s: dict(_instance_norm(s), eps=1e-5, activation="none"),
        dict(INSTANCE_NORM_ARGS, style=T(STYLE, rank=1), eps=N("float"), activation=N("choice")),
    ),
    spec(
        "conditional_instance_norm_backward",
        raw("_conditional_instance_norm_backward"),
        _instance_norm_backward,
        dict(
            grad_out=T(FLOATING, rank=4),
            x=T(FLOATING, rank=4),
            out=T(FLOATING, rank=4),
            weight=T(FLOATING, rank=2),
            bias=T(FLOATING, rank=2),
            style=T(STYLE, rank=1),
            mean=T(FLOATING, rank=2),
            rstd=T(FLOATING, rank=2),
            activation=N("choice"),
        ),
    ),
    # ------------------------------------------------------------------ raw ops: nms
    spec(
        "nms",
        raw("nms"),
        lambda s: dict(_nms(s), iou_threshold=0.5),
        dict(boxes=T(FLOATING, rank=2), scores=T(FLOATING, rank=1), iou_threshold=N("float")),
        meta=False,
    ),
    spec(
        "batched_nms",
        raw("batched_nms"),
        lambda s: dict(_nms(s), idxs=torch.arange(6) % 2, iou_threshold=0.5),
        dict(boxes=T(FLOATING, rank=2), scores=T(FLOATING, rank=1), idxs=T(NUMERIC, rank=1), iou_threshold=N("float")),
        meta=False,
    ),
    spec(
        "multiclass_nms", raw("multiclass_nms"), lambda s: dict(_multiclass(s), **MULTICLASS_OPTIONS), MULTICLASS_ARGS
    ),
    spec(
        "soft_nms",
        raw("soft_nms"),
        lambda s: dict(_nms(s), **SOFT_NMS),
        dict(boxes=T(FLOATING, rank=2), scores=T(FLOATING, rank=1), **SOFT_NMS_ARGS),
        meta=False,
    ),
    # ------------------------------------------------------------------ raw ops: boxes
    spec(
        "box_iou",
        raw("box_iou"),
        lambda s: dict(_box_pair(s), kind="iou", fmt="xyxy", eps=1e-7),
        dict(BOXES_PAIR, **BOX_OPTIONS),
    ),
    spec(
        "box_iou_backward",
        raw("_box_iou_backward"),
        _box_iou_backward,
        dict(grad=T(FLOATING), **BOXES_PAIR, **BOX_OPTIONS),
    ),
    spec(
        "box_iou_aligned",
        raw("box_iou_aligned"),
        lambda s: dict(_box_aligned(s), kind="giou", fmt="xywh", eps=1e-7, loss_form=False),
        dict(BOXES_ALIGNED, **BOX_OPTIONS, loss_form=N("bool")),
    ),
    spec(
        "box_iou_aligned_backward",
        raw("_box_iou_aligned_backward"),
        _box_aligned_backward,
        dict(grad=T(FLOATING), **BOXES_ALIGNED, **BOX_OPTIONS, loss_form=N("bool")),
    ),
    # ------------------------------------------------------------------ xcorr
    spec(
        "xcorr",
        public("xcorr"),
        lambda s: dict(_xcorr(s), mode="depthwise", scale=torch.ones(s.c, dtype=s.dtype), bias=None, padding=1),
        dict(XCORR_PAIR, mode=N("choice"), **XCORR_AFFINE, padding=N("int")),
    ),
    spec(
        "XCorr",
        module(cvops.nn.XCorr, "mode", "bias", "channels"),
        lambda s: dict(mode="depthwise", bias=True, channels=s.c, **_xcorr(s)),
        dict(mode=N("choice"), bias=N("bool"), channels=N("int"), **XCORR_PAIR),
        names=("xcorr",),
        holds_tensors=True,
    ),
    spec("xcorr", raw("_xcorr"), _xcorr_raw, dict(XCORR_PAIR, **XCORR_AFFINE, mode=N("choice"), padding=N("int"))),
    spec(
        "xcorr_backward",
        raw("_xcorr_backward"),
        _xcorr_backward,
        dict(
            grad=T(FLOATING, rank=4), **XCORR_PAIR, **XCORR_AFFINE, corr=T(FLOATING), mode=N("choice"), padding=N("int")
        ),
    ),
    # ------------------------------------------------------------------ local
    spec("locally_connected2d", public("locally_connected2d"), lambda s: dict(_local(s), **LOCAL_OPTIONS), LOCAL_ARGS),
    spec(
        "LocallyConnected2d",
        module(
            cvops.nn.LocallyConnected2d,
            "in_channels",
            "out_channels",
            "input_size",
            "kernel_size",
            "stride",
            "padding",
            "dilation",
            "bias",
        ),
        lambda s: dict(
            in_channels=s.c,
            out_channels=s.d,
            input_size=(s.h + 2, s.w + 1),
            kernel_size=(3, 2),
            **LOCAL_OPTIONS,
            bias=True,
            x=rand(s, s.b, s.c, s.h + 2, s.w + 1, dtype=torch.float32),
        ),
        dict(
            in_channels=N("int"),
            out_channels=N("int"),
            input_size=N("int_pair"),
            kernel_size=N("int_pair"),
            **LOCAL_PAIRS,
            bias=N("bool"),
            x=T(FLOATING, rank=4),
        ),
        names=("locally_connected2d",),
        holds_tensors=True,
    ),
    spec("locally_connected2d", raw("_locally_connected2d"), lambda s: dict(_local(s), **LOCAL_RAW), LOCAL_ARGS),
    spec(
        "locally_connected2d_backward",
        raw("_locally_connected2d_backward"),
        _local_backward,
        dict(grad=T(FLOATING, rank=4), x=T(FLOATING, rank=4), weight=T(FLOATING, rank=6), **LOCAL_PAIRS),
    ),
    # ------------------------------------------------------------------ binary
    spec("pack_bits", public("pack_bits"), lambda s: dict(x=features(s, s.c)), dict(x=T(FLOATING, rank=(2, None)))),
    spec(
        "unpack_bits",
        public("unpack_bits"),
        lambda s: dict(bits=cvops.pack_bits(features(s, s.c)), channels=s.c),
        dict(bits=T(INDEX, rank=(2, None)), channels=N("int")),
    ),
    spec(
        "pack_binary_weight",
        public("pack_binary_weight"),
        lambda s: dict(weight=rand(s, s.d, s.c, 3, 3)),
        dict(weight=T(FLOATING, rank=4)),
    ),
    spec(
        "xnor_conv2d",
        public("xnor_conv2d"),
        lambda s: dict(_binary(s), bias=rand(s, s.d), **BINARY_OPTIONS),
        BINARY_ARGS,
    ),
    spec(
        "xnor_linear",
        public("xnor_linear"),
        lambda s: dict(
            x=rand(s, s.b, s.c), weight=rand(s, s.d, s.c), bias=rand(s, s.d), scaling="alpha_k", weight_grad="ste"
        ),
        dict(
            x=T(FLOATING, rank=2),
            weight=T(FLOATING, rank=2),
            bias=T(FLOATING, rank=1, optional=True),
            scaling=N("choice"),
            weight_grad=N("choice"),
        ),
    ),
    spec(
        "XNORConv2d",
        module(
            cvops.nn.XNORConv2d,
            "in_channels",
            "out_channels",
            "kernel_size",
            "stride",
            "padding",
            "dilation",
            "bias",
            "pad_value",
            "scaling",
            "weight_grad",
        ),
        lambda s: dict(
            in_channels=s.c,
            out_channels=s.d,
            kernel_size=3,
            stride=1,
            padding=1,
            dilation=(1, 2),
            bias=True,
            pad_value=-1.0,
            scaling="alpha",
            weight_grad="ste",
            x=rand(s, s.b, s.c, s.h + 2, s.w + 4, dtype=torch.float32),
        ),
        dict(
            in_channels=N("int"),
            out_channels=N("int"),
            kernel_size=N("int_pair"),
            stride=N("int_pair"),
            padding=N("int_pair"),
            dilation=N("int_pair"),
            bias=N("bool"),
            pad_value=N("float"),
            scaling=N("choice"),
            weight_grad=N("choice"),
            x=T(FLOATING, rank=4),
        ),
        names=("xnor_conv2d",),
        holds_tensors=True,
    ),
    spec(
        "XNORLinear",
        module(cvops.nn.XNORLinear, "in_features", "out_features", "bias", "scaling", "weight_grad"),
        lambda s: dict(
            in_features=s.c,
            out_features=s.d,
            bias=True,
            scaling="alpha_k",
            weight_grad="xnor",
            x=rand(s, s.b, s.c, dtype=torch.float32),
        ),
        dict(
            in_features=N("int"),
            out_features=N("int"),
            bias=N("bool"),
            scaling=N("choice"),
            weight_grad=N("choice"),
            x=T(FLOATING, rank=2),
        ),
        names=("xnor_linear",),
        holds_tensors=True,
    ),
    spec(
        "pack_bits",
        raw("_pack_bits"),
        lambda s: dict(x=features(s, s.c), clip=1.0),
        dict(x=T(FLOATING, rank=(2, None)), clip=N("float", optional=True)),
    ),
    spec(
        "pack_bits",
        raw("_pack_bits"),
        lambda s: dict(x=features(s, s.c), clip=None, bounds=rand(s, 2, s.c).sort(0).values),
        dict(x=T(FLOATING, rank=(2, None)), clip=N("float", optional=True), bounds=T(FLOATING, rank=2, optional=True)),
        id="_pack_bits_bounds",
    ),
    spec(
        "batchnorm_sign_bounds",
        _batchnorm_sign_bounds,
        lambda s: dict(bn=torch.nn.BatchNorm2d(s.c, dtype=s.dtype).eval()),
        dict(bn=N("batchnorm")),
    ),
    spec(
        "unpack_bits",
        raw("_unpack_bits"),
        lambda s: dict(
            bits=cvops.pack_bits(rand(s, s.b, s.c, s.h, s.w)),
            channels=s.c,
            dtype=s.dtype,
            low=0.0,
            padding=[1, 2],
            pad_value=-1.0,
        ),
        dict(
            bits=T(INDEX, rank=4),
            channels=N("int"),
            dtype=N("dtype"),
            low=N("float"),
            padding=N("int_pair"),
            pad_value=N("float"),
        ),
    ),
    spec(
        "xnor_conv2d",
        raw("_xnor_conv2d"),
        _xnor_raw,
        dict(
            x_bits=T(INDEX, rank=4),
            weight_bits=T(INDEX, rank=4),
            scale=T(FLOATING, rank=1),
            k_map=T(FLOATING, rank=4, optional=True),
            bias=T(FLOATING, rank=1, optional=True),
            channels=N("int"),
            stride=N("int_pair"),
            padding=N("int_pair"),
            dilation=N("int_pair"),
            pad_value=N("int"),
        ),
    ),
]
