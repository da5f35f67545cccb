"""Face verification (cvops.models.deepface): the SiameseVerifier heads against their formulas, gradients and
training on two Gaussian identities; triplet_loss against eq. 6 and against torch's triplet_margin_loss
(squared vs plain distances); in-batch mining against brute force over all triplets; the gallery on
synthetic clusters; LFW-style evaluation against brute force (and sklearn where it is installed); bad input."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from cvops.models import deepface
from cvops.models.deepface import (
    FaceGallery,
    SiameseVerifier,
    batch_triplet_loss,
    pairwise_squared_distances,
    roc_auc,
    roc_curve,
    triplet_loss,
    verification_accuracy,
)

# ---------------------------------------------------------------------------- SiameseVerifier heads


def _reference_logits(verifier, f1, f2):
    """Σ_k w_k·d_k + b, one pair and one component at a time."""
    w, b = verifier.linear.weight[0], verifier.linear.bias[0]
    out = torch.empty(f1.shape[0], dtype=f1.dtype)
    for i in range(f1.shape[0]):
        total = b.clone()
        for k in range(f1.shape[1]):
            x, y = f1[i, k], f2[i, k]
            d = abs(x - y) if verifier.head == "weighted_l1" else (x - y) ** 2 / (x + y + verifier.eps)
            total = total + w[k] * d
        out[i] = total
    return out


@pytest.mark.parametrize("head", ["chi2", "weighted_l1"])
def test_logistic_heads_match_their_formulas(head):
    verifier = SiameseVerifier(6, head).double()
    f1, f2 = torch.rand(5, 6, dtype=torch.float64), torch.rand(5, 6, dtype=torch.float64)
    f2[0] = f1[0]  # identical embeddings: every d_k is 0, the logit is the bias
    logits = verifier(f1, f2)
    assert logits.shape == (5,)
    torch.testing.assert_close(logits, _reference_logits(verifier, f1, f2).detach())
    torch.testing.assert_close(logits[0], verifier.linear.bias[0])
    torch.testing.assert_close(verifier.probability(f1, f2), torch.sigmoid(logits))
    decision = verifier.decide(f1, f2)
    assert torch.equal(decision.same, logits > 0) and torch.equal(decision.score, logits)
    # one probe against a gallery of embeddings: broadcast
    torch.testing.assert_close(verifier(f1[0], f2), verifier(f1[:1].expand(5, 6), f2))


def test_chi2_eps_keeps_zero_components_finite():
    verifier = SiameseVerifier(3, "chi2", eps=1e-6)
    zeros = torch.zeros(2, 3)
    assert torch.isfinite(verifier(zeros, zeros)).all()


def test_distance_head_thresholds_the_squared_distance():
    verifier = SiameseVerifier(4, "distance", threshold=2.0)
    assert list(verifier.parameters()) == [] and "threshold" in verifier.state_dict()
    f1 = torch.zeros(3, 4)
    f2 = torch.tensor([[1.0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]])  # squared distances 1, 2, 3
    same, distance = verifier.decide(f1, f2)
    torch.testing.assert_close(distance, torch.tensor([1.0, 2.0, 3.0]))
    assert same.tolist() == [True, False, False]  # strictly below τ


def test_fit_threshold_picks_the_best_midpoint():
    verifier = SiameseVerifier(2, "distance")
    tau = verifier.fit_threshold(torch.tensor([0.1, 0.2, 0.9, 1.5, 0.3]), torch.tensor([1, 1, 0, 0, 1]))
    assert tau == pytest.approx(0.6) and float(verifier.threshold) == pytest.approx(0.6)
    # one pair on the wrong side: the most accurate cut still separates the rest
    tau = verifier.fit_threshold([0.1, 0.2, 0.25, 0.9, 1.5], [True, True, False, False, False])
    assert tau == pytest.approx(0.225)


def test_verify_embeds_both_inputs_with_the_one_tower():
    tower = nn.Sequential(nn.Linear(5, 4), nn.ReLU())
    verifier = SiameseVerifier(4, "chi2")
    x1, x2 = torch.randn(3, 5), torch.randn(3, 5)
    same, score = verifier.verify(tower, x1, x2)
    torch.testing.assert_close(score, verifier(tower(x1), tower(x2)))
    assert torch.equal(same, score > 0)


@pytest.mark.parametrize("head", ["chi2", "weighted_l1", "distance"])
def test_gradients_flow_to_embeddings_and_weights(head):
    verifier = SiameseVerifier(3, head).double()
    f1 = (torch.rand(4, 3, dtype=torch.float64) + 0.1).requires_grad_()
    f2 = (torch.rand(4, 3, dtype=torch.float64) + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: verifier(a, b), (f1, f2))
    verifier(f1, f2).sum().backward()
    for p in verifier.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


def _two_identities(n, generator):
    """Samples of two Gaussian identities in 16-d (centres ±1 apart per coordinate), with their labels."""
    centres = torch.stack([torch.zeros(16), torch.ones(16)])
    labels = torch.randint(0, 2, (n,), generator=generator)
    return centres[labels] + 0.5 * torch.randn(n, 16, generator=generator), labels


def _pairs(n, generator):
    x1, l1 = _two_identities(n, generator)
    x2, l2 = _two_identities(n, generator)
    return x1, x2, (l1 == l2).float()


@pytest.mark.parametrize("head", ["chi2", "weighted_l1"])
def test_verifier_trains_on_two_gaussian_identities(head):
    g = torch.Generator().manual_seed(1)
    tower = nn.Sequential(nn.Linear(16, 8), nn.Softplus())  # non-negative embeddings for chi2
    verifier = SiameseVerifier(8, head)
    optimiser = torch.optim.Adam([*tower.parameters(), *verifier.parameters()], lr=0.05)
    for _ in range(60):
        x1, x2, same = _pairs(128, g)
        loss = F.binary_cross_entropy_with_logits(verifier(tower(x1), tower(x2)), same)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    x1, x2, same = _pairs(1000, g)
    with torch.no_grad():
        accuracy = (verifier.verify(tower, x1, x2).same == same.bool()).float().mean()
    assert accuracy > 0.95


def test_distance_head_fits_a_threshold_on_two_gaussian_identities():
    g = torch.Generator().manual_seed(2)
    verifier = SiameseVerifier(16, "distance")
    x1, x2, same = _pairs(400, g)
    verifier.fit_threshold(verifier(x1, x2), same)
    x1, x2, same = _pairs(1000, g)
    assert (verifier.decide(x1, x2).same == same.bool()).float().mean() > 0.95


def test_verifier_bad_arguments():
    with pytest.raises(ValueError, match=r"cvops.SiameseVerifier: embedding_dim must be an int >= 1, got 0"):
        SiameseVerifier(0)
    with pytest.raises(ValueError, match=r"cvops.SiameseVerifier: head must be one of 'chi2', .*got 'cosine'"):
        SiameseVerifier(4, "cosine")
    with pytest.raises(ValueError, match=r"cvops.SiameseVerifier: eps must be a finite number >= 0, got -1"):
        SiameseVerifier(4, eps=-1)
    with pytest.raises(ValueError, match=r"cvops.SiameseVerifier: threshold must be a positive finite number"):
        SiameseVerifier(4, "distance", threshold=0.0)
    verifier = SiameseVerifier(4)
    with pytest.raises(ValueError, match=r"f2's last dim must be the embedding size 4, got 3"):
        verifier(torch.rand(2, 4), torch.rand(2, 3))
    with pytest.raises(ValueError, match=r"f1 must be floating-point"):
        verifier(torch.ones(2, 4, dtype=torch.long), torch.rand(2, 4))
    with pytest.raises(ValueError, match=r"f1 and f2 must have broadcastable shapes"):
        verifier(torch.rand(2, 4), torch.rand(3, 4))
    with pytest.raises(ValueError, match=r"fit_threshold is for head='distance'"):
        verifier.fit_threshold(torch.rand(3), torch.tensor([1, 0, 1]))
    with pytest.raises(ValueError, match=r"probability needs a logistic head"):
        SiameseVerifier(4, "distance").probability(torch.rand(4), torch.rand(4))
    with pytest.raises(ValueError, match=r"same must be bool or 0/1"):
        SiameseVerifier(4, "distance").fit_threshold(torch.rand(3), torch.tensor([2, 0, 1]))


# ---------------------------------------------------------------------------- triplet_loss


def test_triplet_loss_is_eq6_with_squared_distances():
    a, p, n = (torch.randn(7, 5, dtype=torch.float64) for _ in range(3))
    want = torch.stack(
        [torch.clamp(((a[i] - p[i]) ** 2).sum() - ((a[i] - n[i]) ** 2).sum() + 0.3, min=0) for i in range(7)]
    )
    torch.testing.assert_close(triplet_loss(a, p, n, margin=0.3, reduction="none"), want)
    torch.testing.assert_close(triplet_loss(a, p, n, margin=0.3), want.mean())
    torch.testing.assert_close(triplet_loss(a, p, n, margin=0.3, reduction="sum"), want.sum())
    # leading dims are kept by "none"
    assert triplet_loss(a.view(7, 1, 5), p.view(7, 1, 5), n.view(7, 1, 5), reduction="none").shape == (7, 1)


def test_triplet_loss_differs_from_torchs_plain_distance_loss():
    a, p, n = torch.zeros(1, 1), torch.tensor([[1.0]]), torch.tensor([[1.5]])
    # squared: 1 − 2.25 + 0.2 < 0; torch's default (plain distances, margin 1): 1 − 1.5 + 1 = 0.5
    assert triplet_loss(a, p, n) == 0
    torch.testing.assert_close(F.triplet_margin_loss(a, p, n, eps=0), torch.tensor(0.5))
    # the same margin does not make them agree: plain 2 − 2.1 + 0.2 = 0.1, squared 4 − 4.41 + 0.2 < 0
    p, n = torch.tensor([[2.0]]), torch.tensor([[2.1]])
    assert triplet_loss(a, p, n, margin=0.2) == 0
    torch.testing.assert_close(F.triplet_margin_loss(a, p, n, margin=0.2, eps=0), torch.tensor(0.1))
    # torch's is eq. 6 with distances in place of squared distances
    a, p, n = (torch.randn(50, 4, dtype=torch.float64) for _ in range(3))
    plain = (torch.linalg.vector_norm(a - p, dim=1) - torch.linalg.vector_norm(a - n, dim=1) + 0.2).clamp_min(0)
    torch.testing.assert_close(F.triplet_margin_loss(a, p, n, margin=0.2, eps=0, reduction="none"), plain)
    assert not torch.allclose(triplet_loss(a, p, n, reduction="none"), plain)


def test_triplet_loss_gradient():
    a, p, n = (torch.randn(4, 3, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(lambda *t: triplet_loss(*t, margin=5.0), (a, p, n))


def test_triplet_loss_bad_arguments():
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"cvops.triplet_loss: anchor, positive, negative must have the same shape"):
        triplet_loss(x, x, torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"cvops.triplet_loss: margin must be a finite number >= 0, got -0.1"):
        triplet_loss(x, x, x, margin=-0.1)
    with pytest.raises(ValueError, match=r"cvops.triplet_loss: reduction must be one of"):
        triplet_loss(x, x, x, reduction="max")
    with pytest.raises(ValueError, match=r"cvops.triplet_loss: negative must be embeddings"):
        triplet_loss(x, x, None)


# ---------------------------------------------------------------------------- batch mining


def _reference_batch(embeddings, labels, margin, mining):
    """Brute force over every triplet, with Python loops: (loss tensor, fraction active)."""
    labels = labels.tolist()
    b = len(labels)
    d = [[((embeddings[i] - embeddings[j]) ** 2).sum() for j in range(b)] for i in range(b)]
    dv = [[float(v.detach()) for v in row] for row in d]  # the values to compare
    terms = []
    for a in range(b):
        positives = [p for p in range(b) if p != a and labels[p] == labels[a]]
        negatives = [n for n in range(b) if labels[n] != labels[a]]
        if not positives or not negatives:
            continue
        if mining == "all":
            terms += [d[a][p] - d[a][n] + margin for p in positives for n in negatives]
        elif mining == "hard":
            p = max(positives, key=lambda j: dv[a][j])
            n = min(negatives, key=lambda j: dv[a][j])
            terms.append(d[a][p] - d[a][n] + margin)
        else:
            for p in positives:
                farther = [n for n in negatives if dv[a][n] > dv[a][p]]
                if farther:
                    n = min(farther, key=lambda j: dv[a][j])
                else:
                    n = max(negatives, key=lambda j: dv[a][j])
                terms.append(d[a][p] - d[a][n] + margin)
    if not terms:
        return embeddings.sum() * 0, 0.0
    losses = torch.stack(terms).clamp_min(0)
    return losses.mean(), float((losses > 0).double().mean())


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.integers(0, 3), min_size=1, max_size=8),
    dim=st.integers(1, 4),
    seed=st.integers(0, 2**16),
    margin=st.sampled_from([0.0, 0.2, 1.0]),
    mining=st.sampled_from(["all", "hard", "semihard"]),
)
def test_batch_mining_matches_brute_force(labels, dim, seed, margin, mining):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(labels), dim, dtype=torch.float64, generator=g).requires_grad_()
    y = torch.tensor(labels)
    got = batch_triplet_loss(x, y, margin=margin, mining=mining)
    (grad,) = torch.autograd.grad(got.loss, x)
    want, fraction = _reference_batch(x, y, margin, mining)
    (want_grad,) = torch.autograd.grad(want, x)
    torch.testing.assert_close(got.loss.detach(), want.detach())
    torch.testing.assert_close(grad, want_grad)
    assert float(got.fraction_active) == pytest.approx(fraction)
    assert not got.fraction_active.requires_grad


def test_batch_mining_hand_made_case():
    # 1-D: anchors 0, 3 (identity 0) and 1, 2 (identity 1); squared distances 9, 1, 4, 4, 1, 1
    x = torch.tensor([[0.0], [3.0], [1.0], [2.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    loss, fraction = batch_triplet_loss(x, y, margin=0.2, mining="all")
    assert float(loss) == pytest.approx(27.2 / 8) and float(fraction) == 0.75
    loss, fraction = batch_triplet_loss(x, y, margin=0.2, mining="hard")
    assert float(loss) == pytest.approx(16.8 / 4) and float(fraction) == 1.0
    # semihard: (0, 1) and (1, 0) find no negative farther than 9, so take the farthest (4): 5.2 each;
    # (2, 3) has d = 1 to its positive and to negative 0, and 1 is not *farther*: negative 1 (4) → 0
    loss, fraction = batch_triplet_loss(x, y, margin=0.2, mining="semihard")
    assert float(loss) == pytest.approx(10.4 / 4) and float(fraction) == 0.5


@pytest.mark.parametrize("mining", ["all", "hard", "semihard"])
@pytest.mark.parametrize(
    "labels", [[5, 5, 5, 5], [0, 1, 2, 3], [7], []], ids=["one-identity", "singletons", "one", "empty"]
)
def test_batch_mining_without_valid_triplets_is_zero_with_a_gradient(mining, labels):
    x = torch.randn(len(labels), 3, requires_grad=True)
    loss, fraction = batch_triplet_loss(x, torch.tensor(labels, dtype=torch.long), mining=mining)
    assert float(loss.detach()) == 0 and float(fraction) == 0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("mining", ["all", "hard", "semihard"])
def test_batch_mining_leaves_out_singleton_anchors(mining):
    # identity 9 has one sample: a negative for the others, never an anchor
    x = torch.randn(5, 3, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 9])
    got = batch_triplet_loss(x, y, mining=mining)
    want, fraction = _reference_batch(x, y, 0.2, mining)
    torch.testing.assert_close(got.loss, want)
    assert float(got.fraction_active) == pytest.approx(fraction)


def test_batch_mining_gradcheck():
    x = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3])
    for mining in ("all", "hard", "semihard"):
        assert torch.autograd.gradcheck(lambda e, m=mining: batch_triplet_loss(e, y, margin=1.0, mining=m).loss, (x,))


def test_pairwise_squared_distances():
    x = torch.randn(6, 4, dtype=torch.float64)
    torch.testing.assert_close(pairwise_squared_distances(x), torch.cdist(x, x) ** 2)
    assert torch.equal(pairwise_squared_distances(x).diagonal(), torch.zeros(6, dtype=torch.float64))


def test_batch_triplet_loss_bad_arguments():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"cvops.batch_triplet_loss: embeddings must be embeddings \[N, D\]"):
        batch_triplet_loss(torch.randn(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(
        ValueError, match=r"cvops.batch_triplet_loss: labels must be integer identities \[B\] with B = 4"
    ):
        batch_triplet_loss(x, torch.zeros(4))
    with pytest.raises(ValueError, match=r"labels must be integer identities"):
        batch_triplet_loss(x, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"cvops.batch_triplet_loss: mining must be one of 'all', 'hard', 'semihard'"):
        batch_triplet_loss(x, torch.zeros(4, dtype=torch.long), mining="easy")
    with pytest.raises(ValueError, match=r"margin must be a finite number >= 0"):
        batch_triplet_loss(x, torch.zeros(4, dtype=torch.long), margin=math.inf)


# ---------------------------------------------------------------------------- gallery


def _clusters(seed=0):
    """Six orthonormal centres in 16-d: five enrolled identities and one stranger; samples are a centre
    plus noise 0.05 per coordinate."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.linalg.qr(torch.randn(16, 6, dtype=torch.float64, generator=g))[0].T  # [6, 16]

    def sample(i, n):
        return centres[i] + 0.05 * torch.randn(n, 16, dtype=torch.float64, generator=g)

    return sample


def test_gallery_verifies_and_identifies_clusters():
    sample = _clusters()
    gallery = FaceGallery(threshold=1.0)
    names = ["ada", "bo", "cy", "di", "ed"]
    for i, name in enumerate(names):
        gallery.enrol(name, sample(i, 3))
    assert gallery.names == names and len(gallery) == 5 and "cy" in gallery and "zz" not in gallery
    for i, name in enumerate(names):
        query = sample(i, 1)[0]
        same, distance = gallery.verify(query, name)
        assert same is True and isinstance(distance, float) and distance < 0.1
        other = names[(i + 1) % 5]
        assert gallery.verify(query, other).same is False
        assert gallery.identify(query) == (name, pytest.approx(distance))
    stranger = sample(5, 1)[0]
    name, distance = gallery.identify(stranger)
    assert name is None and distance > 1.5  # orthogonal to every template: squared distance ≈ 2

    # batched: several queries at once agree with one at a time
    queries = torch.cat([sample(i, 2) for i in range(6)])  # two per identity, the stranger last
    names_out, distances = gallery.identify(queries)
    assert names_out == [n for n in names for _ in range(2)] + [None, None] and distances.shape == (12,)
    for q in range(12):
        assert gallery.identify(queries[q]) == (names_out[q], pytest.approx(float(distances[q])))
    same, distances = gallery.verify(queries[:10], "ada")
    assert same.tolist() == [True, True] + [False] * 8
    per_query = [n for n in names for _ in range(2)]
    assert gallery.verify(queries[:10], per_query).same.all()


def test_gallery_templates_are_normalised_means():
    gallery = FaceGallery()
    first, more = torch.randn(2, 8), 3 * torch.randn(3, 8)
    gallery.enrol("x", first)
    gallery.enrol("y", torch.randn(8))  # a single embedding
    gallery.enrol("x", more)  # enrolling again adds to the identity
    stored = F.normalize(torch.cat([first, more]), dim=1)
    torch.testing.assert_close(gallery.embeddings("x"), stored)
    torch.testing.assert_close(gallery.templates[0], F.normalize(stored.mean(0), dim=0))
    query = torch.randn(8)
    want = ((F.normalize(query, dim=0) - gallery.templates) ** 2).sum(1)
    torch.testing.assert_close(gallery.distances(query), want)
    # without normalisation the template is the plain mean
    raw = FaceGallery(normalize=False)
    raw.enrol("x", first)
    torch.testing.assert_close(raw.templates[0], first.mean(0))


def test_empty_gallery_identifies_nobody():
    gallery = FaceGallery()
    assert gallery.identify(torch.randn(4)) == (None, math.inf)
    names, distances = gallery.identify(torch.randn(3, 4))
    assert names == [None] * 3 and torch.equal(distances, torch.full((3,), math.inf))


def test_gallery_bad_arguments():
    with pytest.raises(ValueError, match=r"cvops.FaceGallery: threshold must be a positive finite number"):
        FaceGallery(threshold=-1.0)
    with pytest.raises(ValueError, match=r"cvops.FaceGallery: normalize must be True or False"):
        FaceGallery(normalize=1)
    gallery = FaceGallery()
    gallery.enrol("x", torch.randn(2, 8))
    with pytest.raises(ValueError, match=r"cvops.FaceGallery: name must be an enrolled identity, got 'nobody'"):
        gallery.verify(torch.randn(8), "nobody")
    with pytest.raises(ValueError, match=r"embedding must be \[D\] or \[Q, D\] with D = 8"):
        gallery.identify(torch.randn(5))
    with pytest.raises(ValueError, match=r"embedding must be \[D\] or \[Q, D\] with D = 8"):
        gallery.enrol("y", torch.randn(2, 7))
    with pytest.raises(ValueError, match=r"name must be a non-empty string"):
        gallery.enrol("", torch.randn(8))
    with pytest.raises(ValueError, match=r"name must be one name or 3 names"):
        gallery.verify(torch.randn(3, 8), ["x", "x"])


# ---------------------------------------------------------------------------- evaluation


def _reference_roc(scores, same):
    """Every distinct score as a threshold (same ⇔ score ≥ t), highest first, after (0, 0) at inf."""
    fpr, tpr, thresholds = [0.0], [0.0], [math.inf]
    positives, negatives = sum(same), len(same) - sum(same)
    for t in sorted(set(scores), reverse=True):
        tpr.append(sum(s >= t and y for s, y in zip(scores, same)) / positives)
        fpr.append(sum(s >= t and not y for s, y in zip(scores, same)) / negatives)
        thresholds.append(t)
    return fpr, tpr, thresholds


def _reference_auc(scores, same):
    """P(score of a same pair > score of a different pair), ties counting one half."""
    pos = [s for s, y in zip(scores, same) if y]
    neg = [s for s, y in zip(scores, same) if not y]
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def _scores_with_ties(seed, n=60):
    g = torch.Generator().manual_seed(seed)
    same = torch.rand(n, generator=g) < 0.5
    same[:2] = torch.tensor([True, False])
    scores = torch.round(torch.randn(n, dtype=torch.float64, generator=g) + same.double(), decimals=1)
    return scores, same


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_curve_and_auc_match_brute_force(seed):
    scores, same = _scores_with_ties(seed)
    fpr, tpr, thresholds = roc_curve(scores, same, drop_intermediate=False)
    want = _reference_roc(scores.tolist(), same.tolist())
    for got, w in zip((fpr, tpr, thresholds), want):
        torch.testing.assert_close(got, torch.tensor(w, dtype=torch.float64))
    # drop_intermediate keeps the corners: the same curve, the same area
    dropped = roc_curve(scores, same)
    assert len(dropped.fpr) <= len(fpr)
    torch.testing.assert_close(torch.trapezoid(dropped.tpr, dropped.fpr), torch.trapezoid(tpr, fpr))
    assert roc_auc(scores, same) == pytest.approx(_reference_auc(scores.tolist(), same.tolist()), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_roc_against_sklearn(seed):
    metrics = pytest.importorskip("sklearn.metrics")
    scores, same = _scores_with_ties(seed)
    for drop in (False, True):
        want = metrics.roc_curve(same.numpy(), scores.numpy(), drop_intermediate=drop)
        for got, w in zip(roc_curve(scores, same, drop_intermediate=drop), want):
            torch.testing.assert_close(got, torch.from_numpy(w).double())
    assert roc_auc(scores, same) == pytest.approx(metrics.roc_auc_score(same.numpy(), scores.numpy()), abs=1e-12)


def test_roc_hand_made_cases():
    same = [1, 1, 0, 0]
    assert roc_auc([0.9, 0.8, 0.3, 0.1], same) == 1.0  # perfect separation
    assert roc_auc([0.1, 0.3, 0.8, 0.9], same) == 0.0  # perfectly wrong
    assert roc_auc([0.5, 0.5, 0.5, 0.5], same) == 0.5  # all tied
    fpr, tpr, thresholds = roc_curve(torch.tensor([0.9, 0.8, 0.3, 0.1], dtype=torch.float64), torch.tensor(same))
    # as sklearn: points are dropped before (0, 0) is put in front, so (0, 0.5) stays
    assert (
        fpr.tolist() == [0, 0, 0, 1] and tpr.tolist() == [0, 0.5, 1, 1] and thresholds[1:].tolist() == [0.9, 0.8, 0.1]
    )
    assert roc_curve([0.9, 0.8, 0.3, 0.1], same, drop_intermediate=False).tpr.tolist() == [0, 0.5, 1, 1, 1]


def _reference_accuracy(scores, same, folds):
    """LFW by brute force: contiguous folds; per fold every candidate threshold (±inf and midpoints of
    distinct training scores, ascending), the first most accurate on the other folds."""
    n = len(scores)
    sizes = [n // folds + (f < n % folds) for f in range(folds)]
    starts = [sum(sizes[:f]) for f in range(folds)]
    accuracies, thresholds = [], []
    for f in range(folds):
        test = set(range(starts[f], starts[f] + sizes[f]))
        train = [i for i in range(n) if i not in test]
        distinct = sorted({scores[i] for i in train})
        candidates = [-math.inf] + [(a + b) / 2 for a, b in zip(distinct, distinct[1:])] + [math.inf]
        best, best_t = -1, None
        for t in candidates:
            correct = sum((scores[i] > t) == same[i] for i in train)
            if correct > best:
                best, best_t = correct, t
        accuracies.append(sum((scores[i] > best_t) == same[i] for i in test) / len(test))
        thresholds.append(best_t)
    return accuracies, thresholds


@pytest.mark.parametrize("seed, folds", [(0, 10), (1, 7), (2, 2)])
def test_verification_accuracy_matches_brute_force(seed, folds):
    scores, same = _scores_with_ties(seed, n=63)
    got = verification_accuracy(scores, same, folds=folds)
    accuracies, thresholds = _reference_accuracy(scores.tolist(), same.tolist(), folds)
    torch.testing.assert_close(got.accuracies, torch.tensor(accuracies, dtype=torch.float64))
    torch.testing.assert_close(got.thresholds, torch.tensor(thresholds, dtype=torch.float64))
    assert got.mean == pytest.approx(sum(accuracies) / folds)
    assert got.std == pytest.approx(torch.tensor(accuracies).std(correction=0).item())
    # distances: the same folds on −scores, thresholds in distance units
    flipped = verification_accuracy(-scores, same, folds=folds, kind="distance")
    torch.testing.assert_close(flipped.accuracies, got.accuracies)
    torch.testing.assert_close(flipped.thresholds, -got.thresholds)


def test_verification_accuracy_against_sklearn_folds():
    model_selection = pytest.importorskip("sklearn.model_selection")
    scores, same = _scores_with_ties(3, n=57)
    splits = model_selection.KFold(n_splits=10, shuffle=False).split(scores.numpy())
    got = verification_accuracy(scores, same, folds=10)
    _, thresholds = _reference_accuracy(scores.tolist(), same.tolist(), 10)
    for f, (_, test) in enumerate(splits):
        accuracy = ((scores[test] > thresholds[f]) == same[test]).double().mean()
        assert float(got.accuracies[f]) == pytest.approx(float(accuracy))


def test_verification_accuracy_perfect_separation():
    g = torch.Generator().manual_seed(0)
    same = torch.rand(600, generator=g) < 0.5
    distances = torch.where(same, torch.rand(600, generator=g), 2 + torch.rand(600, generator=g))
    result = verification_accuracy(distances, same, kind="distance")
    assert result.mean == 1.0 and result.std == 0.0 and result.accuracies.shape == (10,)
    assert ((result.thresholds > 0.9) & (result.thresholds < 2.1)).all()
    assert roc_auc(-distances, same) == 1.0


def test_evaluation_bad_arguments():
    with pytest.raises(ValueError, match=r"cvops.roc_auc: same must hold both same \(True\) and different"):
        roc_auc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match=r"cvops.roc_curve: scores must not hold NaN"):
        roc_curve([0.1, math.nan], [1, 0])
    with pytest.raises(ValueError, match=r"cvops.roc_curve: same must be \[N\] like scores \(2\)"):
        roc_curve([0.1, 0.2], [1, 0, 1])
    with pytest.raises(ValueError, match=r"cvops.verification_accuracy: folds must be <= the number of pairs \(3\)"):
        verification_accuracy([0.1, 0.2, 0.3], [1, 0, 1])
    with pytest.raises(ValueError, match=r"cvops.verification_accuracy: folds must be an int >= 2, got 1"):
        verification_accuracy([0.1, 0.2, 0.3], [1, 0, 1], folds=1)
    with pytest.raises(ValueError, match=r"cvops.verification_accuracy: kind must be one of 'score', 'distance'"):
        verification_accuracy([0.1, 0.2], [1, 0], folds=2, kind="similarity")
    with pytest.raises(ValueError, match=r"cvops.verification_accuracy: values must be 1-D real values"):
        verification_accuracy(torch.rand(4, 2), [1, 0, 1, 0], folds=2)


# ---- the DeepFace network ---------------------------------------------------------------------------------------


def test_deepface_sizes_parameters_and_embedding():
    torch.manual_seed(0)
    model = deepface.DeepFace(4030)
    counts = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    assert sum(counts.values()) == 118_923_774  # ≈ 119M, as the paper
    assert counts["l4"] + counts["l5"] + counts["l6"] == 73_454_256
    model.eval()
    x = torch.rand(2, 3, 152, 152) * 255
    sizes = []
    h = model.m2(torch.relu(model.c1(x)))
    sizes.append(tuple(h.shape[1:]))
    for layer in (model.c3, model.l4, model.l5, model.l6):
        h = torch.relu(layer(h))
        sizes.append(tuple(h.shape[1:]))
    assert sizes == [(32, 71, 71), (16, 63, 63), (16, 55, 55), (16, 25, 25), (16, 21, 21)]
    with torch.no_grad():
        assert model(x).shape == (2, 4030)
        emb = model.embed(x)
    assert emb.shape == (2, 4096) and (emb >= 0).all()
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
    with torch.no_grad():
        logits, both_emb = model(x, return_embedding=True)
    torch.testing.assert_close(logits, model(x))
    torch.testing.assert_close(both_emb, emb)
    with pytest.raises(ValueError, match="DeepFace: return_embedding must be True or False"):
        model(x, return_embedding=1)


def test_deepface_trains_through_the_locally_connected_layers():
    torch.manual_seed(1)
    model = deepface.DeepFace(3, dropout=0.0)
    x = torch.rand(2, 3, 152, 152)
    loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 2]))
    loss.backward()
    for layer in (model.l4, model.l5, model.l6):
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"cvops.DeepFace: x must be faces \[B, 3, 152, 152\]"):
        model(torch.rand(2, 3, 150, 150))
    with pytest.raises(ValueError, match="cvops.DeepFace: num_classes must be an int >= 1"):
        deepface.DeepFace(0)


@pytest.mark.cuda
@pytest.mark.parametrize("batch", [2, 12])
def test_deepface_cuda_matches_cpu(batch):
    """The whole network on the GPU (its L4–L6 through the weight-streaming kernel at batch 2, the tiles at 12):
    embeddings, logits and the locally connected layers' gradients against the same weights on the CPU."""
    torch.manual_seed(2)
    cpu = deepface.DeepFace(5, dropout=0.0)
    gpu = deepface.DeepFace(5, dropout=0.0)
    gpu.load_state_dict(cpu.state_dict())
    gpu.cuda()
    x = torch.rand(batch, 3, 152, 152)
    labels = torch.arange(batch) % 5
    grads = []
    allow_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # C1 and C3 in float32, as on the CPU
    try:
        for model, inp in ((cpu, x), (gpu, x.cuda())):
            logits, emb = model(inp, return_embedding=True)
            torch.nn.functional.cross_entropy(logits, labels.to(inp.device)).backward()
            layers = (model.l4, model.l5, model.l6)
            grads.append([logits.detach().cpu(), emb.detach().cpu()] + [layer.weight.grad.cpu() for layer in layers])
    finally:
        torch.backends.cudnn.allow_tf32 = allow_tf32
    for want, got in zip(*grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
