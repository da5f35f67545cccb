"""The benchmark report: cvops against its peer, case by case, as one markdown table.

    python benchmarks/run.py [--quick] [--device cpu|cuda|all] [--only NAME ...]
                             [--min-run-time S] [--json FILE] [--markdown FILE] [--plot FILE.png]
    python benchmarks/run.py --plot-from FILE.json [--plot FILE.png] [--markdown FILE] [--only NAME ...]

Times are medians of torch.utils.benchmark's blocked_autorange (CUDA synchronised by the Timer);
the peer and cvops of a case are timed back to back. speed-up = peer ms / cvops ms.
--json is rewritten after every case, so a run cut short keeps the cases it finished;
--plot-from re-draws a saved --json report (and its table) without timing anything.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys

import torch
from torch.utils import benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
CASES_DIR = os.path.join(ROOT, "benchmarks", "cases")

COLUMNS = ("op", "shape", "device", "peer", "peer ms", "cvops ms", "speed-up", "cvops GB/s", "peak MiB")
WARMUP_CALLS = 2


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda", "all"), help="default: cpu, plus cuda when available")
    parser.add_argument("--quick", action="store_true", help="the headline cases only, shorter timing")
    parser.add_argument(
        "--only",
        metavar="NAME",
        action="append",
        help="keep the cases of family NAME (benchmarks/cases/NAME.py) or whose op name contains NAME; repeatable",
    )
    parser.add_argument(
        "--min-run-time",
        metavar="S",
        type=float,
        help="seconds of timing per implementation and case (default 1, 0.3 with --quick)",
    )
    parser.add_argument("--json", metavar="FILE", help="write the rows and the header metadata")
    parser.add_argument("--markdown", metavar="FILE", help="write the report (header and table)")
    parser.add_argument("--plot", metavar="FILE.png", help="bar chart of the speed-ups")
    parser.add_argument(
        "--plot-from", metavar="FILE.json", help="no timing: re-plot a saved --json report (to --plot, else FILE.png)"
    )
    args = parser.parse_args()
    if args.plot_from:
        if args.device or args.quick or args.min_run_time:
            parser.error("--plot-from re-plots saved rows: --device, --quick and --min-run-time do not apply")
        args.plot = args.plot or os.path.splitext(args.plot_from)[0] + ".png"
        return args
    if args.device in ("cuda", "all") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device is available")
    default = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    args.devices = {"cpu": ["cpu"], "cuda": ["cuda"], "all": ["cpu", "cuda"]}.get(args.device, default)
    return args


def wanted(only, family, op):
    return only is None or any(name == family or name in op for name in only)


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
    import cvops

    return f"{cpu_name()}, {torch.get_num_threads()} threads, CPU level {cvops._C.cpu_level()['level']}"


def git_commit():
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip() or "?"
    except OSError:
        return "?"


def metadata(devices):
    import cvops  # here, not at the top: --plot-from runs without the build

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
    row = {
        "family": case.family,
        "op": case.op,
        "shape": case.shape,
        "device": case.device,
        "peer": case.peer,
        "peer_ms": None,
        "cvops_ms": None,
        "speedup": None,
        "peer_peak_mib": None,
        "cvops_peak_mib": None,
        "match": None,
        "max_abs_diff": None,
        "error": None,
        "cvops_gbps": None,
    }
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
    peak = (
        "-"
        if None in (row["peer_peak_mib"], row["cvops_peak_mib"])
        else f"{row['peer_peak_mib']:.0f} / {row['cvops_peak_mib']:.0f}"
    )
    gbps = "-" if row["cvops_gbps"] is None else f"{row['cvops_gbps']:.1f}"
    return [
        row["op"],
        row["shape"],
        row["device"],
        row["peer"],
        ms(row["peer_ms"]),
        ms(row["cvops_ms"]),
        speedup,
        gbps,
        peak,
    ]


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


def write_json(path, meta, rows):
    # Through a temporary file: a run killed mid-write still leaves the last complete report.
    with open(path + ".tmp", "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    os.replace(path + ".tmp", path)


def saved_family(op):
    """The family of a row saved before rows carried one: the cases module whose string literals spell
    the op's first word (read, not imported: the modules import cvops, which needs the build)."""
    word = re.compile(r"""["']""" + re.escape(op.split()[0]) + r"\b")
    found = []
    for name in sorted(os.listdir(CASES_DIR)):
        if name.endswith(".py") and name != "__init__.py":
            with open(os.path.join(CASES_DIR, name)) as f:
                if word.search(f.read()):
                    found.append(name.removesuffix(".py"))
    return found[0] if len(found) == 1 else "other"


def load_report(path):
    with open(path) as f:
        saved = json.load(f)
    for row in saved["rows"]:
        row["family"] = row.get("family") or saved_family(row["op"])
    return saved["meta"], saved["rows"]


def plot(meta, rows, path):
    """Horizontal bars of the speed-ups on a log axis from 1×, grouped and coloured by family, each row
    named by op and shape on the left and by its peer on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator
    from matplotlib.transforms import blended_transform_factory

    families = list(dict.fromkeys(r["family"] for r in rows))
    # A family keeps its colour from chart to chart: the colours follow the sorted module names.
    known = sorted(
        name.removesuffix(".py") for name in os.listdir(CASES_DIR) if name.endswith(".py") and name != "__init__.py"
    )
    palette = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 3]  # red marks slow or failed rows
    colours = {
        f: palette[(known.index(f) if f in known else len(known) + i) % len(palette)] for i, f in enumerate(families)
    }
    several_devices = len({r["device"] for r in rows}) > 1
    # Top to bottom: a header line per family, then its rows in table order.
    lines, pos = [], 0.0
    for family in families:
        lines.append((pos, family, None))
        pos += 1
        for row in rows:
            if row["family"] == family:
                lines.append((pos, family, row))
                pos += 1
        pos += 0.5
    speedups = [r["speedup"] for r in rows if r["speedup"] is not None] or [1.0]
    lo, hi = min(0.67, min(speedups)) / 1.6, max(1.5, max(speedups)) * 1.8

    fig, ax = plt.subplots(figsize=(13, 1.6 + 0.26 * pos))
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(pos - 0.3, -0.7)
    right = blended_transform_factory(ax.transAxes, ax.transData)  # x in axes fractions, y in rows
    labels = []
    for y, family, row in lines:
        colour = colours[family]
        if row is None:
            labels.append(family)
            span = sum(1 for _, f, r in lines if f == family and r is not None)
            ax.axhspan(y - 0.5, y + span + 0.5, color=colour, alpha=0.07, linewidth=0)
            continue
        label = f"{row['op']}  {row['shape']}"
        labels.append(f"{label}  [{row['device']}]" if several_devices else label)
        ax.text(1.01, y, f"vs {row['peer']}", transform=right, va="center", fontsize=8, color="dimgray")
        ax.axhline(y, color="lightgray", linewidth=0.5, linestyle=":", zorder=0)  # leads the eye to the peer
        s = row["speedup"]
        if s is None:
            ax.text(
                1.0,
                y,
                f"  FAILED: {(row['error'] or '?').splitlines()[0][:60]}",
                va="center",
                fontsize=8,
                color="tab:red",
            )
            continue
        ax.barh(y, s - 1.0, left=1.0, height=0.72, color=colour)
        text = f"{s:.2f}×" if s < 10 else f"{s:.1f}×"
        if not row["match"]:
            text += "  outputs differ"
        ax.annotate(
            text,
            (s, y),
            xytext=(3 if s >= 1 else -3, 0),
            textcoords="offset points",
            va="center",
            ha="left" if s >= 1 else "right",
            fontsize=8,
            color="tab:red" if s < 1 or not row["match"] else "black",
        )
    ax.set_yticks([y for y, _, _ in lines], labels, fontsize=8.5)
    for (_, family, row), tick in zip(lines, ax.get_yticklabels()):
        if row is None:
            tick.set_fontweight("bold")
            tick.set_fontsize(10)
            tick.set_color(colours[family])
    ax.tick_params(axis="y", length=0)
    ax.text(1.01, 0, "peer", transform=right, va="center", fontsize=9, fontweight="bold")

    ax.axvline(1.0, color="black", linewidth=1.2)
    steps = [m * 10.0**e for e in range(-3, 5) for m in ((1, 2, 5) if hi / lo > 30 else (1, 1.5, 2, 3, 5, 7))]
    ax.set_xticks([t for t in steps if lo <= t <= hi], [f"{t:g}×" for t in steps if lo <= t <= hi])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.tick_params(axis="x", top=True, labeltop=True)  # a long chart reads its scale at both ends
    ax.grid(axis="x", color="lightgray", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.spines["right"].set_visible(False)
    ax.set_xlabel("speed-up over the peer = peer ms / cvops ms (log scale; right of 1× cvops is faster)")
    devices = "; ".join(meta["devices"].values())
    ax.set_title(
        f"cvops vs peer on {devices}, {meta['date'][:10]}\n"
        f"torch {meta['torch']}, cvops {meta['cvops']} ({meta['commit']})",
        fontsize=11,
    )
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main():
    args = parse_args()
    if args.plot_from:
        meta, rows = load_report(args.plot_from)
        rows = [r for r in rows if wanted(args.only, r["family"], r["op"])]
        if not rows:
            sys.exit("no row selected")
    else:
        from benchmarks.cases import all_cases  # imports cvops: timing needs the build, --plot-from does not

        selected = [
            c for c in all_cases(args.devices) if (c.quick or not args.quick) and wanted(args.only, c.family, c.op)
        ]
        if not selected:
            sys.exit("no case selected")
        meta = metadata(args.devices)
        min_run_time = args.min_run_time or (0.3 if args.quick else 1.0)
        rows = []
        for i, case in enumerate(selected, 1):
            print(f"[{i}/{len(selected)}] {case.label}", file=sys.stderr, flush=True)
            rows.append(run_case(case, min_run_time))
            if args.json:
                write_json(args.json, meta, rows)

    text = report(meta, rows)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    if args.json:
        write_json(args.json, meta, rows)
    if args.plot:
        plot(meta, rows, args.plot)


if __name__ == "__main__":
    main()
