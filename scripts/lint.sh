#!/usr/bin/env bash
# Lint and format check of the Python (ruff, [tool.ruff] in pyproject.toml) and of csrc/
# (clang-format, .clang-format); exits non-zero when anything would change.
#   scripts/lint.sh          check only
#   scripts/lint.sh --fix    apply the fixes and the formatting
# The tools are the ones bootstrap.sh pins, from .venv (RUFF / CLANG_FORMAT override).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
RUFF=${RUFF:-.venv/bin/ruff}
CLANG_FORMAT=${CLANG_FORMAT:-.venv/bin/clang-format}
fix=0
case "${1:-}" in
  --fix) fix=1 ;;
  "") ;;
  *) echo "usage: scripts/lint.sh [--fix]" >&2; exit 2 ;;
esac
for tool in "$RUFF" "$CLANG_FORMAT"; do
  command -v "$tool" >/dev/null || { echo "lint: $tool not found (run scripts/bootstrap.sh)" >&2; exit 2; }
done
mapfile -d '' -t cxx < <(find csrc -type f \( -name '*.h' -o -name '*.cpp' -o -name '*.cu' -o -name '*.cuh' \) \
  -print0 | sort -z)

status=0
if [ "$fix" = 1 ]; then
  # Fixes first: removing or sorting imports can leave lines the formatter then rewraps.
  "$RUFF" check --fix . || status=1
  "$RUFF" format . || status=1
  [ "${#cxx[@]}" -eq 0 ] || "$CLANG_FORMAT" -i --style=file "${cxx[@]}" || status=1
else
  "$RUFF" check . || status=1
  "$RUFF" format --check . || status=1
  [ "${#cxx[@]}" -eq 0 ] || "$CLANG_FORMAT" --dry-run -Werror --style=file "${cxx[@]}" || status=1
fi
[ "$status" = 0 ] && echo "lint: clean" || echo "lint: FAILED (scripts/lint.sh --fix applies the fixes)" >&2
exit $status
