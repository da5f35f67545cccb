"""The benchmark report: cvops against its peer, case by case, as one markdown table.

    python benchmarks/run.py [--quick] [--device cpu|cuda|all] [--only OP]
                             [--json FILE] [--markdown FILE] [--plot FILE.png]

Times are medians of torch.utils.benchmark's blocked_autorange (CUDA synchronised by the Timer);
the peer and cvops of a case are timed back to back. speed-up = peer ms / cvops ms.
"""
import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys

import torch
from torch.utils import benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import cvops  # noqa: E402
from benchmarks.cases import all_cases, available_devices  # noqa: E402

COLUMNS = ("op", "shape", "device", "peer", "peer ms", "cvops ms", "speed-up", "cvops GB/s", "peak MiB")
WARMUP_CALLS = 2


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda", "all"),
                        help="default: cpu, plus cuda when available")
    parser.add_argument("--quick", action="store_true", help="the issue's target cases only, shorter timing")
    parser.add_argument("--only", metavar="SUBSTRING", help="keep the cases whose op name contains this")
    parser.add_argument("--json", metavar="FILE", help="write the rows and the header metadata")
    parser.add_argument("--markdown", metavar="FILE", help="write the report (header and table)")
    parser.add_argument("--plot", metavar="FILE.png", help="bar chart of the speed-ups")
    args = parser.parse_args()
    if args.device in ("cuda", "all") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device is available")
    args.devices = {"cpu": ["cpu"], "cuda": ["cuda"], "all": ["cpu", "cuda"]}.get(args.device, available_devices())
    return args


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device):
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"{cpu_name()}, {torch.get_num_threads()} threads"


def git_commit():
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip() or "?"
    except OSError:
        return "?"


def metadata(devices):
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "cvops": cvops.__version__,
        "commit": git_commit(),
        "devices": {d: device_name(d) for d in devices},
        "command": shlex.join(["python", *sys.argv]),
    }


def check(expected, actual, rtol, atol_scale=1e-4):
    """(agree, max abs difference or None for a shape mismatch), compared in float32."""
    if expected.shape != actual.shape:
        return False, None
    expected, actual = expected.float(), actual.float()
    # atol follows the output's scale: chw-normalised Grams and their gradients are far below 1.
    atol = atol_scale * expected.abs().max().item()
    return torch.allclose(actual, expected, rtol=rtol, atol=atol), (actual - expected).abs().max().item()


def peak_mib(fn):
    """Peak CUDA memory allocated during one call, inputs included (they are the same for both)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def _proc_status_bytes(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise OSError(f"{key} not in /proc/self/status")


def cpu_peak_mib(fn):
    """Peak growth of resident memory during one call (Linux): free heap memory is returned to
    the OS first (malloc_trim) and the high-water mark reset (clear_refs 5), so the call's buffers
    must fault in again. Inputs are excluded; None where /proc or glibc is unavailable."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        fn()  # lazy initialisation stays out of the measurement
        libc.malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _proc_status_bytes("VmRSS:")
        fn()
        return max(0, _proc_status_bytes("VmHWM:") - base) / 2**20
    except (OSError, AttributeError):
        return None


def median_ms(fn, min_run_time):
    for _ in range(WARMUP_CALLS):
        fn()
    # The Timer runs on 1 thread unless told otherwise: give it the threads torch would use.
    timer = benchmark.Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def run_case(case, min_run_time):
    row = {"op": case.op, "shape": case.shape, "device": case.device, "peer": case.peer, "peer_ms": None,
           "cvops_ms": None, "speedup": None, "peer_peak_mib": None, "cvops_peak_mib": None,
           "match": None, "max_abs_diff": None, "error": None, "cvops_gbps": None}
    try:
        peer_fn, cvops_fn = case.build()
        row["match"], row["max_abs_diff"] = check(peer_fn(), cvops_fn(), case.rtol, case.atol_scale)
        if case.peak_memory and case.device == "cuda":
            row["peer_peak_mib"], row["cvops_peak_mib"] = peak_mib(peer_fn), peak_mib(cvops_fn)
        elif case.peak_memory and case.device == "cpu":
            row["peer_peak_mib"], row["cvops_peak_mib"] = cpu_peak_mib(peer_fn), cpu_peak_mib(cvops_fn)
        row["peer_ms"] = median_ms(peer_fn, min_run_time)
        row["cvops_ms"] = median_ms(cvops_fn, min_run_time)
        row["speedup"] = row["peer_ms"] / row["cvops_ms"]
        if case.bytes_moved:
            row["cvops_gbps"] = case.bytes_moved / (row["cvops_ms"] * 1e6)
    except Exception as e:  # one broken case must not hide the others: it gets a FAILED row
        row["error"] = f"{type(e).__name__}: {e}"
    return row


def cells(row):
    def ms(value):
        return "-" if value is None else f"{value:.3f}"

    if row["error"]:
        speedup = f"**FAILED: {row['error'].splitlines()[0][:80]}**"
    else:
        speedup = f"{row['speedup']:.2f}x"
        if not row["match"]:
            diff = "shapes" if row["max_abs_diff"] is None else f"max abs diff {row['max_abs_diff']:.3g}"
            speedup += f" **WARNING: outputs differ ({diff})**"
    peak = "-" if None in (row["peer_peak_mib"], row["cvops_peak_mib"]) else f"{row['peer_peak_mib']:.0f} / {row['cvops_peak_mib']:.0f}"
    gbps = "-" if row["cvops_gbps"] is None else f"{row['cvops_gbps']:.1f}"
    return [row["op"], row["shape"], row["device"], row["peer"], ms(row["peer_ms"]), ms(row["cvops_ms"]),
            speedup, gbps, peak]


def table(rows):
    body = [cells(row) for row in rows]
    widths = [max(len(line[i]) for line in [COLUMNS, *body]) for i in range(len(COLUMNS))]

    def line(values):
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"

    return "\n".join([line(COLUMNS), line("-" * w for w in widths), *(line(values) for values in body)])


def report(meta, rows):
    devices = "; ".join(f"{d}: {name}" for d, name in meta["devices"].items())
    lines = [
        f"cvops benchmark, {meta['date']}: torch {meta['torch']}, cvops {meta['cvops']} ({meta['commit']}); {devices}",
        f"command: `{meta['command']}`",
        "",
        table(rows),
        "",
        "Median ms per call; speed-up = peer ms / cvops ms; cvops GB/s = the fewest bytes the op must "
        "move (inputs read once, outputs written once) / cvops time; peak MiB (peer / cvops) = peak CUDA "
        "memory of one call, inputs included, or on CPU the peak growth of resident memory during "
        "one call, inputs excluded.",
    ]
    bad = [f"{r['op']} {r['shape']} {r['device']}" for r in rows if r["error"] or not r["match"]]
    if bad:
        lines += ["", f"WARNING: {len(bad)} case(s) failed or disagree with the peer: " + "; ".join(bad)]
    return "\n".join(lines)


def plot(meta, rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["speedup"] is not None]
    speedups = [r["speedup"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 1.5 + 0.35 * len(rows)))
    ax.barh(range(len(rows)), speedups, color=["tab:green" if s >= 1 else "tab:red" for s in speedups])
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(rows)), [f"{r['op']} {r['shape']} {r['device']}" for r in rows])
    ax.invert_yaxis()  # table order, top to bottom
    for i, s in enumerate(speedups):
        ax.text(s, i, f" {s:.2f}x", va="center", fontsize=8)
    ax.set_xlabel("speed-up over peer (peer ms / cvops ms)")
    devices = "; ".join(meta["devices"].values())
    ax.set_title(f"cvops vs peer, {meta['date'][:10]}, torch {meta['torch']}\n{devices}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    args = parse_args()
    selected = [c for c in all_cases(args.devices)
                if (c.quick or not args.quick) and (args.only is None or args.only in c.op)]
    if not selected:
        sys.exit("no case selected")
    meta = metadata(args.devices)
    min_run_time = 0.3 if args.quick else 1.0
    rows = []
    for i, case in enumerate(selected, 1):
        print(f"[{i}/{len(selected)}] {case.label}", file=sys.stderr, flush=True)
        rows.append(run_case(case, min_run_time))

    text = report(meta, rows)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)
    if args.plot:
        plot(meta, rows, args.plot)


if __name__ == "__main__":
    main()
