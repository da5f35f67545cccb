"""Data-parallel training of a cvops model on synthetic data, across processes: DDP, or FSDP2
(`fully_shard`) with --fsdp; gloo on CPU, NCCL with --device cuda.

    python -m cvops.demos.train_ddp --model MODEL [--nproc 2] [--steps 20] [--batch-size 4] [--fsdp]
                                    [--small] [--device cpu|cuda] [--out DIR]
    torchrun --nproc-per-node 2 -m cvops.demos.train_ddp --model MODEL ...

MODEL: one of TASKS (bilinear_cnn, compact_bilinear_cnn, mfb_vqa, style_transfer, xnor_net, siamfc,
deepface). --nproc N starts N processes itself: they meet through a file store and gloo binds the
loopback interface (GLOO_SOCKET_IFNAME=lo unless set), so nothing listens outside the machine. Under
torchrun the rank, world size and rendezvous come from its environment.

Every rank builds the same model (the seed is shared: FSDP2 shards what each rank built, it does not
broadcast), draws the same synthetic data set and takes its slice of each global batch, as
DistributedSampler would. Rank 0 shows a progress bar with the loss (averaged over the ranks) and the
throughput, then saves the model's state_dict to DIR/MODEL.pt — without DDP's "module." prefix, and
for FSDP2 the full (unsharded) state dict — which load_state_dict restores in a single process:

    model = build_task("mfb_vqa").model
    model.load_state_dict(torch.load("checkpoints/mfb_vqa.pt"))
"""

import argparse
import datetime
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from cvops.models.bilinear_cnn import BilinearCNN
from cvops.models.deepface import DeepFace, batch_triplet_loss
from cvops.models.mfb_vqa import MFBVQA
from cvops.models.siamfc import SiamFC, SiamFCLoss
from cvops.models.style_transfer import StyleTransferLoss, TransformerNet, VGGFeatures
from cvops.models.xnor_net import xnor_resnet18

__all__ = [
    "TASKS",
    "Task",
    "build_task",
    "full_state_dict",
    "init_process_group",
    "main",
    "rank_batch",
    "train",
    "wrap",
]

TIMEOUT = datetime.timedelta(seconds=120)  # a collective waiting longer than this fails instead of hanging


@dataclass
class Task:
    """A model with its synthetic data and loss.

    data: tensors with N samples each (dim 0); loss(module, batch) → scalar, where module is the model
    or its DDP / FSDP2 wrapper (the loss calls module's forward, which is where those wrappers hook
    in) and batch holds slices of data. shard_units: the submodules FSDP2 shards one by one."""

    model: nn.Module
    data: tuple
    loss: Callable[[nn.Module, tuple], Tensor]
    shard_units: tuple = field(default=())


def _class_images(generator, samples, classes, channels, size, *, scale=1.0):
    """Noise plus a fixed pattern per class (so that the loss can fall) and the class labels."""
    patterns = torch.randn(classes, channels, size, size, generator=generator)
    labels = torch.randint(classes, (samples,), generator=generator)
    noise = torch.randn(samples, channels, size, size, generator=generator)
    return (patterns[labels] + noise) * scale, labels


def _classification(model, images, labels):
    return Task(model, (images, labels), lambda module, batch: F.cross_entropy(module(batch[0]), batch[1]))


def _bilinear_cnn(generator, samples, small, pooling):
    size, width = (32, 1 / 16) if small else (64, 1 / 4)
    images, labels = _class_images(generator, samples, 10, 3, size, scale=0.25)
    # Compact pooling draws its hash buffers from a seed of its own: the model's, here.
    seed = torch.initial_seed()
    model = BilinearCNN(10, pooling, output_dim=256 if small else 2048, width_mult=width, seed=seed)
    return _classification(model, images.sigmoid(), labels)


def _mfb_vqa(generator, samples, small):
    channels, answers, vocab, length = (32 if small else 256), 10, 50, 6
    image = torch.randn(samples, channels, 4, 4, generator=generator)
    tokens = torch.randint(1, vocab, (samples, length), generator=generator)
    lengths = torch.randint(2, length + 1, (samples,), generator=generator)
    tokens = tokens.masked_fill(torch.arange(length) >= lengths[:, None], 0)  # 0 pads each question
    answers_ = (tokens[:, 0] + tokens[:, 1]) % answers
    width = dict(embed_dim=16, hidden_dim=32, k=2, o=16, attention_dim=16) if small else {}
    model = MFBVQA(answers, vocab, image_channels=channels, **width)
    return Task(
        model, (image, tokens, answers_), lambda module, batch: F.cross_entropy(module(batch[0], batch[1]), batch[2])
    )


def _style_transfer(generator, samples, small):
    size, styles = (32 if small else 64), 2
    content = torch.rand(samples, 3, size, size, generator=generator)
    style = torch.randint(styles, (samples,), generator=generator)
    with torch.random.fork_rng():
        # The loss's frozen VGG and style images come from the data's generator: the same on every rank.
        torch.manual_seed(int(torch.randint(2**31, (), generator=generator)))
        loss_fn = StyleTransferLoss(VGGFeatures(), torch.rand(styles, 3, size, size))
    model = TransformerNet(styles)
    return Task(model, (content, style), lambda module, batch: loss_fn(module(*batch), *batch)[0])


def _xnor_net(generator, samples, small):
    images, labels = _class_images(generator, samples, 10, 3, 16 if small else 32)
    return _classification(xnor_resnet18(10, cifar=True), images, labels)


def _siamfc(generator, samples, small):
    exemplar, search = (95, 127) if small else (127, 255)
    x = torch.rand(samples, 3, search, search, generator=generator) * 255
    start = (search - exemplar) // 2
    z = x[:, :, start : start + exemplar, start : start + exemplar].clone()  # the target sits at x's centre
    loss_fn = SiamFCLoss(total_stride=SiamFC.total_stride)
    return Task(SiamFC(), (z, x), lambda module, batch: loss_fn(module(*batch)))


def _deepface(generator, samples, small):
    identities = 8
    # Consecutive pairs share an identity, so every even-sized slice holds positives for the triplets.
    labels = torch.randint(identities, (math.ceil(samples / 2),), generator=generator).repeat_interleave(2)[:samples]
    faces, _ = _class_images(generator, samples, identities, 3, DeepFace.INPUT_SIZE)
    templates = torch.rand(identities, 3, DeepFace.INPUT_SIZE, DeepFace.INPUT_SIZE, generator=generator)
    faces = (templates[labels] * 200 + faces * 20).clamp(0, 255)
    model = DeepFace(4030)  # the paper's 4030-way classifier (about 119M parameters); the data uses 8 of them

    def loss(module, batch):
        logits, embeddings = module(batch[0], return_embedding=True)
        return F.cross_entropy(logits, batch[1]) + batch_triplet_loss(embeddings, batch[1], mining="hard").loss

    return Task(model, (faces, labels), loss, (model.l4, model.l5, model.l6, model.f7, model.f8))


TASKS = {
    "bilinear_cnn": lambda g, n, small: _bilinear_cnn(g, n, small, "full"),
    "compact_bilinear_cnn": lambda g, n, small: _bilinear_cnn(g, n, small, "compact_ts"),
    "mfb_vqa": _mfb_vqa,
    "style_transfer": _style_transfer,
    "xnor_net": _xnor_net,
    "siamfc": _siamfc,
    "deepface": _deepface,
}


def build_task(name: str, *, small: bool = False, samples: int = 64, seed: int = 0, data_seed: int = 0) -> Task:
    """TASKS[name] with its model initialised from `seed` and its data (and any frozen loss network)
    from `data_seed`; small=True shrinks the widths and image sizes (tests)."""
    if name not in TASKS:
        raise ValueError(f"cvops.train_ddp: model must be one of {', '.join(TASKS)}, got {name!r}")
    generator = torch.Generator().manual_seed(data_seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return TASKS[name](generator, samples, small)


def rank_batch(data: tuple, step: int, rank: int, world_size: int, batch_size: int, device="cpu") -> tuple:
    """Rank's slice [rank·b, (rank+1)·b) of the step-th global batch of world_size·b samples (the
    data set read in order, wrapping around), on device."""
    samples = data[0].shape[0]
    start = (step * world_size + rank) * batch_size
    index = torch.arange(start, start + batch_size) % samples
    return tuple(tensor[index].to(device) for tensor in data)


def wrap(task: Task, fsdp: bool, device: torch.device) -> nn.Module:
    """The model moved to device and wrapped for data parallelism: DDP (which broadcasts rank 0's
    parameters and buffers) or FSDP2 (each shard unit, then the root; parameters sharded along dim 0)."""
    model = task.model.to(device)
    if not fsdp:
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for unit in task.shard_units:
        fully_shard(unit, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def full_state_dict(module: nn.Module, fsdp: bool) -> dict:
    """The model's full state_dict from its wrapper, as a single process loads it (a collective
    under FSDP2: every rank calls it; rank 0 gets the tensors, on the CPU)."""
    if not fsdp:
        return {key: value.cpu() for key, value in module.module.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def init_process_group(rank: int, world_size: int, device: str, store_path=None) -> torch.device:
    """Join the process group (through the file at store_path, else torchrun's environment) and
    return this rank's device."""
    backend = "nccl" if device == "cuda" else "gloo"
    if store_path is not None:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        store = dist.FileStore(store_path, world_size)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=TIMEOUT)
    else:
        dist.init_process_group(backend, timeout=TIMEOUT)
    if device == "cuda":
        local = int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count()
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def train(rank: int, world_size: int, args: argparse.Namespace, store_path=None) -> None:
    """One rank of the training run that main describes (`args` as its parser makes them)."""
    from tqdm import tqdm

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    device = init_process_group(rank, world_size, args.device, store_path)
    try:
        task = build_task(args.model, small=args.small, samples=args.samples, seed=args.seed)
        module = wrap(task, args.fsdp, device)
        optimizer = torch.optim.Adam(module.parameters(), lr=args.lr)
        bar = tqdm(range(args.steps), desc=f"{args.model} ×{world_size}", disable=rank != 0, unit="step")
        start = time.perf_counter()
        for step in bar:
            batch = rank_batch(task.data, step, rank, world_size, args.batch_size, device)
            optimizer.zero_grad(set_to_none=True)
            loss = task.loss(module, batch)
            loss.backward()
            optimizer.step()
            mean_loss = loss.detach().clone()
            dist.all_reduce(mean_loss)
            seen = (step + 1) * world_size * args.batch_size
            bar.set_postfix(
                loss=f"{mean_loss.item() / world_size:.4f}", samples_s=f"{seen / (time.perf_counter() - start):.1f}"
            )
        state = full_state_dict(module, args.fsdp)
        if rank == 0:
            os.makedirs(args.out, exist_ok=True)
            path = os.path.join(args.out, f"{args.model}.pt")
            torch.save(state, path)
            print(f"saved {path} ({len(state)} tensors)")
    finally:
        dist.destroy_process_group()


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cvops.demos.train_ddp", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, choices=list(TASKS))
    parser.add_argument("--nproc", type=int, default=2, help="processes to start (ignored under torchrun)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4, help="samples per rank and step")
    parser.add_argument("--samples", type=int, default=64, help="size of the synthetic data set")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fsdp", action="store_true", help="FSDP2 fully_shard instead of DDP")
    parser.add_argument("--small", action="store_true", help="small widths and images (quick runs)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--out", default="checkpoints", help="directory for MODEL.pt")
    args = parser.parse_args(argv)
    if args.nproc < 1 or args.steps < 1 or args.batch_size < 1 or args.samples < 1:
        parser.error("--nproc, --steps, --batch-size and --samples must be ≥ 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # launched by torchrun
        train(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        store_path = os.path.join(tmp, "store")
        torch.multiprocessing.start_processes(
            train, (args.nproc, args, store_path), nprocs=args.nproc, join=True, start_method="spawn"
        )


if __name__ == "__main__":
    main()
