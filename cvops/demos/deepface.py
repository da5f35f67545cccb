"""DeepFace face verification demo on real faces: train the DeepFace embedding with the batch triplet
loss for a few steps, then evaluate verification with the LFW protocol on held-out identities, for
the trained and the untrained network; saves the numbers (measures.json) and the ROC (roc.png).

    python -m cvops.demos.deepface OUT_DIR [--steps N] [--quick] [--seed K]

The faces are scikit-image's lfw_subset() (nothing is downloaded): its first 100 images are faces,
grayscale 25×25, without identity labels, so each face is one identity and its "photos" are random
shifts, zooms (crops), brightness and contrast changes and noise of it, resampled to DeepFace's
152×152 with the gray repeated over 3 channels. Faces 0–59 train, faces 60–99 are only evaluated.
A CPU run is a few dozen steps of a 100M-parameter network: what it shows is the direction of the
effect (loss and verification error going down), not DeepFace's accuracy.
"""

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F
from torch import Tensor

from cvops.models.deepface import (
    DeepFace,
    FaceGallery,
    batch_triplet_loss,
    roc_auc,
    roc_curve,
    verification_accuracy,
)

__all__ = ["load_faces", "main", "make_pairs", "make_photos", "run_demo"]

NUM_FACES = 100  # lfw_subset(): the first 100 images are faces, the other 100 are not
NUM_TRAIN = 60  # faces 0–59 train; 60–99 are the held-out identities
MARGIN = 0.2
# Semihard, not batch-hard: from a random initialisation the faces' embeddings all lie close together
# (squared distances ~0.1 against the margin 0.2), and batch-hard lowers its loss by shrinking every
# distance towards 0, so its loss falls while verification gets worse; semihard spreads them.
MINING = "semihard"

# (steps, identities per batch, photos per identity, held-out photos per identity, pairs of each kind)
SETTINGS = {"default": (20, 8, 3, 6, 300), "quick": (4, 8, 2, 4, 100)}


def load_faces() -> Tensor:
    """The 100 faces of skimage.data.lfw_subset() as float [100, 25, 25] in [0, 1]."""
    import skimage.data

    return torch.tensor(skimage.data.lfw_subset()[:NUM_FACES], dtype=torch.float32)


def make_photos(faces: Tensor, identities, per_identity: int, generator: torch.Generator):
    """per_identity random photos of each face faces[i], i in identities → (photos [N, 3, 152, 152],
    labels [N] = the identities), N = len(identities)·per_identity, standardised with the faces'
    mean and std. A photo zooms in by up to 15 % and shifts by up to ±1.5 source pixels (one
    bilinear resampling to 152×152, borders repeated), changes contrast by ×0.7–1.3 and brightness
    by ±0.15, and adds Gaussian noise of std 0.04."""
    labels = torch.as_tensor(identities, dtype=torch.long).repeat_interleave(per_identity)
    n = labels.numel()

    def uniform(low, high):
        return low + (high - low) * torch.rand(n, generator=generator)

    scale, shift_x, shift_y = uniform(0.85, 1.0), uniform(-0.12, 0.12), uniform(-0.12, 0.12)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = scale, scale, shift_x, shift_y
    size = DeepFace.INPUT_SIZE
    grid = F.affine_grid(theta, (n, 1, size, size), align_corners=False)
    photos = F.grid_sample(faces[labels, None], grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = photos.mean(dim=(1, 2, 3), keepdim=True)
    photos = (photos - mean) * uniform(0.7, 1.3).view(n, 1, 1, 1) + mean + uniform(-0.15, 0.15).view(n, 1, 1, 1)
    photos = photos + 0.04 * torch.randn(photos.shape, generator=generator)
    photos = (photos - faces.mean()) / faces.std()
    return photos.expand(-1, 3, -1, -1).contiguous(), labels


def make_pairs(labels: Tensor, matched: int, mismatched: int, folds: int, generator: torch.Generator):
    """LFW-style pairs over photos with identities `labels` → (first [P], second [P], same [P] bool),
    P = matched + mismatched, laid out as LFW's view 2: fold by fold, each fold its share of matched
    pairs (two distinct photos of one face, no pair twice) then of mismatched ones (a photo each of
    two faces), so that verification_accuracy's contiguous folds are balanced."""
    if matched % folds or mismatched % folds:
        raise ValueError(f"cvops.demos.deepface: pairs of each kind must split into {folds} folds")
    n = labels.numel()
    i, j = torch.triu_indices(n, n, offset=1)
    same = labels[i] == labels[j]
    chosen = []
    for kind, count in ((True, matched), (False, mismatched)):
        candidates = torch.nonzero(same == kind).squeeze(1)
        if count > candidates.numel():
            raise ValueError(f"cvops.demos.deepface: only {candidates.numel()} pairs of that kind, asked for {count}")
        chosen.append(candidates[torch.randperm(candidates.numel(), generator=generator)[:count]])
    order = torch.cat([torch.cat([c.tensor_split(folds)[f] for c in chosen]) for f in range(folds)])
    return i[order], j[order], same[order]


@torch.no_grad()
def _embed(model, photos: Tensor, batch: int = 32) -> Tensor:
    return torch.cat([model.embed(chunk) for chunk in photos.split(batch)])


def _evaluate(embeddings: Tensor, labels: Tensor, pairs, gallery_photos: int) -> dict:
    """Verification over the pairs (squared distances, 10 folds), ROC, the held-out triplet loss, and
    closed-set identification: the first gallery_photos photos of each face enrolled, the rest queried."""
    first, second, same = pairs
    distances = (embeddings[first] - embeddings[second]).square().sum(1)
    accuracy = verification_accuracy(distances, same, 10, kind="distance")
    roc = roc_curve(-distances, same)
    per_identity = int((labels == labels[0]).sum())
    rank = torch.arange(labels.numel()) % per_identity
    gallery = FaceGallery(threshold=4.0)  # unit vectors are at most 4 apart (squared): always the nearest
    for identity in labels.unique().tolist():
        gallery.enrol(str(identity), embeddings[(labels == identity) & (rank < gallery_photos)])
    queries = rank >= gallery_photos
    names, _ = gallery.identify(embeddings[queries])
    hits = [name == str(identity) for name, identity in zip(names, labels[queries].tolist())]
    return {
        "accuracy": accuracy.mean,
        "accuracy_std": accuracy.std,
        "auc": roc_auc(-distances, same),
        "triplet_loss": float(batch_triplet_loss(embeddings, labels, MARGIN, MINING).loss),
        "identification": sum(hits) / len(hits),
        "mean_distance_same": float(distances[same].mean()),
        "mean_distance_different": float(distances[~same].mean()),
        "_roc": (roc.fpr.numpy(), roc.tpr.numpy()),
    }


def run_demo(out_dir: str, *, steps=None, quick: bool = False, seed: int = 0, lr: float = 1e-3) -> dict:
    """Evaluate the untrained DeepFace embedding on the held-out faces, train it with semihard
    triplet mining on the training faces (Adam, fresh photos every step), evaluate again, and save
    measures.json and roc.png in out_dir. Returns the measures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    default_steps, identities_per_batch, photos_per_identity, held_out_photos, pairs_per_kind = SETTINGS[
        "quick" if quick else "default"
    ]
    steps = default_steps if steps is None else steps
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()

    faces = load_faces()
    test_photos, test_labels = make_photos(faces, range(NUM_TRAIN, NUM_FACES), held_out_photos, generator)
    pairs = make_pairs(test_labels, pairs_per_kind, pairs_per_kind, 10, generator)
    # A fixed batch of training faces: its loss before and after is comparable, unlike the per-step
    # losses, each over different faces and photos.
    probe_photos, probe_labels = make_photos(faces, range(identities_per_batch), photos_per_identity, generator)

    model = DeepFace(NUM_TRAIN)
    untrained = _evaluate(_embed(model, test_photos), test_labels, pairs, 1)
    probe_before = float(batch_triplet_loss(_embed(model, probe_photos), probe_labels, MARGIN, MINING).loss)

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    train_start = time.perf_counter()
    for step in range(steps):
        identities = torch.randperm(NUM_TRAIN, generator=generator)[:identities_per_batch]
        photos, labels = make_photos(faces, identities, photos_per_identity, generator)
        loss, active = batch_triplet_loss(model.embed(photos), labels, MARGIN, MINING)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(float(loss.detach()))
        if step == 0 or step == steps - 1 or (step + 1) % 5 == 0:
            print(f"step {step + 1}/{steps}: triplet loss {history[-1]:.4f}, {float(active):.0%} of triplets active")
    train_seconds = time.perf_counter() - train_start
    batch = identities_per_batch * photos_per_identity
    print(f"trained {steps} steps of {batch} photos in {train_seconds:.1f} s")

    probe_after = float(batch_triplet_loss(_embed(model, probe_photos), probe_labels, MARGIN, MINING).loss)
    trained = _evaluate(_embed(model, test_photos), test_labels, pairs, 1)

    measures = {
        "steps": steps,
        "batch": batch,
        "mining": MINING,
        "margin": MARGIN,
        "held_out_identities": NUM_FACES - NUM_TRAIN,
        "held_out_photos": int(test_labels.numel()),
        "pairs": {"matched": pairs_per_kind, "mismatched": pairs_per_kind},
        "loss_history": history,
        "probe_loss_before": probe_before,
        "probe_loss_after": probe_after,
        "untrained": {k: v for k, v in untrained.items() if not k.startswith("_")},
        "trained": {k: v for k, v in trained.items() if not k.startswith("_")},
        "train_seconds": train_seconds,
    }
    print(f"triplet loss on a fixed batch of training faces: {probe_before:.4f} → {probe_after:.4f}")
    for name, m in (("untrained", untrained), ("trained", trained)):
        print(
            f"{name:>9}: verification {m['accuracy']:.3f} ± {m['accuracy_std']:.3f} (10 folds), AUC {m['auc']:.3f}, "
            f"held-out triplet loss {m['triplet_loss']:.4f}, identification {m['identification']:.3f}"
        )

    figure, (roc_ax, loss_ax) = plt.subplots(1, 2, figsize=(9, 3.8))
    for name, m in (("untrained", untrained), ("trained", trained)):
        fpr, tpr = m["_roc"]
        roc_ax.plot(fpr, tpr, label=f"{name}: AUC {m['auc']:.3f}, acc {m['accuracy']:.3f}")
    roc_ax.plot([0, 1], [0, 1], color="gray", linestyle=":", linewidth=1)
    roc_ax.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title=f"ROC, {2 * pairs_per_kind} pairs of {NUM_FACES - NUM_TRAIN} held-out faces",
    )
    roc_ax.legend(loc="lower right", fontsize=8)
    loss_ax.plot(range(1, steps + 1), history, marker=".")
    loss_ax.set(xlabel="step", ylabel=f"batch triplet loss ({MINING})", title="training")
    for ax in (roc_ax, loss_ax):
        ax.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(os.path.join(out_dir, "roc.png"), dpi=100)
    plt.close(figure)

    measures["seconds"] = time.perf_counter() - start
    with open(os.path.join(out_dir, "measures.json"), "w") as f:
        json.dump(measures, f, indent=2)
    print(f"saved {os.path.join(out_dir, 'measures.json')} and {os.path.join(out_dir, 'roc.png')}")
    return measures


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description="Train DeepFace's embedding with the triplet loss on augmented LFW faces and evaluate "
        "verification on held-out faces (LFW protocol), trained and untrained."
    )
    parser.add_argument("out", metavar="OUT_DIR", help="where to save measures.json and roc.png")
    parser.add_argument("--steps", type=int, help=f"training steps (default {SETTINGS['default'][0]})")
    parser.add_argument("--quick", action="store_true", help="a short run: smaller batches, fewer photos and pairs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    run_demo(args.out, steps=args.steps, quick=args.quick, seed=args.seed)


if __name__ == "__main__":
    main()
