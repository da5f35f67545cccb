"""Face recognition after DeepFace (Taigman et al., CVPR 2014) and FaceNet (Schroff et al., CVPR
2015): the DeepFace network with its locally connected layers (cvops.nn.LocallyConnected2d), heads
that decide whether two face embeddings show the same person, the triplet loss and its in-batch
mining, a gallery of enrolled identities, and LFW-style evaluation.

Embeddings come from ONE shared tower (the Siamese network's two branches are the same module), so
everything here works on embeddings [..., D]; SiameseVerifier.verify runs a tower on two inputs for
convenience. Distances are squared Euclidean throughout, as in FaceNet:
    same identity  ⇔  ‖f1 − f2‖² < τ                                     (eqs. 1–2)
    triplet loss    = max(‖a − p‖² − ‖a − n‖² + α, 0)                     (eq. 6)
DeepFace's learned heads are a logistic unit over per-component distances d_k:
    ŷ = σ(Σ_k w_k·d_k + b),  d_k = |f1_k − f2_k|                          (eq. 3, "weighted_l1")
                             d_k = (f1_k − f2_k)² / (f1_k + f2_k + eps)    (eq. 4, "chi2")
"""

from collections import namedtuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cvops.models._outputs import output_type
from cvops.nn.local import LocallyConnected2d
from cvops.ops._validate import REDUCTIONS, check_bool, check_choice, check_eps, check_int, check_positive_number

__all__ = [
    "BatchTripletLoss",
    "DeepFace",
    "FaceGallery",
    "GalleryVerification",
    "Identification",
    "ROC",
    "SiameseVerifier",
    "Verification",
    "VerificationAccuracy",
    "batch_triplet_loss",
    "pairwise_squared_distances",
    "roc_auc",
    "roc_curve",
    "triplet_loss",
    "verification_accuracy",
]

HEADS = ("chi2", "weighted_l1", "distance")
MINING = ("all", "hard", "semihard")
VALUE_KINDS = ("score", "distance")


@output_type
class Verification:
    """SiameseVerifier.decide / verify: same (bool tensor) and score — the logit for the logistic heads
    (same ⇔ logit > 0), the squared distance for head "distance" (same ⇔ distance < threshold)."""

    same: Tensor
    score: Tensor


GalleryVerification = namedtuple("GalleryVerification", ["same", "distance"])
GalleryVerification.__doc__ = """FaceGallery.verify: same (bool, or a bool tensor [Q]) and the squared distance to the identity's
template (a float, or [Q])."""

Identification = namedtuple("Identification", ["name", "distance"])
Identification.__doc__ = """FaceGallery.identify: the nearest identity's name, or None when even the nearest is not within the
threshold (or nothing is enrolled), and its squared distance (inf for an empty gallery); a list of
names and a tensor [Q] for a batch of queries."""


@output_type
class BatchTripletLoss:
    """batch_triplet_loss: the loss (a scalar with a gradient path) and the fraction of the triplets it
    averages over whose loss is > 0 (detached; 0 when there is none) — the quantity to watch, since the
    mean falls as easy triplets pile up even when the hard ones are not learned."""

    loss: Tensor
    fraction_active: Tensor


ROC = namedtuple("ROC", ["fpr", "tpr", "thresholds"])
ROC.__doc__ = (
    """roc_curve: false and true positive rates and the thresholds (float64, decreasing; thresholds[0] = inf)."""
)

VerificationAccuracy = namedtuple("VerificationAccuracy", ["mean", "std", "accuracies", "thresholds"])
VerificationAccuracy.__doc__ = """verification_accuracy: the mean and (population) standard deviation of the per-fold accuracies
(floats), and the per-fold accuracies and thresholds ([folds] float64)."""


# ---------------------------------------------------------------------------- checks


def _shape(value) -> str:
    return str(tuple(value.shape)) if isinstance(value, Tensor) else type(value).__name__


def _check_embeddings(owner: str, name: str, value, dim=None, *, exact_dim=None) -> Tensor:
    """A floating tensor [..., D] (exact_dim: exactly that many dims); dim, when given, is D."""
    ok = isinstance(value, Tensor) and value.dim() >= 1 and (exact_dim is None or value.dim() == exact_dim)
    if not ok:
        layout = "[N, D]" if exact_dim == 2 else "[..., D]"
        raise ValueError(f"cvops.{owner}: {name} must be embeddings {layout}, got {_shape(value)}")
    if not value.dtype.is_floating_point:
        raise ValueError(f"cvops.{owner}: {name} must be floating-point, got {value.dtype}")
    if dim is not None and value.shape[-1] != dim:
        raise ValueError(f"cvops.{owner}: {name}'s last dim must be the embedding size {dim}, got {value.shape[-1]}")
    return value


def _check_margin(owner: str, margin) -> float:
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < float("inf"):
        raise ValueError(f"cvops.{owner}: margin must be a finite number >= 0, got {margin!r}")
    return float(margin)


def _same_shape(owner: str, names, tensors) -> None:
    if any(t.shape != tensors[0].shape for t in tensors):
        shapes = ", ".join(f"{n} {tuple(t.shape)}" for n, t in zip(names, tensors))
        raise ValueError(f"cvops.{owner}: {', '.join(names)} must have the same shape, got {shapes}")


def _broadcast(owner: str, f1: Tensor, f2: Tensor) -> None:
    try:
        torch.broadcast_shapes(f1.shape, f2.shape)
    except RuntimeError:
        raise ValueError(
            f"cvops.{owner}: f1 and f2 must have broadcastable shapes, got {tuple(f1.shape)} and {tuple(f2.shape)}"
        ) from None


def _check_values_and_labels(owner: str, values, same, values_name: str):
    """values: 1-D real, no NaN; same: 1-D bool or 0/1, the same length → (float64 values, bool same)."""
    try:
        values = torch.as_tensor(values).detach().cpu()
        same = torch.as_tensor(same).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"cvops.{owner}: {values_name} and same must be 1-D tensors or arrays ({error})") from None
    if values.dim() != 1 or values.dtype == torch.bool or values.dtype.is_complex:
        raise ValueError(f"cvops.{owner}: {values_name} must be 1-D real values, got {_shape(values)} {values.dtype}")
    values = values.double()
    if bool(values.isnan().any()):
        raise ValueError(f"cvops.{owner}: {values_name} must not hold NaN")
    if same.shape != values.shape:
        raise ValueError(
            f"cvops.{owner}: same must be [N] like {values_name} ({values.shape[0]}), got {tuple(same.shape)}"
        )
    if same.dtype != torch.bool:
        if same.dtype.is_complex or not bool(((same == 0) | (same == 1)).all()):
            raise ValueError(f"cvops.{owner}: same must be bool or 0/1, got {same.dtype} values other than 0 and 1")
        same = same != 0
    return values, same


def _check_both_classes(owner: str, same: Tensor) -> None:
    if bool(same.all()) or not bool(same.any()):
        raise ValueError(f"cvops.{owner}: same must hold both same (True) and different (False) pairs")


# ---------------------------------------------------------------------------- verification heads


class DeepFace(nn.Module):
    """DeepFace for aligned 152×152×3 faces: C1 32@11×11, M2 max-pool 3×3/2 (ceil_mode, which gives
    the paper's sizes 142 → 71), C3 16@9×9, then the locally connected L4 16@9×9, L5 16@7×7 stride 2
    and L6 16@5×5 (63 → 55 → 25 → 21: unshared weights, each face region its own filters), F7 4096
    with dropout, F8 num_classes; ReLU after every layer but F8. forward(x) → class logits;
    embed(x) → the L2-normalised F7 descriptor after its ReLU (non-negative, as the χ² verifier
    needs). About 119M parameters with 4030 classes, 73M of them in L4–L6."""

    INPUT_SIZE = 152

    def __init__(self, num_classes: int, *, dropout: float = 0.5):
        super().__init__()
        owner = "DeepFace"
        self.num_classes = check_int(owner, "num_classes", num_classes)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"cvops.{owner}: dropout must be a number in [0, 1), got {dropout!r}")
        self.c1 = nn.Conv2d(3, 32, 11)  # 152 → 142
        self.m2 = nn.MaxPool2d(3, 2, ceil_mode=True)  # 142 → 71
        self.c3 = nn.Conv2d(32, 16, 9)  # 71 → 63
        self.l4 = LocallyConnected2d(16, 16, 63, 9)  # 63 → 55
        self.l5 = LocallyConnected2d(16, 16, 55, 7, stride=2)  # 55 → 25
        self.l6 = LocallyConnected2d(16, 16, 25, 5)  # 25 → 21
        self.f7 = nn.Linear(16 * 21 * 21, 4096)
        self.dropout = nn.Dropout(dropout)
        self.f8 = nn.Linear(4096, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """F7 after its ReLU: [B, 4096]."""
        if not isinstance(x, Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != (3, self.INPUT_SIZE, self.INPUT_SIZE):
            raise ValueError(f"cvops.DeepFace: x must be faces [B, 3, 152, 152], got {_shape(x)}")
        x = self.m2(F.relu(self.c1(x)))
        x = F.relu(self.c3(x))
        x = F.relu(self.l6(F.relu(self.l5(F.relu(self.l4(x))))))
        return F.relu(self.f7(x.flatten(1)))

    def forward(self, x: Tensor, *, return_embedding: bool = False):
        """Class logits [B, num_classes]; return_embedding=True: (logits, embed(x)) from one pass, for
        objectives that combine the softmax with a metric loss on the embedding (a data-parallel
        wrapper such as DDP sees only what forward computes)."""
        features = self.features(x)
        logits = self.f8(self.dropout(features))
        if check_bool("DeepFace", "return_embedding", return_embedding):
            return logits, F.normalize(features, dim=1)
        return logits

    def embed(self, x: Tensor) -> Tensor:
        """The L2-normalised F7 descriptor [B, 4096] (non-negative)."""
        return F.normalize(self.features(x), dim=1)


class SiameseVerifier(nn.Module):
    """Same / not-same decision over the two embeddings of one shared tower.

    forward(f1, f2) takes embeddings [..., embedding_dim] (broadcast against each other) and returns
    the head's raw output: logits for the logistic heads "chi2" (eq. 4, for non-negative embeddings,
    e.g. after a ReLU) and "weighted_l1" (eq. 3) — train them with BCEWithLogitsLoss on
    verifier(tower(x1), tower(x2)) — and the squared distance ‖f1 − f2‖² for "distance" (eqs. 1–2),
    which has no parameters: its threshold τ is a buffer (`threshold`, used by that head only), set by
    fit_threshold from labelled pairs. decide / verify turn the output into a Verification."""

    def __init__(self, embedding_dim: int, head: str = "chi2", *, eps: float = 1e-6, threshold: float = 1.0):
        super().__init__()
        owner = "SiameseVerifier"
        self.embedding_dim = check_int(owner, "embedding_dim", embedding_dim)
        self.head = check_choice(owner, "head", head, HEADS)
        self.eps = check_eps(owner, eps)
        threshold = check_positive_number(owner, "threshold", threshold)
        if head == "distance":
            self.register_buffer("threshold", torch.tensor(threshold))
        else:
            self.linear = nn.Linear(embedding_dim, 1)  # w_k and b of ŷ = σ(Σ_k w_k·d_k + b)

    @property
    def logistic(self) -> bool:
        return self.head != "distance"

    def component_distances(self, f1: Tensor, f2: Tensor) -> Tensor:
        """d_k [..., embedding_dim] of the logistic heads (eq. 3 or eq. 4)."""
        if self.head == "weighted_l1":
            return (f1 - f2).abs()
        return (f1 - f2).square() / (f1 + f2 + self.eps)

    def forward(self, f1: Tensor, f2: Tensor) -> Tensor:
        owner = "SiameseVerifier"
        _check_embeddings(owner, "f1", f1, self.embedding_dim)
        _check_embeddings(owner, "f2", f2, self.embedding_dim)
        _broadcast(owner, f1, f2)
        if not self.logistic:
            return (f1 - f2).square().sum(-1)
        return self.linear(self.component_distances(f1, f2)).squeeze(-1)

    def probability(self, f1: Tensor, f2: Tensor) -> Tensor:
        """P(same identity) = σ(logit), logistic heads only."""
        if not self.logistic:
            raise ValueError(
                "cvops.SiameseVerifier: probability needs a logistic head ('chi2' or 'weighted_l1'), got head='distance'"
            )
        return torch.sigmoid(self(f1, f2))

    def decide(self, f1: Tensor, f2: Tensor) -> Verification:
        """Embeddings → Verification(same, score): logit > 0 (p > ½), or squared distance < threshold."""
        score = self(f1, f2)
        same = score > 0 if self.logistic else score < self.threshold
        return Verification(same, score)

    def verify(self, tower: nn.Module, x1: Tensor, x2: Tensor) -> Verification:
        """decide(tower(x1), tower(x2)): the same tower embeds both inputs (shared weights)."""
        if not callable(tower):
            raise ValueError(f"cvops.SiameseVerifier: tower must be a module or callable, got {type(tower).__name__}")
        return self.decide(tower(x1), tower(x2))

    @torch.no_grad()
    def fit_threshold(self, distances, same) -> float:
        """Head "distance": set τ to the threshold that classifies the labelled pairs (squared distances
        [N], same [N] bool) best — a midpoint between neighbouring distances — and return it."""
        if self.logistic:
            raise ValueError(
                f"cvops.SiameseVerifier: fit_threshold is for head='distance' (a logistic head learns its "
                f"decision), got head={self.head!r}"
            )
        values, same = _check_values_and_labels("SiameseVerifier", distances, same, "distances")
        if values.numel() == 0:
            raise ValueError("cvops.SiameseVerifier: distances must hold at least one pair")
        tau = -_best_threshold(-values, same)  # score −d > t ⇔ d < −t
        self.threshold.fill_(tau)
        return tau

    def extra_repr(self):
        extra = f", eps={self.eps}" if self.head == "chi2" else ""
        return f"embedding_dim={self.embedding_dim}, head={self.head!r}{extra}"


# ---------------------------------------------------------------------------- triplet loss


def triplet_loss(anchor: Tensor, positive: Tensor, negative: Tensor, margin: float = 0.2, reduction: str = "mean"):
    """FaceNet's eq. 6: max(‖a − p‖² − ‖a − n‖² + margin, 0) over embeddings [..., D] of one shape.

    SQUARED distances with FaceNet's margin 0.2 (for unit-norm embeddings) — unlike
    torch.nn.functional.triplet_margin_loss (plain distances, margin 1). reduction "mean" | "sum" |
    "none" (the per-triplet losses [...])."""
    owner = "triplet_loss"
    names = ("anchor", "positive", "negative")
    tensors = tuple(_check_embeddings(owner, n, t) for n, t in zip(names, (anchor, positive, negative)))
    _same_shape(owner, names, tensors)
    margin = _check_margin(owner, margin)
    check_choice(owner, "reduction", reduction, REDUCTIONS)
    losses = ((anchor - positive).square().sum(-1) - (anchor - negative).square().sum(-1) + margin).clamp_min(0)
    if reduction == "mean":
        return losses.mean()
    return losses.sum() if reduction == "sum" else losses


def pairwise_squared_distances(embeddings: Tensor) -> Tensor:
    """[N, D] → [N, N] squared Euclidean distances, ‖x_i‖² + ‖x_j‖² − 2·x_i·x_j clamped at 0 (the
    expansion keeps memory at N²), with an exact 0 on the diagonal."""
    _check_embeddings("pairwise_squared_distances", "embeddings", embeddings, exact_dim=2)
    return _pairwise(embeddings)


def _pairwise(x: Tensor) -> Tensor:
    squares = x.square().sum(1)
    distances = (squares[:, None] + squares[None, :] - 2 * (x @ x.T)).clamp_min(0)
    eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    return distances.masked_fill(eye, 0)


def batch_triplet_loss(
    embeddings: Tensor, labels: Tensor, margin: float = 0.2, mining: str = "all"
) -> BatchTripletLoss:
    """Triplet loss (squared distances, eq. 6) over triplets chosen inside a batch: embeddings [B, D],
    integer labels [B] (identities).

    A triplet (a, p, n) is valid when label(p) = label(a), p ≠ a and label(n) ≠ label(a).
    mining:
      "all":      the mean over every valid triplet.
      "hard":     batch-hard (Hermans et al., 2017): per anchor, the farthest positive and the closest
                  negative; the mean over anchors.
      "semihard": FaceNet's, as TensorFlow Addons' triplet_semihard_loss picks it: for each (a, p), the
                  closest negative farther than the positive (smallest d(a, n) with d(a, n) > d(a, p)),
                  else — when no negative is farther — the farthest negative; the mean over (a, p) pairs.
    Anchors without a positive or a negative take no part; with no valid triplet the loss is 0 (still
    connected to embeddings, so backward works). Returns BatchTripletLoss(loss, fraction_active)."""
    owner = "batch_triplet_loss"
    _check_embeddings(owner, "embeddings", embeddings, exact_dim=2)
    if (
        not isinstance(labels, Tensor)
        or labels.dim() != 1
        or labels.shape[0] != embeddings.shape[0]
        or labels.dtype.is_floating_point
        or labels.dtype.is_complex
        or labels.dtype == torch.bool
    ):
        what = f"{_shape(labels)} {labels.dtype}" if isinstance(labels, Tensor) else _shape(labels)
        raise ValueError(
            f"cvops.{owner}: labels must be integer identities [B] with B = {embeddings.shape[0]}, got {what}"
        )
    if labels.device != embeddings.device:
        raise ValueError(
            f"cvops.{owner}: labels must be on embeddings' device ({embeddings.device}), got {labels.device}"
        )
    margin = _check_margin(owner, margin)
    check_choice(owner, "mining", mining, MINING)

    if embeddings.shape[0] == 0:
        return BatchTripletLoss(0 * embeddings.sum(), embeddings.new_zeros(()))
    d = _pairwise(embeddings)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    positive = same & ~eye  # [a, p]
    negative = ~same  # [a, n]
    if mining == "all":
        losses = d[:, :, None] - d[:, None, :] + margin  # [a, p, n]
        valid = positive[:, :, None] & negative[:, None, :]
    elif mining == "hard":
        hardest_positive = torch.where(positive, d, 0).amax(1)  # distances are >= 0
        hardest_negative = torch.where(negative, d, float("inf")).amin(1)
        losses = hardest_positive - hardest_negative + margin  # [a]
        valid = positive.any(1) & negative.any(1)
    else:
        d_an = d[:, None, :]  # [a, 1, n]
        farther = negative[:, None, :] & (d_an > d[:, :, None])  # [a, p, n]: d(a, n) > d(a, p)
        semihard = torch.where(farther, d_an, float("inf")).amin(2)  # [a, p]
        farthest = torch.where(negative, d, float("-inf")).amax(1, keepdim=True)  # [a, 1]
        losses = d - torch.where(farther.any(2), semihard, farthest) + margin  # [a, p]
        valid = positive & negative.any(1, keepdim=True)
    # where, not multiplication: the excluded entries may be ±inf.
    losses = torch.where(valid, losses, 0).clamp_min(0)
    count = valid.sum()
    if int(count) == 0:
        return BatchTripletLoss(0 * embeddings.sum(), embeddings.new_zeros(()))
    active = (losses > 0).sum()
    return BatchTripletLoss(losses.sum() / count, (active / count).to(embeddings.dtype).detach())


# ---------------------------------------------------------------------------- gallery


class FaceGallery:
    """Enrolled identities as encodings (no images), for 1:1 verification and 1:N identification.

    Every enrolled embedding is kept (L2-normalised when normalize=True, as FaceNet's embedding is);
    an identity's template is the mean of its embeddings (re-normalised to unit length when
    normalize=True), and queries are compared with templates by squared Euclidean distance: same
    identity ⇔ distance < threshold. Enrolling a known name again adds to its embeddings. Storage
    (dtype, device) is the first enrolment's; queries are cast to it."""

    def __init__(self, threshold: float = 1.0, *, normalize: bool = True):
        self.threshold = check_positive_number("FaceGallery", "threshold", threshold)
        self.normalize = check_bool("FaceGallery", "normalize", normalize)
        self._embeddings: dict[str, Tensor] = {}
        self._names: list[str] = []
        self._templates = None  # [N, D], rows in the order of _names

    @property
    def names(self) -> list:
        return list(self._names)

    @property
    def templates(self):
        """[N, D] identity templates in the order of names (None while nothing is enrolled)."""
        return self._templates

    def embeddings(self, name: str) -> Tensor:
        """The stored embeddings [n, D] of an identity."""
        return self._embeddings[self._check_name(name)]

    def __len__(self):
        return len(self._names)

    def __contains__(self, name):
        return name in self._embeddings

    def _prepare(self, embeddings: Tensor) -> Tensor:
        embeddings = embeddings.detach()
        if self._templates is not None:
            embeddings = embeddings.to(self._templates)
        return nn.functional.normalize(embeddings, dim=-1) if self.normalize else embeddings

    def _check_name(self, name) -> str:
        if not isinstance(name, str) or name not in self._embeddings:
            raise ValueError(f"cvops.FaceGallery: name must be an enrolled identity, got {name!r}")
        return name

    def _check_query(self, embedding) -> Tensor:
        if self._templates is not None:
            dim = self._templates.shape[1]
            ok = isinstance(embedding, Tensor) and embedding.dim() in (1, 2) and embedding.shape[-1] == dim
            if not ok:
                raise ValueError(
                    f"cvops.FaceGallery: embedding must be [D] or [Q, D] with D = {dim}, got {_shape(embedding)}"
                )
        elif not isinstance(embedding, Tensor) or embedding.dim() not in (1, 2):
            raise ValueError(f"cvops.FaceGallery: embedding must be [D] or [Q, D], got {_shape(embedding)}")
        return _check_embeddings("FaceGallery", "embedding", embedding)

    def enrol(self, name: str, embeddings: Tensor) -> None:
        """Add embeddings [D] or [n, D] (n ≥ 1) of the identity `name`."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"cvops.FaceGallery: name must be a non-empty string, got {name!r}")
        embeddings = self._check_query(embeddings)
        if embeddings.dim() == 1:
            embeddings = embeddings[None]
        if embeddings.shape[0] == 0:
            raise ValueError("cvops.FaceGallery: embeddings must hold at least one embedding, got [0, D]")
        embeddings = self._prepare(embeddings)
        if name in self._embeddings:
            self._embeddings[name] = torch.cat([self._embeddings[name], embeddings])
        else:
            self._embeddings[name] = embeddings
            self._names.append(name)
        template = self._embeddings[name].mean(0)
        if self.normalize:
            template = nn.functional.normalize(template, dim=0)
        if self._templates is None:
            self._templates = template[None]
        elif len(self._names) > self._templates.shape[0]:
            self._templates = torch.cat([self._templates, template[None]])
        else:
            self._templates[self._names.index(name)] = template

    def distances(self, embedding: Tensor) -> Tensor:
        """Squared distances from queries [D] or [Q, D] to every template: [N] or [Q, N]."""
        embedding = self._check_query(embedding)
        if self._templates is None:
            return embedding.new_zeros(embedding.shape[:-1] + (0,))
        query = self._prepare(embedding)
        return (query[..., None, :] - self._templates).square().sum(-1)

    def verify(self, embedding: Tensor, name) -> GalleryVerification:
        """1:1 — is the query `name`? embedding [D] with a name → (bool, float); [Q, D] with one name
        or Q names → (bool [Q], distances [Q])."""
        distances = self.distances(embedding)
        if embedding.dim() == 1:
            distance = float(distances[self._names.index(self._check_name(name))])
            return GalleryVerification(distance < self.threshold, distance)
        names = list(name) if isinstance(name, (list, tuple)) else [name] * embedding.shape[0]
        if len(names) != embedding.shape[0]:
            raise ValueError(
                f"cvops.FaceGallery: name must be one name or {embedding.shape[0]} names (one per query), got {len(names)}"
            )
        rows = torch.tensor([self._names.index(self._check_name(n)) for n in names], device=distances.device)
        distance = distances.gather(1, rows[:, None]).squeeze(1)
        return GalleryVerification(distance < self.threshold, distance)

    def identify(self, embedding: Tensor) -> Identification:
        """1:N — the nearest template's name when its distance is < threshold, else None. embedding [D]
        → (name or None, float); [Q, D] → (list of Q names or None, distances [Q])."""
        distances = self.distances(embedding)
        if not self._names:
            nearest = torch.full(distances.shape[:-1], float("inf"), dtype=distances.dtype, device=distances.device)
            index = torch.zeros(distances.shape[:-1], dtype=torch.long)
        else:
            nearest, index = distances.min(-1)
        known = (nearest < self.threshold).tolist()
        index = index.tolist()
        if embedding.dim() == 1:
            return Identification(self._names[index] if known else None, float(nearest))
        return Identification([self._names[i] if k else None for i, k in zip(index, known)], nearest)


# ---------------------------------------------------------------------------- evaluation


def _best_threshold(scores: Tensor, same: Tensor) -> float:
    """The threshold t maximising the accuracy of "same ⇔ score > t" on (scores, same): −inf (all
    same), +inf (none), or a midpoint between neighbouring distinct scores; the smallest such t on ties."""
    order = torch.argsort(scores)
    s, y = scores[order], same[order]
    zero = torch.zeros(1, dtype=torch.long)
    different_below = torch.cat([zero, (~y).long().cumsum(0)])  # cut i: scores[:i] called different
    same_below = torch.cat([zero, y.long().cumsum(0)])
    correct = different_below + (same_below[-1] - same_below)
    cut_ok = torch.ones(len(s) + 1, dtype=torch.bool)
    cut_ok[1:-1] = s[1:] > s[:-1]  # cannot cut between equal scores
    i = int(torch.where(cut_ok, correct, -1).argmax())  # argmax: the first maximum
    if i == 0:
        return float("-inf")
    if i == len(s):
        return float("inf")
    return float((s[i - 1] + s[i]) / 2)


def verification_accuracy(values, same, folds: int = 10, *, kind: str = "score") -> VerificationAccuracy:
    """LFW's protocol: split the pairs into `folds` contiguous folds (as sklearn's KFold without
    shuffling; LFW's view 2 is 10 folds of 600 pairs); for each fold choose the threshold that is most
    accurate on the other folds and measure the accuracy on the held-out one.

    values [N]: scores (kind="score", same ⇔ score > t: logits, similarities) or distances
    (kind="distance", same ⇔ distance < t); same [N] bool or 0/1. Thresholds are midpoints between
    neighbouring training values (or ±inf). Returns VerificationAccuracy (std over folds, ddof 0)."""
    owner = "verification_accuracy"
    check_choice(owner, "kind", kind, VALUE_KINDS)
    values, same = _check_values_and_labels(owner, values, same, "values")
    folds = check_int(owner, "folds", folds, minimum=2)
    if folds > values.shape[0]:
        raise ValueError(f"cvops.{owner}: folds must be <= the number of pairs ({values.shape[0]}), got {folds}")
    scores = -values if kind == "distance" else values
    sign = -1.0 if kind == "distance" else 1.0
    fold_of = torch.cat([torch.full((len(c),), f) for f, c in enumerate(torch.arange(len(scores)).tensor_split(folds))])
    accuracies, thresholds = [], []
    for f in range(folds):  # a loop over folds, not pairs
        test = fold_of == f
        t = _best_threshold(scores[~test], same[~test])
        accuracies.append(((scores[test] > t) == same[test]).double().mean())
        thresholds.append(sign * t)
    accuracies = torch.stack(accuracies)
    return VerificationAccuracy(
        float(accuracies.mean()),
        float(accuracies.std(correction=0)),
        accuracies,
        torch.tensor(thresholds, dtype=torch.float64),
    )


def roc_curve(scores, same, *, drop_intermediate: bool = True) -> ROC:
    """ROC of "same ⇔ score ≥ threshold" over every distinct score, as sklearn.metrics.roc_curve:
    the curve starts at (0, 0) with threshold inf, and drop_intermediate leaves out points collinear
    with their neighbours (they change neither the plot nor the AUC). scores [N] (for distances pass
    −distance); same [N] bool or 0/1, holding both classes."""
    owner = "roc_curve"
    check_bool(owner, "drop_intermediate", drop_intermediate)
    scores, same = _check_values_and_labels(owner, scores, same, "scores")
    return _roc(owner, scores, same, drop_intermediate)


def _roc(owner: str, scores: Tensor, same: Tensor, drop_intermediate: bool) -> ROC:
    _check_both_classes(owner, same)
    s, order = torch.sort(scores, descending=True)
    y = same[order].double()
    last = torch.cat([torch.nonzero(s[1:] != s[:-1]).squeeze(1), torch.tensor([len(s) - 1])])  # end of each tie run
    tps = y.cumsum(0)[last]
    fps = (last + 1).double() - tps
    thresholds = s[last]
    if drop_intermediate and len(fps) > 2:
        corner = (torch.diff(fps, n=2) != 0) | (torch.diff(tps, n=2) != 0)
        keep = torch.cat([torch.tensor([True]), corner, torch.tensor([True])])
        tps, fps, thresholds = tps[keep], fps[keep], thresholds[keep]
    zero = torch.zeros(1, dtype=torch.float64)
    tps, fps = torch.cat([zero, tps]), torch.cat([zero, fps])
    thresholds = torch.cat([torch.tensor([float("inf")], dtype=torch.float64), thresholds])
    return ROC(fps / fps[-1], tps / tps[-1], thresholds)


def roc_auc(scores, same) -> float:
    """Area under the ROC curve (trapezoids; tied scores count one half), as sklearn's roc_auc_score."""
    scores, same = _check_values_and_labels("roc_auc", scores, same, "scores")
    fpr, tpr, _ = _roc("roc_auc", scores, same, drop_intermediate=True)  # fewer terms to sum: 1 stays 1
    return float(torch.trapezoid(tpr, fpr))
