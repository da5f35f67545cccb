"""SiamFC tracking demo on a generated sequence of real pictures: the tracker (with the fixed
LocalNormEmbedding, no weights needed) follows a moving, slowly scaling target past look-alike
distractors; saves the OTB success plot and a strip of frames with the true and predicted boxes.

    python -m cvops.demos.siamfc OUT_DIR [--frames N] [--scale S] [--seed K]

The sequence (make_sequence) uses scikit-image's bundled pictures, nothing is downloaded: coffee()
as the background, the cat's left eye from chelsea() as the target, and as distractors the cat's
other eye and the target mirrored with its colours shifted — alike, yet distinguishable.
"""

import argparse
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cvops.models.siamfc import (
    LocalNormEmbedding,
    SiamFCTracker,
    center_error,
    iou,
    precision_at,
    success_auc,
    success_curve,
    track,
)

__all__ = ["main", "make_sequence", "run_demo"]

# Crops of chelsea() (rows, columns): the left eye (the target) and the right eye (a distractor).
_TARGET_CROP = (slice(62, 158), slice(118, 228))
_OTHER_EYE_CROP = (slice(82, 178), slice(262, 372))


def _image(name: str) -> Tensor:
    """A scikit-image bundled picture as float [3, H, W] in 0..255."""
    import skimage.data

    return torch.tensor(np.asarray(getattr(skimage.data, name)())).permute(2, 0, 1).float()


def _paste(canvas: Tensor, patch: Tensor, box) -> Tensor:
    """canvas [3, H, W] with patch [3, h, w] drawn into box (x, y, w, h) at sub-pixel precision
    (bilinear, edges blended by the resampled coverage)."""
    _, height, width = canvas.shape
    x, y, w, h = box
    # A frame pixel centre u maps to patch coordinate (u − x)/w in [0, 1]; grid_sample wants [−1, 1].
    gx = (torch.arange(width, dtype=torch.float64) + 0.5 - x) / w * 2 - 1
    gy = (torch.arange(height, dtype=torch.float64) + 0.5 - y) / h * 2 - 1
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)[None].float()
    source = torch.cat([patch, torch.ones_like(patch[:1])])[None]
    sampled = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    alpha = sampled[3:]
    return canvas * (1 - alpha) + sampled[:3] * alpha


def make_sequence(num_frames: int = 60, *, scale: float = 1.0, seed: int = 0):
    """A generated tracking sequence: (frames [T, H, W, 3] uint8 numpy, true boxes [T, 4] float64
    (x, y, w, h)). scale resizes everything (background, target, path) for quicker runs.

    The target moves along a smooth curve (at most ~10.5·scale pixels a frame) and changes its
    size smoothly by up to ±15 % (under 1.6 % a frame); two look-alike distractors stand beside its
    path, about 1.3 target widths from it where it passes. seed shifts the path's phase."""
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 2:
        raise ValueError(f"cvops.make_sequence: num_frames must be an int >= 2, got {num_frames!r}")
    if not isinstance(scale, (int, float)) or not 0.2 <= scale <= 2:
        raise ValueError(f"cvops.make_sequence: scale must be a number in [0.2, 2], got {scale!r}")
    background = _image("coffee")
    cat = _image("chelsea")
    target = cat[:, _TARGET_CROP[0], _TARGET_CROP[1]]
    other_eye = cat[:, _OTHER_EYE_CROP[0], _OTHER_EYE_CROP[1]]
    mirrored = target.flip(-1)[[1, 2, 0]] * 0.4 + target.flip(-1) * 0.6  # mirrored, colours rotated part-way

    height, width = round(background.shape[1] * scale), round(background.shape[2] * scale)
    background = F.interpolate(background[None], size=(height, width), mode="bilinear", antialias=True)[0]
    base_w, base_h = 66 * scale, 58 * scale
    # Patches are drawn at most 1.15× the base size: resize them once (antialiased) to that size.
    patch_size = (math.ceil(base_h * 1.15), math.ceil(base_w * 1.15))

    def resized(patch):
        return F.interpolate(patch[None], size=patch_size, mode="bilinear", antialias=True)[0]

    target, other_eye, mirrored = resized(target), resized(other_eye), resized(mirrored)

    phase = 0.7 * seed
    t = torch.arange(num_frames, dtype=torch.float64)
    angle = 2 * math.pi * t / 160 + phase
    cx = width / 2 + 0.30 * width * torch.sin(angle)
    cy = height / 2 + 0.25 * height * torch.sin(2 * angle + 0.5)
    size = 1 + 0.15 * torch.sin(2 * math.pi * t / 60 + phase)
    w, h = base_w * size, base_h * size
    boxes = torch.stack([cx - w / 2, cy - h / 2, w, h], dim=1)

    # Distractors beside the path, where it passes at a third and at two thirds of the sequence: 1.3
    # target widths across the direction of motion, on the side that stays in the frame and
    # farther from the rest of the path.
    scene = background
    for index, patch in zip((num_frames // 3, 2 * num_frames // 3), (other_eye, mirrored)):
        k = min(index, num_frames - 2)
        dx, dy = float(cx[k + 1] - cx[k]), float(cy[k + 1] - cy[k])
        norm = math.hypot(dx, dy) or 1.0
        best = None
        for side in (1.0, -1.0):
            px = float(cx[index]) - side * dy / norm * 1.3 * base_w
            py = float(cy[index]) + side * dx / norm * 1.3 * base_w
            inside = base_w / 2 <= px <= width - base_w / 2 and base_h / 2 <= py <= height - base_h / 2
            clearance = float(torch.hypot(cx - px, cy - py).min())
            if best is None or (inside, clearance) > best[0]:
                best = ((inside, clearance), px, py)
        _, px, py = best
        scene = _paste(scene, patch, (px - base_w / 2, py - base_h / 2, base_w, base_h))

    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for k in range(num_frames):
        frame = _paste(scene, target, boxes[k].tolist())
        frames[k] = frame.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return frames, boxes


def run_demo(
    out_dir: str, *, num_frames: int = 80, scale: float = 1.0, seed: int = 0, context: float = 0.0, strip: int = 6
) -> dict:
    """Track the generated sequence and save success.png (the success plot) and frames.png (a strip
    of frames with the true box green and the prediction red) in out_dir. Returns the measures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    os.makedirs(out_dir, exist_ok=True)
    frames, truth = make_sequence(num_frames, scale=scale, seed=seed)
    embed = LocalNormEmbedding()
    tracker = SiamFCTracker(embed, total_stride=embed.total_stride, context=context)
    start = time.perf_counter()
    predicted = track(tracker, frames, truth[0].tolist())
    elapsed = time.perf_counter() - start
    ious = iou(predicted, truth)
    errors = center_error(predicted, truth)
    measures = {
        "auc": success_auc(ious),
        "precision@20": precision_at(errors, 20),
        "min_iou": float(ious.min()),
        "fps": (num_frames - 1) / elapsed,
    }
    print(
        f"{num_frames} frames in {elapsed:.1f} s ({measures['fps']:.0f} fps): success AUC {measures['auc']:.3f}, "
        f"precision@20 {measures['precision@20']:.3f}, lowest IoU {measures['min_iou']:.3f}"
    )

    from cvops.models.siamfc import SUCCESS_THRESHOLDS

    figure, ax = plt.subplots(figsize=(4.5, 3.5))
    ax.plot(SUCCESS_THRESHOLDS.numpy(), success_curve(ious).numpy(), label=f"SiamFC, LocalNorm [{measures['auc']:.3f}]")
    ax.set(xlabel="overlap threshold", ylabel="success rate", xlim=(0, 1), ylim=(0, 1.02), title="Success plot (OTB)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    figure.tight_layout()
    figure.savefig(os.path.join(out_dir, "success.png"), dpi=100)
    plt.close(figure)

    shown = np.linspace(0, num_frames - 1, min(strip, num_frames)).round().astype(int)
    figure, axes = plt.subplots(1, len(shown), figsize=(2.6 * len(shown), 2.2))
    for ax, k in zip(np.atleast_1d(axes), shown):
        ax.imshow(frames[k])
        for box, colour in ((truth[k], "lime"), (predicted[k], "red")):
            x, y, w, h = box.tolist()
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor=colour, linewidth=1.5))
        ax.set_title(f"frame {k}: IoU {float(ious[k]):.2f}", fontsize=8)
        ax.axis("off")
    figure.suptitle("true box green, SiamFC red", fontsize=9)
    figure.tight_layout()
    figure.savefig(os.path.join(out_dir, "frames.png"), dpi=100)
    plt.close(figure)
    print(f"saved {os.path.join(out_dir, 'success.png')} and {os.path.join(out_dir, 'frames.png')}")
    return measures


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description="Track a target on a generated sequence of real pictures with SiamFC and save the success plot "
        "and a strip of frames."
    )
    parser.add_argument("out", metavar="OUT_DIR", help="where to save success.png and frames.png")
    parser.add_argument("--frames", type=int, default=80, help="sequence length (default 80)")
    parser.add_argument("--scale", type=float, default=1.0, help="picture scale (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="the path's phase")
    args = parser.parse_args(argv)
    run_demo(args.out, num_frames=args.frames, scale=args.scale, seed=args.seed)


if __name__ == "__main__":
    main()
