"""Multi-style transfer demo: train a TransformerNet briefly on a procedural scene in four synthetic
styles and save a grid of the content, the styles, the network's output per style and mixtures.

    python -m cvops.demos.style_transfer OUT.png [--steps N] [--size S] [--seed K]
"""

import argparse
import time

import torch
import torch.nn.functional as F
from torch import Tensor

from cvops.models.style_transfer import StyleTransferLoss, TransformerNet, VGGFeatures, train_step
from cvops.nn import ConditionalInstanceNorm2d

__all__ = ["demo_content_image", "demo_style_images", "main", "run_demo"]


def _unit_grid(size: int):
    """Coordinates y, x in [0, 1], each [size, size]."""
    axis = torch.linspace(0, 1, size)
    return torch.meshgrid(axis, axis, indexing="ij")


def demo_content_image(size: int = 64) -> Tensor:
    """A procedural scene [3, size, size]: sky gradient, sun, ground, a house with a roof."""
    y, x = _unit_grid(size)
    sky = torch.stack([0.3 + 0.4 * y, 0.5 + 0.3 * y, torch.full_like(y, 0.95)])
    image = torch.where(y > 0.7, torch.tensor([0.2, 0.55, 0.2]).view(3, 1, 1), sky)
    shapes = [
        ((x - 0.78) ** 2 + (y - 0.2) ** 2 < 0.012, (1.0, 0.85, 0.1)),  # sun
        ((x > 0.2) & (x < 0.5) & (y > 0.45) & (y < 0.75), (0.8, 0.3, 0.25)),  # walls
        ((y > 0.25) & (y <= 0.45) & ((x - 0.35).abs() < (y - 0.25) * 0.9), (0.45, 0.2, 0.1)),  # roof
        ((x > 0.31) & (x < 0.39) & (y > 0.6) & (y < 0.75), (0.3, 0.2, 0.1)),  # door
    ]
    for mask, colour in shapes:
        image = torch.where(mask, torch.tensor(colour).view(3, 1, 1), image)
    return image


def demo_style_images(size: int = 64, generator=None) -> dict:
    """Synthetic styles {name: [3, size, size]}: diagonal stripes, checks, smoothed colour noise, dots."""
    y, x = _unit_grid(size)
    cells = size / 8
    stripes = torch.sin((x + y) * cells * torch.pi) > 0
    checks = ((x * cells).floor() + (y * cells).floor()) % 2 == 0
    dots = ((x * cells) % 1 - 0.5) ** 2 + ((y * cells) % 1 - 0.5) ** 2 < 0.09
    noise = torch.rand(1, 3, size // 4, size // 4, generator=generator)
    noise = F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False)[0].clamp(0, 1)

    def two_colours(mask, first, second):
        return torch.where(mask, torch.tensor(first).view(3, 1, 1), torch.tensor(second).view(3, 1, 1))

    return {
        "stripes": two_colours(stripes, (0.95, 0.8, 0.1), (0.1, 0.1, 0.4)),
        "checks": two_colours(checks, (0.9, 0.1, 0.1), (0.95, 0.95, 0.9)),
        "noise": noise,
        "dots": two_colours(dots, (0.1, 0.7, 0.6), (0.05, 0.05, 0.05)),
    }


def run_demo(path: str, *, steps: int = 80, size: int = 64, seed: int = 0) -> None:
    """Train a TransformerNet briefly on the procedural scene in each synthetic style, then save a grid:
    the content and styles, the network's output per style, and mixtures of styles.

    The style weight is ~30× below StyleTransferLoss's default: a network trained for a few dozen steps
    is far from its optimum, and with the full weight it matches the styles' colours by giving up the
    content altogether."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    content = demo_content_image(size)
    styles = demo_style_images(size, generator)
    names, style_images = list(styles), torch.stack(list(styles.values()))
    num_styles = len(names)

    vgg = VGGFeatures()
    loss_fn = StyleTransferLoss(vgg, style_images, content_weight=1.0, style_weight=0.15, tv_weight=0.1)
    model = TransformerNet(num_styles)
    # Only the norms' [S, C] scales and shifts tell the styles apart; a 10× learning rate lets them
    # diverge within the few steps of the demo.
    norms = [m for m in model.modules() if isinstance(m, ConditionalInstanceNorm2d)]
    style_parameters = [p for norm in norms for p in norm.parameters()]
    shared_parameters = [p for p in model.parameters() if all(p is not q for q in style_parameters)]
    optimizer = torch.optim.Adam([{"params": shared_parameters}, {"params": style_parameters, "lr": 3e-2}], lr=3e-3)
    batch = content.expand(num_styles, -1, -1, -1)  # the scene once per style
    style_index = torch.arange(num_styles)
    start = time.perf_counter()
    for step in range(steps):
        loss = train_step(model, optimizer, batch, style_index, loss_fn=loss_fn)
        if step == 0 or step == steps - 1:
            print(f"step {step + 1}/{steps}: loss {loss:.4g}")
    print(f"trained {steps} steps in {time.perf_counter() - start:.1f} s")

    eye = torch.eye(num_styles)  # half-and-half of neighbouring styles, then all in equal parts
    mixtures = {f"{names[i - 1]}+{names[i]}": (eye[i - 1] + eye[i]) / 2 for i in range(num_styles)}
    mixtures["all"] = torch.full((num_styles,), 1 / num_styles)
    with torch.no_grad():
        stylised = model(content.expand(num_styles, -1, -1, -1), style_index)
        mixed = model(content.expand(len(mixtures), -1, -1, -1), torch.stack(list(mixtures.values())))

    rows = [
        [("content", content)] + [(f"style: {n}", img) for n, img in zip(names, style_images)],
        [("", None)] + [(f"→ {n}", img) for n, img in zip(names, stylised)],
        [(f"mix {n}", img) for n, img in zip(mixtures, mixed)],
    ]
    columns = max(len(row) for row in rows)
    figure, axes = plt.subplots(len(rows), columns, figsize=(2 * columns, 2.2 * len(rows)))
    for row_axes, row in zip(axes, rows):
        for ax, (title, image) in zip(row_axes, row + [("", None)] * (columns - len(row))):
            ax.axis("off")
            if image is not None:
                ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
                ax.set_title(title, fontsize=8)
    figure.suptitle(f"cvops TransformerNet, {steps} steps, random-weight VGG-16", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    print(f"saved {path}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description="Train a multi-style TransformerNet briefly on synthetic images and save a grid of its styles and mixtures."
    )
    parser.add_argument("out", metavar="OUT.png", help="where to save the grid")
    parser.add_argument("--steps", type=int, default=80, help="training steps (default 80)")
    parser.add_argument("--size", type=int, default=64, help="image size (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    run_demo(args.out, steps=args.steps, size=args.size, seed=args.seed)


if __name__ == "__main__":
    main()
