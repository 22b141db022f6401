#!/usr/bin/env bash
# Other CPUs on one machine: run the notebooks' tests (nbdev-test) and the pytest tests that train (marker `trains`)
# under settings that stand in for other CPUs, and print a pass/fail table. A test that passes here in every row does
# not depend on which kernels, ISA or thread count the machine it meets has.
#
#   tools/cpu_matrix.sh                 # every configuration (about 30 minutes on 2 cores)
#   tools/cpu_matrix.sh own ci-unlike   # some of them, by name
#   tools/cpu_matrix.sh --list          # the configurations and what each stands in for
#   NOTEBOOKS_ONLY=1 tools/cpu_matrix.sh   # nbdev-test only (about 1 minute a configuration)
#
# Logs go to ${MATRIX_OUT:-_cpu_matrix}/<config>.{nbdev,pytest}.log; the table to ${MATRIX_OUT:-_cpu_matrix}/table.md.
# Exit status: 0 when every row passed, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."

# name | environment | what it stands in for
CONFIGS=(
  "own||this machine as it is"
  "isa-avx2|ONEDNN_MAX_CPU_ISA=AVX2|oneDNN on a CPU without AVX-512 (no AVX-512 BF16, no AMX): its AVX2 convolutions"
  "isa-avx512|ONEDNN_MAX_CPU_ISA=AVX512_CORE|oneDNN on an AVX-512 CPU without VNNI, BF16 or AMX (Skylake-X)"
  "aten-default|ATEN_CPU_CAPABILITY=default|ATen's kernels without vector instructions (a CPU torch has no SIMD build for)"
  "aten-avx2|ATEN_CPU_CAPABILITY=avx2|ATen's AVX2 kernels (a CPU without AVX-512)"
  "threads-1|OMP_NUM_THREADS=1|one thread (a Dask or SLURM worker of one core)"
  "threads-2|OMP_NUM_THREADS=2|two threads (other reductions' order)"
  "bf16-0|NOISEKD_CPU_BF16=0|a CPU without native bf16: the fast path stays fp32"
  "bf16-1|NOISEKD_CPU_BF16=1|a CPU with native bf16 (AVX-512 BF16, AMX, Arm BF16): bf16 autocast and channels_last"
  "ci-unlike|ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=AVX2 OMP_NUM_THREADS=1 NOISEKD_CPU_BF16=0|all at once, unlike any usual machine (what .ci/run adds)"
)

if [[ "${1:-}" == "--list" ]]; then
  for c in "${CONFIGS[@]}"; do IFS='|' read -r name envs why <<<"$c"; printf '%-13s %-90s %s\n' "$name" "${envs:-(nothing set)}" "$why"; done
  exit 0
fi

want=("$@")
for w in "${want[@]}"; do
  found=0; for c in "${CONFIGS[@]}"; do [[ "${c%%|*}" == "$w" ]] && found=1; done
  if (( ! found )); then echo "Unknown configuration '$w'; run tools/cpu_matrix.sh --list for the names." >&2; exit 2; fi
done

OUT=${MATRIX_OUT:-_cpu_matrix}; mkdir -p "$OUT"
flags=$(grep -o -w 'avx2\|avx512f\|avx512_bf16\|amx_bf16\|amx_tile\|amx_int8' /proc/cpuinfo 2>/dev/null | sort -u | tr '\n' ' ')
model=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | xargs)
{
  echo "CPU: ${model:-unknown}, $(nproc) cores; flags: ${flags:-none of avx2/avx512f/avx512_bf16/amx}"
  echo "torch $(python -c 'import torch; print(torch.__version__, "ATen", torch.backends.cpu.get_cpu_capability())' 2>/dev/null); $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "| configuration | environment | nbdev-test | pytest -m trains |"
  echo "|---|---|---|---|"
} > "$OUT/table.md"

status=0
run_one() {   # $1: log file, rest: command; prints "pass (N s)" or "FAIL (N s)"
  local log=$1; shift; local t0=$SECONDS
  if env "${envs_arr[@]}" "$@" > "$log" 2>&1; then echo "pass ($((SECONDS - t0)) s)"; else echo "FAIL ($((SECONDS - t0)) s)"; fi
}
for c in "${CONFIGS[@]}"; do
  IFS='|' read -r name envs why <<<"$c"
  if (( ${#want[@]} )) && [[ ! " ${want[*]} " == *" $name "* ]]; then continue; fi
  read -r -a envs_arr <<<"$envs"
  echo "== $name: ${envs:-(nothing set)}  ($why)"
  nb=$(run_one "$OUT/$name.nbdev.log" nbdev-test)
  if [[ -n "${NOTEBOOKS_ONLY:-}" ]]; then py="not run"
  else py=$(run_one "$OUT/$name.pytest.log" python -m pytest -m trains -p no:cacheprovider -q -rP); fi   # -rP: passing tests' prints (margins)
  echo "   nbdev-test: $nb; pytest -m trains: $py"
  for kind in nbdev pytest; do   # a failure shows its end here, so a CI log says what failed
    r=$nb; [[ $kind == pytest ]] && r=$py
    if [[ "$r" == FAIL* ]]; then status=1; echo "---- the end of $OUT/$name.$kind.log:"; tail -n 40 "$OUT/$name.$kind.log"; fi
  done
  echo "| $name | ${envs:-(nothing set)} | $nb | $py |" >> "$OUT/table.md"
done
echo; cat "$OUT/table.md"
(( status )) && echo "Some configuration failed: its log is in $OUT/." >&2
exit $status
