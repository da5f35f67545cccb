#!/usr/bin/env bash
# On a machine with an NVIDIA GPU (python3 with its own CUDA torch, nvcc, ninja, pytest,
# compute-sanitizer; no network): build cvops against that python3, run the CUDA tests, the
# sanitize-marked tests under compute-sanitizer memcheck and racecheck, and the GPU benchmark report.
#   bash scripts/gpu_check.sh RESULTS_DIR [FAMILY ...]
# A FAMILY (a folder of csrc/ other than common) limits the tests to tests/test_FAMILY*.py plus the
# test files named after the family's sources (csrc/boxes/nms.cpp: tests/test_nms.py), and the
# benchmark to `--only FAMILY`.
#
# RESULTS_DIR gets 8 files, as many as the GPU machine's transfer brings back: summary.txt
# (versions and the step table, also printed last), build.log, tests.log, sanitize.log (memcheck,
# then racecheck), bench.log, bench_cuda.json, bench_cuda.md, bench_cuda.png.
#
# Every step runs under `timeout`; a failing step does not stop the next. The whole command stays
# within GPU_CHECK_BUDGET seconds (default 330): a step gets its own limit or what is left of the
# budget, whichever is less. Limits (seconds): BUILD_TIMEOUT=180 (the build is the largest part, and
# pip's editable build compiles in a temporary folder, so a build cut short starts over),
# TESTS_TIMEOUT=60, SANITIZE_TIMEOUT=30 for each tool, BENCH_TIMEOUT=90. BENCH_ARGS (default `--min-run-time 0.3`) go to benchmarks/run.py;
# SANITIZER_FILTER (default kns=cvops: only cvops's own kernels are instrumented) goes to
# compute-sanitizer --kernel-name, empty for every kernel. Exit status 0 when every step passed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

usage="usage: bash scripts/gpu_check.sh RESULTS_DIR [FAMILY ...]"
[ $# -ge 1 ] || { echo "$usage" >&2; exit 2; }
mkdir -p "$1" || exit 2
out=$(cd "$1" && pwd)
shift
families=("$@")
known=()
for dir in csrc/*/; do
  dir=${dir%/}
  dir=${dir#csrc/}
  [ "$dir" = common ] || known+=("$dir")
done
for family in "${families[@]}"; do
  [[ " ${known[*]} " == *" $family "* ]] || { echo "unknown family '$family' (one of: ${known[*]})" >&2; exit 2; }
done

PY=${PYTHON:-python3}
budget=${GPU_CHECK_BUDGET:-330}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16} PYTHONUNBUFFERED=1
export FORCE_CUDA=1  # a missing nvcc must fail the build, not quietly build for CPU only
: >"$out/build.log"; : >"$out/tests.log"; : >"$out/sanitize.log"; : >"$out/bench.log"
rows=()    # one summary line per step
failed=()  # logs of the steps that did not pass
failed_logs=()

# run_step LIMIT LOG COMMAND...: runs COMMAND under timeout, appending to LOG; sets rc and secs.
run_step() {
  local limit=$1 log=$2 left=$((budget - SECONDS)) start=$SECONDS
  shift 2
  [ "$limit" -le "$left" ] || limit=$left
  if [ "$limit" -lt 10 ]; then
    rc=skip secs=0
    return
  fi
  { printf '$'; printf ' %q' "$@"; printf '   (limit %ss)\n' "$limit"; } >>"$log"
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  rc=$? secs=$((SECONDS - start))
  [ "$rc" != 124 ] && [ "$rc" != 137 ] || rc="timeout after ${limit}s"
}

# note NAME LOG DETAIL [OK_CODE...]: records the step that run_step just ran.
note() {
  local name=$1 log=$2 detail=$3 status
  shift 3
  case " 0 $* " in
    *" $rc "*) status=ok ;;
    *)
      case $rc in
        skip) status="SKIPPED (budget spent)" ;;
        missing) status="NOT RUN" ;;
        timeout*) status="TIMEOUT (${rc#timeout })" ;;
        *) status="FAILED (exit $rc)" ;;
      esac
      failed+=("$log")
      ;;
  esac
  rows+=("$(printf '%-10s %-24s %5ss  %-13s %s' "$name" "$status" "$secs" "$(basename "$log")" "$detail")")
}

# The last line of LOG matching PATTERN, for the summary.
last_line() { grep -E "$2" "$1" 2>/dev/null | tail -1 | sed 's/^=* *//; s/ *=*$//'; }

# ---- versions -------------------------------------------------------------------------------------
{
  echo "date: $(date -Is)"
  echo "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
  "$PY" -c 'import sys, torch, setuptools; print(f"python {sys.version.split()[0]} ({sys.executable}), torch {torch.__version__} (CUDA {torch.version.cuda}), setuptools {setuptools.__version__}")' 2>&1
  echo "nvcc: $(nvcc --version 2>&1 | tail -1)"
  echo "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS families: ${families[*]:-all}"
} >"$out/versions.tmp"
# pyproject's license is an SPDX string, which setuptools reads from version 77 on.
"$PY" -c 'import setuptools, sys; sys.exit(int(setuptools.__version__.split(".")[0]) < 77)' 2>/dev/null \
  || echo "WARNING: setuptools < 77 cannot read pyproject's SPDX license: carry a newer setuptools wheel" \
    >>"$out/versions.tmp"
cat "$out/versions.tmp" >>"$out/build.log"

# ---- (a) build ------------------------------------------------------------------------------------
run_step "${BUILD_TIMEOUT:-180}" "$out/build.log" \
  "$PY" -m pip install -v --no-build-isolation --no-deps --no-index -e .
build_rc=$rc
note build "$out/build.log" "$(last_line "$out/build.log" '^Successfully installed|^ERROR|error:')"
[ "$build_rc" != 0 ] || "$PY" -m cvops.info >>"$out/build.log" 2>&1

# ---- (b) CUDA tests -------------------------------------------------------------------------------
tests=()
for family in "${families[@]}"; do
  for file in tests/test_"$family"*.py; do [ -e "$file" ] && tests+=("$file"); done
  for src in csrc/"$family"/*; do
    stem=$(basename "${src%.*}")
    [ -e "tests/test_$stem.py" ] && tests+=("tests/test_$stem.py")
  done
done
[ "${#tests[@]}" -eq 0 ] || mapfile -t tests < <(printf '%s\n' "${tests[@]}" | sort -u)
if [ "${#families[@]}" -gt 0 ] && [ "${#tests[@]}" -eq 0 ]; then
  rc=0 secs=0
  note tests "$out/tests.log" "no test file for ${families[*]}"
  no_tests=1
else
  no_tests=0
  echo "test files: ${tests[*]:-all of tests/}" >>"$out/tests.log"
  run_step "${TESTS_TIMEOUT:-60}" "$out/tests.log" "$PY" -m pytest -m cuda -q -p no:cacheprovider "${tests[@]}"
  # exit 5: no test collected
  note tests "$out/tests.log" "$(last_line "$out/tests.log" '[0-9]+ (passed|failed|errors?|skipped|deselected)|no tests ran')" 5
fi

# ---- (c) compute-sanitizer over the sanitize-marked tests ----------------------------------------
sanitizer=$(command -v compute-sanitizer)
for candidate in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
  [ -n "$sanitizer" ] || [ ! -x "$candidate" ] || sanitizer=$candidate
done
filter=()
if [ -n "$sanitizer" ] && [ -n "${SANITIZER_FILTER-kns=cvops}" ]; then
  filter=(--kernel-name "${SANITIZER_FILTER-kns=cvops}")
  # A filter this compute-sanitizer does not take would fail both runs: check it on a no-op first.
  "$sanitizer" "${filter[@]}" true >/dev/null 2>&1 || {
    echo "compute-sanitizer refused ${filter[*]}: every kernel is instrumented" >>"$out/sanitize.log"
    filter=()
  }
fi
for tool in memcheck racecheck; do
  if [ -z "$sanitizer" ]; then
    rc=missing secs=0
    note "$tool" "$out/sanitize.log" "compute-sanitizer is not on this machine"
    continue
  fi
  if [ "$no_tests" = 1 ]; then
    rc=0 secs=0
    note "$tool" "$out/sanitize.log" "no test file for ${families[*]}"
    continue
  fi
  echo "==== $tool" >>"$out/sanitize.log"
  # Without the caching allocator every tensor is its own cudaMalloc, so memcheck sees its bounds
  # (a read past a tensor's end inside a cached block would go unseen).
  no_cache=()
  [ "$tool" != memcheck ] || no_cache=(PYTORCH_NO_CUDA_MEMORY_CACHING=1)
  run_step "${SANITIZE_TIMEOUT:-30}" "$out/sanitize.log" env "${no_cache[@]}" \
    "$sanitizer" --tool "$tool" --error-exitcode 86 "${filter[@]}" \
    "$PY" -m pytest -m "cuda and sanitize" -q -p no:cacheprovider "${tests[@]}"
  detail=$(sed -n "/^==== $tool/,\$p" "$out/sanitize.log" | grep -E 'SUMMARY|[0-9]+ (passed|failed)|no tests ran' | tail -2 \
    | sed 's/^=* *//; s/ *=*$//' | paste -sd ';' -)
  [ "$rc" != 86 ] || detail="sanitizer errors: $detail"
  [ "$rc" != 5 ] || detail="no test is marked sanitize"
  note "$tool" "$out/sanitize.log" "$detail" 5
done

# ---- (d) GPU benchmark report ---------------------------------------------------------------------
only=()
for family in "${families[@]}"; do only+=(--only "$family"); done
bench_default="--min-run-time 0.3"
read -r -a bench_args <<<"${BENCH_ARGS-$bench_default}"
json=$out/bench_cuda.json
rm -f "$json" "$out/bench_cuda.md" "$out/bench_cuda.png"
run_step "${BENCH_TIMEOUT:-90}" "$out/bench.log" "$PY" benchmarks/run.py --device cuda "${only[@]}" \
  "${bench_args[@]}" --json "$json" --markdown "$out/bench_cuda.md" --plot "$out/bench_cuda.png"
bench_rc=$rc bench_secs=$secs
if [ "$bench_rc" != 0 ] && [ -s "$json" ]; then
  # Cut short: table and chart of the cases it finished (run.py rewrites the JSON after each).
  timeout 30 "$PY" benchmarks/run.py --plot-from "$json" --markdown "$out/bench_cuda.md" \
    --plot "$out/bench_cuda.png" >>"$out/bench.log" 2>&1
fi
rc=$bench_rc secs=$bench_secs
cases=$("$PY" -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["rows"]))' "$json" 2>/dev/null || echo 0)
warning=$(last_line "$out/bench.log" '^WARNING: ' | cut -c1-80)
note bench "$out/bench.log" "$cases cases timed${warning:+; $warning}"

# ---- summary --------------------------------------------------------------------------------------
{
  cat "$out/versions.tmp"
  echo
  printf '%-10s %-24s %6s  %-13s %s\n' step status time log detail
  printf '%s\n' "${rows[@]}"
  echo "total ${SECONDS}s of a ${budget}s budget; results in $out"
} >"$out/summary.txt"
rm -f "$out/versions.tmp"
[ "${#failed[@]}" -eq 0 ] || mapfile -t failed_logs < <(printf '%s\n' "${failed[@]}" | sort -u)
for log in "${failed_logs[@]}"; do
  echo "---- last lines of $(basename "$log")"
  tail -20 "$log"
done
echo
cat "$out/summary.txt"
[ "${#failed[@]}" -eq 0 ]
