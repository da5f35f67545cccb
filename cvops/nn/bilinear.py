"""Modules of the bilinear family: full / compact bilinear pooling, the MFB/MFH/MLB fusions of two
vectors (VQA) and the low-rank bilinear classifier. Compact pooling's hashes and projections are
buffers: they travel with the state_dict and are never trained."""

import torch
from torch import Tensor, nn

from cvops.ops import (
    bilinear_pool,
    compact_bilinear_params,
    compact_bilinear_pool,
    factorized_bilinear_pool,
    lowrank_bilinear_score,
)
from cvops.ops._validate import (
    COMPACT_KINDS,
    POOL_NORMALIZE,
    check_bool,
    check_choice,
    check_eps,
    check_int,
    check_module_input,
    check_tensor,
)
from cvops.ops.bilinear import DEFAULT_EPS, SEED_MAX, _check_params_size


def _dropout_rate(owner, p):
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise ValueError(f"cvops.{owner}: dropout must be a number in [0, 1), got {p!r}")
    return float(p)


class BilinearPool(nn.Module):
    """x [B, C, *spatial], y [B, D, *spatial] or None (y = x) → [B, C·D] (see cvops.bilinear_pool)."""

    def __init__(self, *, normalize="hw", signed_sqrt=True, l2_normalize=True, eps=DEFAULT_EPS):
        super().__init__()
        owner = "BilinearPool"
        self.normalize = check_choice(owner, "normalize", normalize, POOL_NORMALIZE)
        self.signed_sqrt = check_bool(owner, "signed_sqrt", signed_sqrt)
        self.l2_normalize = check_bool(owner, "l2_normalize", l2_normalize)
        self.eps = check_eps(owner, eps)  # and against the input's dtype, by bilinear_pool

    def forward(self, x: Tensor, y: Tensor = None) -> Tensor:
        return bilinear_pool(
            x, y, normalize=self.normalize, signed_sqrt=self.signed_sqrt, l2_normalize=self.l2_normalize, eps=self.eps
        )

    def extra_repr(self):
        return f"normalize={self.normalize!r}, signed_sqrt={self.signed_sqrt}, l2_normalize={self.l2_normalize}"


class CompactBilinearPool(nn.Module):
    """Compact bilinear pooling to output_dim (Gao et al. 2016): kind "ts" (Tensor Sketch: buffers
    h1, s1, h2, s2) or "rm" (Random Maclaurin: buffers w1, w2), drawn from `seed` and kept in the
    state_dict. in_channels2 is y's channel count (default: in_channels; y = None pools x with itself)."""

    def __init__(
        self,
        in_channels,
        output_dim=8192,
        *,
        in_channels2=None,
        kind="ts",
        seed=0,
        normalize="hw",
        signed_sqrt=True,
        l2_normalize=True,
        eps=DEFAULT_EPS,
    ):
        super().__init__()
        owner = "CompactBilinearPool"
        self.in_channels = check_int(owner, "in_channels", in_channels)
        self.in_channels2 = in_channels if in_channels2 is None else check_int(owner, "in_channels2", in_channels2)
        self.output_dim = check_int(owner, "output_dim", output_dim)
        self.kind = check_choice(owner, "kind", kind, COMPACT_KINDS)
        self.normalize = check_choice(owner, "normalize", normalize, POOL_NORMALIZE)
        self.signed_sqrt = check_bool(owner, "signed_sqrt", signed_sqrt)
        self.l2_normalize = check_bool(owner, "l2_normalize", l2_normalize)
        self.eps = check_eps(owner, eps)
        self.seed = check_int(owner, "seed", seed, 0, SEED_MAX)
        _check_params_size(owner, kind, self.in_channels, self.in_channels2, self.output_dim, None)
        params = compact_bilinear_params(kind, self.in_channels, self.in_channels2, self.output_dim, seed)
        names = ("h1", "s1", "h2", "s2") if kind == "ts" else ("w1", "w2")
        for name, tensor in zip(names, params):
            self.register_buffer(name, tensor)
        self._names = names

    def forward(self, x: Tensor, y: Tensor = None) -> Tensor:
        check_tensor("CompactBilinearPool", "y", y, optional=True)
        if y is None and self.in_channels2 != self.in_channels:
            raise ValueError(
                f"cvops.CompactBilinearPool: y is required: in_channels2 = {self.in_channels2} "
                f"differs from in_channels = {self.in_channels}"
            )
        params = tuple(getattr(self, name) for name in self._names)
        return compact_bilinear_pool(
            x,
            y,
            output_dim=self.output_dim,
            kind=self.kind,
            normalize=self.normalize,
            signed_sqrt=self.signed_sqrt,
            l2_normalize=self.l2_normalize,
            eps=self.eps,
            params=params,
        )

    def extra_repr(self):
        return (
            f"in_channels={self.in_channels}, in_channels2={self.in_channels2}, output_dim={self.output_dim}, "
            f"kind={self.kind!r}, seed={self.seed}, normalize={self.normalize!r}"
        )


def _flatten_rows(t):
    return t.reshape(-1, t.shape[-1])


def _check_fusion(owner, x_dim, y_dim, k, o, dropout, signed_sqrt, l2_normalize):
    check_int(owner, "x_dim", x_dim)
    check_int(owner, "y_dim", y_dim)
    check_int(owner, "k", k)
    check_int(owner, "o", o)
    _dropout_rate(owner, dropout)
    check_bool(owner, "signed_sqrt", signed_sqrt)
    check_bool(owner, "l2_normalize", l2_normalize)


def _check_vectors(owner, x, y, proj_x, proj_y, *, y_broadcasts_to_x):
    """x [..., x_dim] and y [..., y_dim] for the projections proj_x and proj_y (nn.Linear), with
    y's leading dims broadcasting to x's (y_broadcasts_to_x) or both broadcasting together."""
    for name, t, proj in (("x", x, proj_x), ("y", y, proj_y)):
        check_module_input(owner, name, t, proj.weight)
        if t.dim() < 1 or t.shape[-1] != proj.in_features:
            raise ValueError(
                f"cvops.{owner}: {name} must have shape [..., {name}_dim] = [..., {proj.in_features}], "
                f"got shape {list(t.shape)}"
            )
    lead_x, lead_y = x.shape[:-1], y.shape[:-1]
    try:
        lead = torch.broadcast_shapes(lead_x, lead_y)
    except RuntimeError:
        lead = None
    if y_broadcasts_to_x and lead != lead_x:
        raise ValueError(
            f"cvops.{owner}: y's leading dims must broadcast to x's {list(lead_x)}, got y of shape {list(y.shape)}"
        )
    if lead is None:
        raise ValueError(
            f"cvops.{owner}: the leading dims of x {list(lead_x)} and y {list(lead_y)} must broadcast together"
        )


class MFB(nn.Module):
    """Multi-modal factorized bilinear pooling (Yu et al. 2017): x [..., x_dim], y [..., y_dim]
    (leading dims broadcast to x's) → [..., o] = pool_k(dropout(Wx·x ∘ Wy·y)), then signed sqrt and L2.

    Dropout on the product x̃∘ỹ equals x̃∘dropout(ỹ) (one mask, element-wise), so it is applied to
    ỹ and the product, pooling and normalisation stay one fused op. forward(..., return_expanded=True)
    also returns the expanded product [..., k·o] that MFH feeds to its next stage."""

    def __init__(self, x_dim, y_dim, *, k=5, o=1000, dropout=0.1, signed_sqrt=True, l2_normalize=True):
        super().__init__()
        _check_fusion(type(self).__name__, x_dim, y_dim, k, o, dropout, signed_sqrt, l2_normalize)
        self.k, self.o = k, o
        self.proj_x = nn.Linear(x_dim, k * o)
        self.proj_y = nn.Linear(y_dim, k * o)
        self.dropout = nn.Dropout(dropout)
        self.signed_sqrt, self.l2_normalize = signed_sqrt, l2_normalize

    def _pool(self, xp, yp):
        lead = xp.shape[:-1]
        out = factorized_bilinear_pool(
            _flatten_rows(xp), _flatten_rows(yp), k=self.k, signed_sqrt=self.signed_sqrt, l2_normalize=self.l2_normalize
        )
        return out.reshape(*lead, self.o)

    def forward(self, x: Tensor, y: Tensor, *, previous: Tensor = None, return_expanded=False):
        """y's leading dims may broadcast against x's (one question for every grid cell): it is
        projected once, then expanded."""
        owner = type(self).__name__
        _check_vectors(owner, x, y, self.proj_x, self.proj_y, y_broadcasts_to_x=True)
        check_bool(owner, "return_expanded", return_expanded)
        xp = self.proj_x(x)
        yp = self.proj_y(y)
        if yp.shape != xp.shape:
            yp = yp.expand(xp.shape)
        yp = self.dropout(yp)
        if previous is not None:  # MFH: the next stage multiplies in the last stage's expanded product
            yp = yp * previous
        out = self._pool(xp, yp)
        return (out, xp * yp) if return_expanded else out

    def extra_repr(self):
        return f"k={self.k}, o={self.o}"


class MFH(nn.Module):
    """Multi-modal factorized high-order pooling (Yu et al. 2018): `order` cascaded MFB stages, each
    multiplying in the previous stage's expanded product; outputs concatenated → [..., order·o]."""

    def __init__(self, x_dim, y_dim, *, k=5, o=1000, order=2, dropout=0.1, signed_sqrt=True, l2_normalize=True):
        super().__init__()
        _check_fusion("MFH", x_dim, y_dim, k, o, dropout, signed_sqrt, l2_normalize)
        self.order = check_int("MFH", "order", order)
        self.stages = nn.ModuleList(
            MFB(x_dim, y_dim, k=k, o=o, dropout=dropout, signed_sqrt=signed_sqrt, l2_normalize=l2_normalize)
            for _ in range(order)
        )
        self.o = o

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        first = self.stages[0]
        _check_vectors("MFH", x, y, first.proj_x, first.proj_y, y_broadcasts_to_x=True)
        outputs, expanded = [], None
        for stage in self.stages:
            out, expanded = stage(x, y, previous=expanded, return_expanded=True)
            outputs.append(out)
        return torch.cat(outputs, dim=-1)

    def extra_repr(self):
        return f"order={self.order}, o={self.o}"


class MLB(nn.Module):
    """Multimodal low-rank bilinear pooling (Kim et al. 2017): tanh(Wx·x) ∘ tanh(Wy·y) [..., rank],
    optionally projected to output_dim. A Hadamard product of two projections: plain PyTorch ops."""

    def __init__(self, x_dim, y_dim, *, rank=1200, output_dim=None, dropout=0.0):
        super().__init__()
        self.proj_x = nn.Linear(check_int("MLB", "x_dim", x_dim), check_int("MLB", "rank", rank))
        self.proj_y = nn.Linear(check_int("MLB", "y_dim", y_dim), rank)
        self.dropout = nn.Dropout(_dropout_rate("MLB", dropout))
        self.out = None if output_dim is None else nn.Linear(rank, check_int("MLB", "output_dim", output_dim))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        _check_vectors("MLB", x, y, self.proj_x, self.proj_y, y_broadcasts_to_x=False)
        z = torch.tanh(self.proj_x(x)) * torch.tanh(self.proj_y(y))
        z = self.dropout(z)
        return z if self.out is None else self.out(z)


class LowRankBilinearClassifier(nn.Module):
    """Low-rank bilinear classifier (Kong & Fowlkes 2017): x [B, C, *spatial] → scores [B, K] =
    Σ_p ‖U₊ᵀx_p‖² − ‖U₋ᵀx_p‖² (+ bias) with U [K, C, rank]; the first num_positive (default rank/2)
    of the rank columns are positive. An optional 1×1 reduction of C to reduced_channels comes first."""

    def __init__(self, in_channels, num_classes, *, rank=8, num_positive=None, reduced_channels=None, bias=True):
        super().__init__()
        owner = "LowRankBilinearClassifier"
        self.in_channels = check_int(owner, "in_channels", in_channels)
        check_bool(owner, "bias", bias)
        self.num_classes = check_int(owner, "num_classes", num_classes)
        self.rank = check_int(owner, "rank", rank)
        self.num_positive = rank // 2 if num_positive is None else num_positive
        if (
            isinstance(self.num_positive, bool)
            or not isinstance(self.num_positive, int)
            or not 0 <= self.num_positive <= rank
        ):
            raise ValueError(
                f"cvops.{owner}: num_positive must be an int in [0, rank] = [0, {rank}], got {num_positive!r}"
            )
        self.reduce = None
        channels = in_channels
        if reduced_channels is not None:
            channels = check_int(owner, "reduced_channels", reduced_channels)
            self.reduce = nn.Conv2d(in_channels, channels, 1)
        self.U = nn.Parameter(torch.empty(num_classes, channels, rank))
        self.bias = nn.Parameter(torch.zeros(num_classes)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        # Scores are quadratic in U: keep U·x of unit order for unit-scale features.
        nn.init.normal_(self.U, std=self.U.shape[1] ** -0.5)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.reduce is not None:  # without it, lowrank_bilinear_score checks x
            owner = "LowRankBilinearClassifier"
            check_module_input(owner, "x", x, self.reduce.weight)
            if x.dim() != 4 or x.shape[1] != self.in_channels:
                raise ValueError(
                    f"cvops.{owner}: x must have shape [B, {self.in_channels}, H, W] for the 1×1 reduction, "
                    f"got shape {list(x.shape)}"
                )
            x = self.reduce(x)
        scores = lowrank_bilinear_score(x, self.U, num_positive=self.num_positive)
        return scores if self.bias is None else scores + self.bias

    def extra_repr(self):
        return f"channels={self.U.shape[1]}, num_classes={self.num_classes}, rank={self.rank}, num_positive={self.num_positive}"
