"""SiamFC (Bertinetto et al., "Fully-Convolutional Siamese Networks for Object Tracking", 2016): an
AlexNet-like embedding, the response map of an exemplar over a search image through cvops.xcorr,
the balanced logistic loss, the tracker and OTB-style evaluation — as siamfc-pytorch
(huanglianghua/siamfc-pytorch) has them.

Conventions. Boxes are (x, y, w, h) in continuous pixel coordinates, 0-indexed: pixel (row i,
column j) covers [j, j + 1) × [i, i + 1), so a box's centre is (x + w/2, y + h/2) and a frame of
width W spans [0, W). Frames given to the tracker are HWC uint8 numpy arrays (RGB, as video
readers and OTB loaders give them); networks see float images [N, 3, H, W] with values in 0..255,
as siamfc-pytorch feeds its network (no mean/std normalisation).

A fixed embedding that tracks without training, LocalNormEmbedding, makes the tracker usable (and
testable) without weights: raw-pixel correlation would peak on the brightest, most textured region
instead of the target. A demo on a generated sequence: python -m cvops.demos.siamfc OUT_DIR.
"""

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import cvops
from cvops.ops._validate import check_int

__all__ = [
    "LocalNormEmbedding",
    "SUCCESS_THRESHOLDS",
    "SiamFC",
    "SiamFCLoss",
    "SiamFCTracker",
    "balance_weights",
    "center_error",
    "crop_and_resize",
    "iou",
    "logistic_labels",
    "precision_at",
    "success_auc",
    "success_curve",
    "track",
    "train_step",
]

SUCCESS_THRESHOLDS = torch.linspace(0, 1, 21, dtype=torch.float64)


def _shape(value) -> str:
    return str(tuple(value.shape)) if isinstance(value, (Tensor, np.ndarray)) else type(value).__name__


def _check_number(owner: str, name: str, value, low: float, high: float = math.inf, *, open_low=False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if open_low else value >= low) and value <= high
    if not ok:
        bounds = f"{'(' if open_low else '['}{low}, {high}{']' if high != math.inf else ')'}"
        raise ValueError(f"cvops.{owner}: {name} must be a number in {bounds}, got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------- the network


class _BatchNorm2d(nn.BatchNorm2d):
    """siamfc-pytorch's batch norm: eps 1e-6, momentum 0.05."""

    def __init__(self, num_features: int):
        super().__init__(num_features, eps=1e-6, momentum=0.05)


class SiamFC(nn.Module):
    """SiamFC: AlexNet-like backbone (siamfc-pytorch's AlexNetV1: conv5 ends without BN or ReLU, so
    the embedding can take either sign) and the cross-correlation head response = scale·(φ(z) ⋆ φ(x))
    + bias through cvops.xcorr in mode "full".

    Exemplar 127×127 → 6×6×256, search 255×255 → 22×22×256, response 17×17; total stride 8.
    out_scale is SiamFC's 0.001 adjustment, keeping the initial logits small. learn_adjust=False
    (siamfc-pytorch) holds scale and bias fixed as buffers (bias 0); True makes both parameters,
    as the original MATLAB SiamFC's adjust layer."""

    total_stride = 8

    def __init__(self, *, out_scale: float = 0.001, learn_adjust: bool = False):
        super().__init__()
        out_scale = _check_number("SiamFC", "out_scale", out_scale, 0.0, open_low=True)
        if not isinstance(learn_adjust, bool):
            raise ValueError(f"cvops.SiamFC: learn_adjust must be True or False, got {learn_adjust!r}")
        self.learn_adjust = learn_adjust
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 96, 11, stride=2),
            _BatchNorm2d(96),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(96, 256, 5, groups=2),
            _BatchNorm2d(256),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(256, 384, 3),
            _BatchNorm2d(384),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, 3, groups=2),
            _BatchNorm2d(384),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, groups=2),
        )
        scale, bias = torch.tensor(out_scale), torch.tensor(0.0)
        if learn_adjust:
            self.out_scale, self.out_bias = nn.Parameter(scale), nn.Parameter(bias)
        else:
            self.register_buffer("out_scale", scale)
            self.register_buffer("out_bias", bias)
        self.reset_parameters()

    def reset_parameters(self):
        """siamfc-pytorch's initialisation: Kaiming-normal (fan out) convolutions, zero biases, BN 1/0."""
        for module in self.backbone:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def embed(self, img: Tensor) -> Tensor:
        """φ(img): images [N, 3, H, W] (0..255) → features [N, 256, (H − 87)/8 + 1, …]."""
        if not isinstance(img, Tensor) or img.dim() != 4 or img.shape[1] != 3 or min(img.shape[2:]) < 87:
            raise ValueError(f"cvops.SiamFC: img must be images [N, 3, H, W] with H, W ≥ 87, got {_shape(img)}")
        return self.backbone(img)

    def forward(self, z: Tensor, x: Tensor) -> Tensor:
        """Exemplars z [B, 3, 127, 127] (or [1, …]: one for every search image) and search images
        x [B, 3, 255, 255] → response logits [B, 1, 17, 17]."""
        return cvops.xcorr(self.embed(x), self.embed(z), mode="full", scale=self.out_scale, bias=self.out_bias)

    def extra_repr(self):
        return f"learn_adjust={self.learn_adjust}"


class LocalNormEmbedding(nn.Module):
    """A fixed embedding that makes cross-correlation a sum of local cosine similarities: the image
    is average-pooled pool×pool, smoothed (Gaussian, σ = blur pooled pixels), cut into cell×cell
    cells at stride cell, and each cell's 3·cell² values become a zero-mean, (nearly) unit-norm
    feature vector. Total stride pool·cell.

    Every cell then contributes at most 1 to a response, and the whole template only where all its
    cells match (Cauchy–Schwarz), so bright or busy regions do not win; flat cells (the tracker's
    average-colour padding) give ~0. The smoothing makes the response vary smoothly with sub-cell
    shifts, so its upsampled peak locates the target between cells. eps (in pixel units, 0..255)
    keeps nearly flat cells from being amplified to full weight.
    With pool 2, cell 4: 127 → 15×15, 255 → 31×31, response 17×17 at total stride 8, as SiamFC's."""

    def __init__(self, *, pool: int = 2, cell: int = 4, blur: float = 1.0, eps: float = 8.0):
        super().__init__()
        self.pool = check_int("LocalNormEmbedding", "pool", pool)
        self.cell = check_int("LocalNormEmbedding", "cell", cell)
        self.blur = _check_number("LocalNormEmbedding", "blur", blur, 0.0)
        self.eps = _check_number("LocalNormEmbedding", "eps", eps, 0.0, open_low=True)
        radius = math.ceil(3 * self.blur)
        taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
        kernel = torch.exp(-0.5 * (taps / max(self.blur, 1e-12)) ** 2)
        self.register_buffer("kernel", (kernel / kernel.sum()).float(), persistent=False)

    @property
    def total_stride(self) -> int:
        return self.pool * self.cell

    def _blur(self, x: Tensor) -> Tensor:
        """Separable Gaussian with replicated edges, as sums of shifted slices (a 1-channel conv2d
        is an order of magnitude slower on CPU)."""
        radius = self.kernel.numel() // 2
        if radius == 0:
            return x
        height, width = x.shape[-2:]
        padded = F.pad(x, (radius, radius, 0, 0), mode="replicate")
        x = sum(tap * padded[..., i : i + width] for i, tap in enumerate(self.kernel.tolist()))
        padded = F.pad(x, (0, 0, radius, radius), mode="replicate")
        return sum(tap * padded[..., i : i + height, :] for i, tap in enumerate(self.kernel.tolist()))

    def forward(self, img: Tensor) -> Tensor:
        size = self.pool * self.cell
        if not isinstance(img, Tensor) or img.dim() != 4 or min(img.shape[2:]) < size:
            raise ValueError(
                f"cvops.LocalNormEmbedding: img must be images [N, C, H, W] with H, W ≥ {size}, got {_shape(img)}"
            )
        x = img.float()
        if self.pool > 1:
            x = F.avg_pool2d(x, self.pool)
        x = self._blur(x)
        batch, _, height, width = x.shape
        cells = F.unfold(x, self.cell, stride=self.cell)  # [N, C·cell², L]
        cells = cells - cells.mean(dim=1, keepdim=True)
        cells = cells * torch.rsqrt(cells.square().sum(dim=1, keepdim=True) + self.eps**2)
        return cells.view(batch, -1, (height - self.cell) // self.cell + 1, (width - self.cell) // self.cell + 1)

    def extra_repr(self):
        return f"pool={self.pool}, cell={self.cell}, blur={self.blur}, eps={self.eps}"


# ---------------------------------------------------------------------------- loss and training


def logistic_labels(size, *, r_pos: float = 16.0, r_neg: float = 0.0, total_stride: int = 8) -> Tensor:
    """SiamFC's label map [H, W] for a response of size H or (H, W): 1 (positive) for cells within
    r_pos search-image pixels of the centre, 0.5 (ignored) out to r_neg, 0 (negative) beyond.

    Distances are in cells, r/total_stride, measured from the map's centre ((H − 1)/2, (W − 1)/2)
    with siamfc-pytorch's city-block distance |dx| + |dy| (for r_pos/total_stride = 2 it selects the
    same 13 cells as the paper's Euclidean distance)."""
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    y = torch.arange(height, dtype=torch.float64) - (height - 1) / 2
    x = torch.arange(width, dtype=torch.float64) - (width - 1) / 2
    dist = y.abs()[:, None] + x.abs()[None, :]
    pos, neg = r_pos / total_stride, r_neg / total_stride
    return torch.where(dist <= pos, 1.0, torch.where(dist < neg, 0.5, 0.0)).float()


def balance_weights(labels: Tensor, *, neg_weight: float = 1.0) -> Tensor:
    """siamfc-pytorch's BalancedLoss weights for a label tensor: each positive 1/#positives, each
    negative neg_weight/#negatives (ignored labels 0), all normalised to sum to 1 — so positives and
    negatives weigh 1 : neg_weight however few positives there are."""
    pos, neg = labels == 1, labels == 0
    weights = torch.zeros_like(labels)
    weights = torch.where(pos, 1 / pos.sum().clamp(min=1), weights)
    weights = torch.where(neg, neg_weight / neg.sum().clamp(min=1), weights)
    return weights / weights.sum()


class SiamFCLoss(nn.Module):
    """The balanced logistic loss of response logits [B, 1, H, W] against logistic_labels:
    Σ w·BCE(logit, label) with balance_weights over the whole batch (siamfc-pytorch's BalancedLoss).
    With neg_weight 1 it is ½·(mean BCE over the positives) + ½·(mean BCE over the negatives)."""

    def __init__(self, *, r_pos: float = 16.0, r_neg: float = 0.0, total_stride: int = 8, neg_weight: float = 1.0):
        super().__init__()
        self.r_pos = _check_number("SiamFCLoss", "r_pos", r_pos, 0.0)
        self.r_neg = _check_number("SiamFCLoss", "r_neg", r_neg, 0.0)
        self.total_stride = check_int("SiamFCLoss", "total_stride", total_stride)
        self.neg_weight = _check_number("SiamFCLoss", "neg_weight", neg_weight, 0.0)

    def labels(self, responses: Tensor) -> Tensor:
        """The label map broadcast to responses' shape."""
        labels = logistic_labels(
            tuple(responses.shape[-2:]), r_pos=self.r_pos, r_neg=self.r_neg, total_stride=self.total_stride
        )
        return labels.to(responses.device, responses.dtype).expand(responses.shape)

    def forward(self, responses: Tensor) -> Tensor:
        if not isinstance(responses, Tensor) or responses.dim() != 4 or not responses.dtype.is_floating_point:
            raise ValueError(f"cvops.SiamFCLoss: responses must be float logits [B, 1, H, W], got {_shape(responses)}")
        labels = self.labels(responses)
        weights = balance_weights(labels, neg_weight=self.neg_weight)
        return F.binary_cross_entropy_with_logits(responses, labels, weights, reduction="sum")

    def extra_repr(self):
        return f"r_pos={self.r_pos}, r_neg={self.r_neg}, total_stride={self.total_stride}, neg_weight={self.neg_weight}"


def train_step(model: SiamFC, optimizer: torch.optim.Optimizer, z: Tensor, x: Tensor, *, loss_fn=None) -> float:
    """One optimisation step on exemplar/search pairs z [B, 3, 127, 127], x [B, 3, 255, 255] whose
    target sits at both centres (as SiamFC's training pairs). loss_fn defaults to SiamFCLoss with
    the model's total stride. Returns the loss before the step as a float."""
    if loss_fn is None:
        loss_fn = SiamFCLoss(total_stride=model.total_stride)
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model(z, x))
    loss.backward()
    optimizer.step()
    return loss.item()


# ---------------------------------------------------------------------------- the tracker


def _frame_tensor(frame) -> Tensor:
    """HWC uint8 RGB frame → float [3, H, W] with values 0..255."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"cvops.SiamFCTracker: frame must be an HWC uint8 RGB numpy array, got {_shape(frame)}")
    return torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float()


def crop_and_resize(image: Tensor, center, sizes, out_size: int, fill: Tensor) -> Tensor:
    """Square crops of side sizes[k] (pixels) centred on center (cx, cy) of image [3, H, W], each
    resampled (bilinear) to out_size × out_size → [K, 3, out_size, out_size]; outside the image the
    crop takes the colour fill [3]. Unlike siamfc-pytorch's cv2 crop, nothing is rounded to whole
    pixels: the crop is placed at the sub-pixel centre."""
    _, height, width = image.shape
    sizes = torch.as_tensor(sizes, dtype=torch.float64).reshape(-1)
    theta = torch.zeros(len(sizes), 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 2] = sizes / width, 2 * center[0] / width - 1
    theta[:, 1, 1], theta[:, 1, 2] = sizes / height, 2 * center[1] / height - 1
    grid = F.affine_grid(theta.to(image.dtype), [len(sizes), 3, out_size, out_size], align_corners=False)
    shifted = (image - fill.view(3, 1, 1)).expand(len(sizes), -1, -1, -1)  # zero padding = the fill colour
    return F.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill.view(
        1, 3, 1, 1
    )


class SiamFCTracker:
    """siamfc-pytorch's tracker around any embedding: `init(frame, box)`, then `update(frame) → box`.

    embed maps images [N, 3, S, S] (0..255) to features [N, C, s, s] with total_stride pixels per
    cell and exemplar_size → a template that leaves a response_size × response_size response on
    instance_size (SiamFC.embed, in eval mode; or LocalNormEmbedding). Frames are HWC uint8 RGB
    numpy arrays, boxes (x, y, w, h) in continuous pixel coordinates (the module docstring).

    init crops the exemplar (the target with context·(w + h) of context, a square of side z_sz,
    average-colour padding) and embeds it once. update crops the search region (side x_sz =
    z_sz·instance_size/exemplar_size) at scale_num scales scale_step^k around the last centre and
    scores them in ONE batched embed and cvops.xcorr (template [1, C, h, w] against the scale_num
    crops); the responses are upsampled ×response_up (bicubic), the off-centre scales multiplied by
    scale_penalty, the best scale's map normalised and blended with a Hann window (window_influence),
    and its peak moves the centre; the size follows the chosen scale at rate scale_lr.

    The crops are moved to the device of embed's module (a module, or a bound method of one).
    With LocalNormEmbedding give context=0: it weighs every exemplar cell alike, so with SiamFC's
    0.5 the background, ~¾ of the exemplar, decides the match (on a static background the response
    stays at zero displacement); SiamFC's trained features weigh the object instead."""

    def __init__(
        self,
        embed,
        *,
        total_stride: int = 8,
        response_size: int = 17,
        exemplar_size: int = 127,
        instance_size: int = 255,
        context: float = 0.5,
        scale_num: int = 3,
        scale_step: float = 1.0375,
        scale_penalty: float = 0.9745,
        scale_lr: float = 0.59,
        response_up: int = 16,
        window_influence: float = 0.176,
    ):
        owner = "SiamFCTracker"
        if not callable(embed):
            raise ValueError(f"cvops.{owner}: embed must be callable (images [N, 3, S, S] → features), got {embed!r}")
        self.embed = embed
        self.total_stride = check_int(owner, "total_stride", total_stride)
        self.response_size = check_int(owner, "response_size", response_size)
        self.exemplar_size = check_int(owner, "exemplar_size", exemplar_size)
        self.instance_size = check_int(owner, "instance_size", instance_size)
        if instance_size < exemplar_size:
            raise ValueError(
                f"cvops.{owner}: instance_size must be ≥ exemplar_size ({exemplar_size}), got {instance_size}"
            )
        self.context = _check_number(owner, "context", context, 0.0)
        self.scale_num = check_int(owner, "scale_num", scale_num)
        if scale_num % 2 == 0:
            raise ValueError(f"cvops.{owner}: scale_num must be odd (scales around 1), got {scale_num}")
        self.scale_step = _check_number(owner, "scale_step", scale_step, 0.0, open_low=True)
        self.scale_penalty = _check_number(owner, "scale_penalty", scale_penalty, 0.0, 1.0, open_low=True)
        self.scale_lr = _check_number(owner, "scale_lr", scale_lr, 0.0, 1.0)
        self.response_up = check_int(owner, "response_up", response_up)
        self.window_influence = _check_number(owner, "window_influence", window_influence, 0.0, 1.0)

        self.upscale_size = self.response_up * self.response_size
        hann = torch.hann_window(self.upscale_size, periodic=False, dtype=torch.float64)
        window = hann[:, None] * hann[None, :]
        self.window = window / window.sum()
        half = self.scale_num // 2
        self.scale_factors = self.scale_step ** torch.linspace(-half, half, self.scale_num, dtype=torch.float64)
        self.kernel = None
        module = embed if isinstance(embed, nn.Module) else getattr(embed, "__self__", None)
        tensors = itertools.chain(module.parameters(), module.buffers()) if isinstance(module, nn.Module) else ()
        self.device = next((t.device for t in tensors), torch.device("cpu"))

    def init(self, frame, box) -> None:
        """Start tracking the target at box (x, y, w, h) in frame."""
        image = _frame_tensor(frame)
        x, y, w, h = (float(v) for v in box)
        if not (w > 0 and h > 0):
            raise ValueError(f"cvops.SiamFCTracker: box must have a positive width and height, got {box!r}")
        self.center = np.array([x + w / 2, y + h / 2])
        self.target_size = np.array([w, h])
        context = self.context * (w + h)
        self.z_size = math.sqrt((w + context) * (h + context))
        self.x_size = self.z_size * self.instance_size / self.exemplar_size
        self.avg_color = image.mean(dim=(1, 2))
        z = crop_and_resize(image, self.center, [self.z_size], self.exemplar_size, self.avg_color)
        with torch.no_grad():
            self.kernel = self.embed(z.to(self.device))

    def _check_started(self):
        if self.kernel is None:
            raise ValueError("cvops.SiamFCTracker: call init(frame, box) before tracking")

    def search_crops(self, frame) -> Tensor:
        """The search region at each scale, [scale_num, 3, instance_size, instance_size]."""
        self._check_started()
        image = _frame_tensor(frame)
        return crop_and_resize(image, self.center, self.x_size * self.scale_factors, self.instance_size, self.avg_color)

    def responses(self, crops: Tensor) -> Tensor:
        """Raw responses [K, 1, R, R] of K search crops: one embed, one cvops.xcorr of the template
        [1, C, h, w] against all K."""
        self._check_started()
        with torch.no_grad():
            features = self.embed(crops.to(self.device))
            out = cvops.xcorr(features, self.kernel.to(features.dtype), mode="full")
        if out.shape[-2:] != (self.response_size, self.response_size):
            raise ValueError(
                f"cvops.SiamFCTracker: the embedding gives a {tuple(out.shape[-2:])} response, but response_size is "
                f"{self.response_size} (check total_stride, exemplar_size and instance_size)"
            )
        return out

    def update(self, frame):
        """The target's box (x, y, w, h) in the next frame, as a tuple of floats."""
        responses = self.responses(self.search_crops(frame)).cpu().double()
        up = F.interpolate(responses, size=(self.upscale_size,) * 2, mode="bicubic", align_corners=False)[:, 0]
        half = self.scale_num // 2
        penalty = torch.full((self.scale_num, 1, 1), self.scale_penalty, dtype=up.dtype)
        penalty[half] = 1.0
        up = up * penalty
        scale_id = int(up.flatten(1).max(dim=1).values.argmax())
        response = up[scale_id]
        response = response - response.min()
        response = response / (response.sum() + 1e-16)
        response = (1 - self.window_influence) * response + self.window_influence * self.window
        row, col = divmod(int(response.argmax()), self.upscale_size)

        factor = float(self.scale_factors[scale_id])
        disp = np.array([col, row], dtype=np.float64) - (self.upscale_size - 1) / 2
        disp = disp * self.total_stride / self.response_up  # in the search crop's pixels
        self.center = self.center + disp * self.x_size * factor / self.instance_size
        scale = (1 - self.scale_lr) + self.scale_lr * factor
        self.target_size = self.target_size * scale
        self.z_size *= scale
        self.x_size *= scale
        w, h = self.target_size
        return (float(self.center[0] - w / 2), float(self.center[1] - h / 2), float(w), float(h))


def track(tracker: SiamFCTracker, frames, box) -> Tensor:
    """Run tracker over frames (a sequence of HWC uint8 frames) from box (x, y, w, h) in the first:
    [T, 4] float64 boxes, the first being box itself (OTB's convention)."""
    tracker.init(frames[0], box)
    boxes = [tuple(float(v) for v in box)] + [tracker.update(frame) for frame in frames[1:]]
    return torch.tensor(boxes, dtype=torch.float64)


# ---------------------------------------------------------------------------- OTB-style evaluation


def _check_boxes(owner: str, name: str, boxes) -> Tensor:
    boxes = torch.as_tensor(boxes, dtype=torch.float64)
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"cvops.{owner}: {name} must be (x, y, w, h) boxes [T, 4], got {_shape(boxes)}")
    return boxes


def iou(boxes_a, boxes_b) -> Tensor:
    """Per-frame IoU of (x, y, w, h) boxes [T, 4] and [T, 4] → [T] (cvops.box_iou_aligned)."""
    a, b = _check_boxes("iou", "boxes_a", boxes_a), _check_boxes("iou", "boxes_b", boxes_b)
    if a.shape != b.shape:
        raise ValueError(f"cvops.iou: boxes_a and boxes_b must have the same shape, got {_shape(a)} and {_shape(b)}")
    return cvops.box_iou_aligned(a, b, kind="iou", fmt="xywh")


def center_error(boxes_a, boxes_b) -> Tensor:
    """Per-frame distance between the centres of (x, y, w, h) boxes [T, 4] and [T, 4] → [T] pixels."""
    a, b = _check_boxes("center_error", "boxes_a", boxes_a), _check_boxes("center_error", "boxes_b", boxes_b)
    centre_a, centre_b = a[:, :2] + a[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2
    return (centre_a - centre_b).norm(dim=1)


def success_curve(ious, thresholds=None) -> Tensor:
    """OTB's success curve: for each threshold (default: 21 points 0, 0.05, …, 1), the fraction of
    frames whose IoU exceeds it (strictly, as the OTB toolkit)."""
    ious = torch.as_tensor(ious, dtype=torch.float64).reshape(-1)
    thresholds = SUCCESS_THRESHOLDS if thresholds is None else torch.as_tensor(thresholds, dtype=torch.float64)
    if ious.numel() == 0:
        raise ValueError("cvops.success_curve: ious must hold at least one frame")
    return (ious[None, :] > thresholds.reshape(-1, 1)).double().mean(dim=1)


def success_auc(ious, thresholds=None) -> float:
    """The area under the success curve as OTB reports it: the curve's mean over its thresholds."""
    return float(success_curve(ious, thresholds).mean())


def precision_at(center_errors, threshold: float = 20.0) -> float:
    """OTB's precision: the fraction of frames whose centre error is at most threshold pixels."""
    errors = torch.as_tensor(center_errors, dtype=torch.float64).reshape(-1)
    if errors.numel() == 0:
        raise ValueError("cvops.precision_at: center_errors must hold at least one frame")
    return float((errors <= threshold).double().mean())
