#!/usr/bin/env bash
# The tuned-against-tuned studies behind README's first Results paragraph (issue 18), each in two
# phases of one protocol (tune/tuning.py's phase; docs/results/tuned_protocol.md): the tuning seeds
# over every arm's whole lr grid, then the evaluation seeds at each arm's pick and above
# (python -m analysis.tuned_plan). Run from the repository root with the project's venv (make setup),
# the machine otherwise quiet. Then: python benchmarks/evidence_summary.py --tuned-root "$OUT".
#   bash benchmarks/run_tuned.sh [real64] [synthetic_a1] [real16] [synthetic_a2] [colour64]
#   (default: real64 synthetic_a1, the two run for README; ~75 and ~50 minutes on 2 cores)
# A phase whose study finished is skipped and one that was stopped is resumed (--resume), so the
# script can be run again after an interruption.
# ABOVE=N: the evaluation seeds run at each pick and the N grid values above it (default: all).
# synthetic_a1 runs with ABOVE=1 (ABOVE_SYNTHETIC) to fit the session it was run in: its stable
# range further up rests on the tuning seeds, which stable_lr.csv's run counts show.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-results/tuned}
export RAY_USAGE_STATS_ENABLED=0
what=("$@"); [ ${#what[@]} -gt 0 ] || what=(real64 synthetic_a1)

finished() { [ -f "$OUT/$1/study.json" ] && grep -q '"status": "finished"' "$OUT/$1/study.json"; }

phase() {   # study_name [run_study options...]: skip it when finished, resume it when it was stopped
  local study=$1; shift
  if finished "$study"; then return; fi
  local again=(); [ -f "$OUT/$study/study.json" ] && again=(--resume)
  $PY tune/run_study.py "$@" "${again[@]}" --storage-path "$OUT" --study-name "$study" --no-dashboard --verbose 0
}

two_phases() {   # name preset [run_study options...]
  local name=$1 preset=$2; shift 2
  phase "${name}_tuning" --preset "$preset" "$@"
  $PY -m analysis.tuned_plan "$OUT/${name}_tuning" --out "$OUT/${name}_evaluation.yaml" ${ABOVE:+--above "$ABOVE"}
  phase "${name}_evaluation" --preset "$preset" --config "$OUT/${name}_evaluation.yaml" "$@"
  $PY -m analysis "$OUT/${name}_tuning" "$OUT/${name}_evaluation"
}

for w in "${what[@]}"; do
  case "$w" in
    real64) two_phases tuned_real64 tuned_real ;;
    real16) two_phases tuned_real16 tuned_real --latent-dims 16 ;;
    colour64) two_phases tuned_colour64 tuned_real --image-size 32 --channels 3 ;;
    synthetic_a1) ABOVE=${ABOVE_SYNTHETIC-1} two_phases tuned_synthetic_a1 tuned_synthetic --data-alpha 1 ;;
    synthetic_a2) two_phases tuned_synthetic_a2 tuned_synthetic --data-alpha 2 ;;
    *) echo "unknown part: $w (allowed: real64, real16, colour64, synthetic_a1, synthetic_a2)" >&2; exit 2 ;;
  esac
done
