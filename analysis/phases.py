"""One tuning protocol run as two studies (issue 18): which studies the analysis treats as one.

tune/tuning.py's ``phase`` lets a protocol run as a tuning study (the tuning seeds over every arm's
whole grid) and then an evaluation study (the evaluation seeds at each arm's pick and above, the
configuration ``python -m analysis.tuned_plan`` writes from the tuning study). Loaded together
(``analysis.load.load_studies``), the two are one study: one context, one protocol.
"""
from __future__ import annotations

import json
from typing import Optional


def _tuning(meta: dict) -> dict:
    return dict((meta.get("study_config") or {}).get("tuning") or meta.get("tuning") or {})


def phase_labels(metas: list, names: list) -> tuple[list, Optional[dict]]:
    """Each study's label in the ``study`` column, and the one protocol they share (or None).

    A protocol run in two phases (``tuning.phase``: a tuning study, then an evaluation study at the
    tuning study's picks; tune/tuning.py) is one study to the analysis: studies whose protocols agree
    but for the phase, and whose phases together cover tuning and evaluation, get one label (their
    names joined by ``+``), so the tuning seeds pick and the evaluation seeds report within one
    context. Any other study keeps its own name, and its own context."""
    protos = [_tuning(m) for m in metas]
    key = [json.dumps({k: v for k, v in t.items() if k != "phase"}, sort_keys=True, default=str) if t else None
           for t in protos]
    labels = list(names)
    shared = None
    for k in dict.fromkeys(x for x in key if x is not None):
        members = [i for i, x in enumerate(key) if x == k]
        phases = {protos[i].get("phase", "both") for i in members}
        if len(members) > 1 and phases == {"tuning", "evaluation"}:
            joined = " + ".join(names[i] for i in members)
            for i in members:
                labels[i] = joined
            if len(members) == len(metas):
                shared = {**{kk: v for kk, v in protos[members[0]].items() if kk != "phase"}, "phase": "both"}
    return labels, shared
