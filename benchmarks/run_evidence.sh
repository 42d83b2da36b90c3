#!/usr/bin/env bash
# The evidence studies behind README's "Results": real data (every variant) and the synthetic
# power-law data at four exponents, each opened with the analysis package. Run from the repository
# root with the project's venv (make setup). About an hour in all on a 2-core machine (each
# preset's sizing is in its YAML). Then: python benchmarks/evidence_summary.py
#   bash benchmarks/run_evidence.sh [real] [synthetic]      (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-results/evidence}
export RAY_USAGE_STATS_ENABLED=0
what=("$@"); [ ${#what[@]} -gt 0 ] || what=(real synthetic)

for w in "${what[@]}"; do
  case "$w" in
    real)
      $PY tune/run_study.py --preset evidence_real --storage-path "$OUT" --study-name real --no-dashboard --verbose 0
      $PY -m analysis "$OUT/real"
      ;;
    synthetic)
      for a in 0.5 1.0 1.5 2.0; do
        $PY tune/run_study.py --preset evidence_synthetic --data-alpha "$a" \
          --storage-path "$OUT" --study-name "synthetic_a$a" --no-dashboard --verbose 0
        $PY -m analysis "$OUT/synthetic_a$a"
      done
      ;;
    *) echo "unknown part: $w (allowed: real, synthetic)" >&2; exit 2 ;;
  esac
done
