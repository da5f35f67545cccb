"""`python -m cvops.info`: versions, build configuration, CPU features, GPUs and the op × device
table of registered kernels — the first thing to paste into a bug report."""

import platform

import torch

import cvops
from cvops import _extension

DEVICES = ("CPU", "CUDA")


def registered_ops():
    """Every cvops op → {device: whether it has a kernel there}. An op body dispatches through its
    family's loop table (cvops._C.loop_tables()), so a device counts only where that table has the
    loops; ops made of ATen calls alone (CompositeExplicitAutograd) count for every device."""
    devices_of = {}
    for table in cvops._C.loop_tables():
        for op in table["ops"]:
            devices_of[op] = set(table["devices"])
    names = sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("cvops::"))
    table = {}
    for name in names:
        op = name.split("::", 1)[1]
        composite = torch._C._dispatch_has_kernel_for_dispatch_key(name, "CompositeExplicitAutograd")
        table[op] = {d: composite or d in devices_of.get(op, ()) for d in DEVICES}
    return table


def report() -> str:
    build = _extension.build_info() or {}
    level = cvops._C.cpu_level()
    lines = [
        f"cvops {cvops.__version__}",
        f"python {platform.python_version()} on {platform.machine()} ({platform.system()})",
        f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none'})",
        "",
        "build:",
        f"  built with torch  {build.get('torch_version', '?')}",
        f"  CUDA kernels      {'yes' if cvops._C.with_cuda() else 'no'} ({build.get('cuda_reason', '?')})",
        f"  CUDA archs        {build.get('cuda_arch_list') or '-'}",
        "",
        "CPU:",
        f"  {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        f"  kernels run at CPU level {level['level']} (best supported: {level['supported']}; "
        f"CVOPS_CPU_LEVEL=baseline|avx2|avx512|amx sets it, amx only on request); torch uses {torch.backends.cpu.get_cpu_capability()}",
        "",
        "GPUs:",
    ]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            lines.append(f"  cuda:{i} {p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB")
    else:
        lines.append("  none visible")
    ops = registered_ops()
    width = max([len(n) for n in ops] + [2])
    lines += ["", f"ops ({len(ops)}):", f"  {'op':<{width}}  " + "  ".join(f"{d:<4}" for d in DEVICES)]
    for name, keys in ops.items():
        lines.append(f"  {name:<{width}}  " + "  ".join(f"{'yes' if keys[d] else '-':<4}" for d in DEVICES))
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
