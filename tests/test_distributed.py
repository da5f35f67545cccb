"""Data-parallel training with real processes: two gloo ranks (meeting through a file store, gloo bound
to the loopback interface) train every model family two SGD steps under DDP, and DeepFace under FSDP2
fully_shard, with cvops.demos.train_ddp's tasks at small sizes.

After the steps every rank must hold the same parameters and the same state that must agree (compact
pooling's hash buffers, XNOR layers' packed weights, SiamFC's adjust buffers; BatchNorm statistics
are each rank's own), and those must equal one process that runs both ranks' micro-batches and
averages their gradients — what DDP computes: BatchNorm sees each micro-batch as each rank does,
triplets are mined per micro-batch, dropout is off. Under DDP the ranks start from different
initialisations (seed = rank): DDP's broadcast of rank 0's state is part of what is tested.
"""

import os
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from cvops.demos.train_ddp import TASKS, build_task, full_state_dict, init_process_group, rank_batch, wrap
from cvops.models.xnor_net import binary_modules

pytestmark = pytest.mark.timeout(600)

WORLD_SIZE, BATCH_SIZE, STEPS, SAMPLES, LR = 2, 2, 2, 8, 0.05
RUNS = [(name, "ddp") for name in TASKS] + [("deepface", "fsdp")]
BN_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def _dropout_off(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def _shared_state(model: nn.Module) -> dict:
    """The state that must agree across ranks: everything but BatchNorm statistics."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if not k.endswith(BN_STATISTICS)}


def _packed_state(model: nn.Module) -> dict:
    """Eval mode packs every XNOR layer's weight (cached as buffers): its bits and alpha."""
    return {k: v.clone() for k, v in model.state_dict().items() if ".packed_" in k}


def _train(task, module, rank_of_batches):
    """STEPS of SGD on module; rank_of_batches: the ranks whose micro-batches this process runs (one
    under DDP/FSDP2, all of them for the reference, whose gradients it averages as DDP does)."""
    optimizer = torch.optim.SGD(module.parameters(), lr=LR, momentum=0.9)
    device = next(module.parameters()).device
    for step in range(STEPS):
        optimizer.zero_grad(set_to_none=True)
        for rank in rank_of_batches:
            task.loss(module, rank_batch(task.data, step, rank, WORLD_SIZE, BATCH_SIZE, device)).backward()
        for parameter in module.parameters():
            parameter.grad /= len(rank_of_batches)
        optimizer.step()


def _eval_batch(task):
    return rank_batch(task.data, STEPS, 0, WORLD_SIZE, BATCH_SIZE)[0]


def _worker(rank, out_dir, store_path):
    torch.set_num_threads(1)
    init_process_group(rank, WORLD_SIZE, "cpu", store_path)
    try:
        for name, mode in RUNS:
            fsdp = mode == "fsdp"
            # FSDP2 shards what each rank built, so its ranks must build the same model.
            task = build_task(name, small=True, samples=SAMPLES, seed=0 if fsdp else rank)
            _dropout_off(task.model)
            module = wrap(task, fsdp, torch.device("cpu"))
            _train(task, module, [rank])
            result = {"full_state": full_state_dict(module, fsdp)}
            if fsdp:  # each rank holds its shard only
                result["local_numel"] = sum(p.to_local().numel() for p in module.parameters())
            else:
                result["shared_state"] = _shared_state(task.model)
            if name == "xnor_net":
                module.eval()
                with torch.no_grad():
                    module(_eval_batch(task))
                result["packed"] = _packed_state(task.model)
            torch.save(result, os.path.join(out_dir, f"{name}-{mode}-{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory):
    """Both ranks' results for every run in RUNS, from one launch of the two processes."""
    out_dir = tmp_path_factory.mktemp("ranks")
    mp.start_processes(
        _worker, (str(out_dir), str(out_dir / "store")), nprocs=WORLD_SIZE, join=True, start_method="spawn"
    )
    return {run: [torch.load(out_dir / f"{run[0]}-{run[1]}-{rank}.pt") for rank in range(WORLD_SIZE)] for run in RUNS}


@pytest.fixture(scope="module")
def references():
    """The single-process reference of each model (rank 0's initialisation), built once."""
    cache = {}

    def reference(name):
        if name not in cache:
            # One thread, as each rank runs: a binary net's signs turn the last bits of a float
            # reduction (whose order follows the thread count) into different weights.
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            task = build_task(name, small=True, samples=SAMPLES, seed=0)
            _dropout_off(task.model)
            _train(task, task.model, list(range(WORLD_SIZE)))
            state = {"state": _shared_state(task.model)}
            if name == "xnor_net":
                task.model.eval()
                with torch.no_grad():
                    task.model(_eval_batch(task))
                state["packed"] = _packed_state(task.model)
            torch.set_num_threads(threads)
            cache[name] = state
        return cache[name]

    return reference


@pytest.mark.parametrize("run", RUNS, ids=[f"{name}-{mode}" for name, mode in RUNS])
def test_ranks_agree_and_match_the_single_process_reference(run, rank_results, references):
    name, mode = run
    ranks, reference = rank_results[run], references(name)
    if mode == "ddp":
        # Every rank holds the same parameters and shared buffers, bit for bit.
        for other in ranks[1:]:
            assert other["shared_state"].keys() == ranks[0]["shared_state"].keys()
            for key, value in ranks[0]["shared_state"].items():
                assert torch.equal(other["shared_state"][key], value), key
    else:
        total = sum(value.numel() for value in reference["state"].values())
        assert all(rank["local_numel"] < 0.51 * total for rank in ranks), "FSDP2 left the parameters unsharded"
    # The full state dict, as a single process loads it (no "module." prefix), matches the reference.
    full = ranks[0]["full_state"]
    expected = reference["state"]
    assert set(expected) <= set(full), sorted(set(expected) - set(full))
    for key, value in expected.items():
        torch.testing.assert_close(full[key], value, msg=lambda m, key=key: f"{name} {mode} {key}: {m}")
    # And it trained: the parameters moved from their initialisation.
    initial = build_task(name, small=True, samples=SAMPLES, seed=0).model.state_dict()
    assert any(not torch.equal(initial[k], v) for k, v in expected.items() if v.is_floating_point())
    if name == "xnor_net":
        assert reference["packed"], "eval mode packed no XNOR layer"
        for rank in ranks:
            assert rank["packed"].keys() == reference["packed"].keys()
            for key, value in reference["packed"].items():
                assert torch.equal(rank["packed"][key], value), key


def test_compact_pooling_hashes_come_from_rank_0():
    """The ranks' compact pooling draws different hashes (seed = rank), so the agreement checked
    above is DDP's broadcast at work, not a coincidence."""
    pools = [build_task("compact_bilinear_cnn", small=True, samples=SAMPLES, seed=s).model.pool for s in (0, 1)]
    assert not torch.equal(pools[0].h1, pools[1].h1)


def _failing_worker(rank, store_path):
    init_process_group(rank, WORLD_SIZE, "cpu", store_path)
    if rank == 1:
        raise RuntimeError("rank 1 gives up")
    torch.distributed.barrier()  # would wait for rank 1 for ever without the launcher's join


def test_a_failing_rank_fails_with_its_own_error(tmp_path):
    with pytest.raises(mp.ProcessRaisedException, match="rank 1 gives up"):
        mp.start_processes(
            _failing_worker, (str(tmp_path / "store"),), nprocs=WORLD_SIZE, join=True, start_method="spawn"
        )


@pytest.mark.parametrize("model, fsdp", [("xnor_net", False), ("compact_bilinear_cnn", True)])
def test_train_ddp_demo_saves_a_checkpoint_one_process_loads(tmp_path, model, fsdp):
    command = [sys.executable, "-m", "cvops.demos.train_ddp", "--model", model, "--nproc", "2", "--steps", "3"]
    command += ["--small", "--samples", "8", "--batch-size", "2", "--out", str(tmp_path)] + ["--fsdp"] * fsdp
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "samples_s=" in done.stderr and "loss=" in done.stderr  # the progress bar
    state = torch.load(tmp_path / f"{model}.pt")
    assert not any(key.startswith("module.") for key in state)
    task = build_task(model, small=True, samples=8)
    initial = {k: v.clone() for k, v in task.model.state_dict().items()}
    task.model.load_state_dict(state)  # strict: every key, no extra
    assert any(not torch.equal(initial[k], v) for k, v in task.model.state_dict().items() if v.is_floating_point())
    task.model.eval()
    with torch.no_grad():
        assert torch.isfinite(task.model(task.data[0][:2])).all()
    if model == "xnor_net":
        assert binary_modules(task.model)[0].packed_bits is not None


@pytest.mark.cuda
def test_single_rank_nccl_step(tmp_path):
    """One NCCL rank (one GPU here): a DDP step of a cvops model on the GPU matches the same step run
    on the CPU without a process group."""
    store = torch.distributed.FileStore(str(tmp_path / "store"), 1)
    torch.distributed.init_process_group("nccl", store=store, rank=0, world_size=1)
    try:
        task = build_task("siamfc", small=True, samples=SAMPLES)
        reference = build_task("siamfc", small=True, samples=SAMPLES)
        module = wrap(task, False, torch.device("cuda", torch.cuda.current_device()))
        _train(task, module, [0])
        _train(reference, reference.model, [0])
        for key, value in _shared_state(reference.model).items():
            torch.testing.assert_close(task.model.state_dict()[key].cpu(), value, rtol=1e-4, atol=1e-5)
    finally:
        torch.distributed.destroy_process_group()
