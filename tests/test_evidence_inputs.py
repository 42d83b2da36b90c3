"""benchmarks/evidence_summary.py --from-csv on damaged inputs: one line, never a rebuild from a
truncated trials.csv (issue 21)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import evidence_summary as ev  # noqa: E402

HEADER = "study,trial_id,status,diverged,diverged_epoch,val_loss@0,val_loss@1\n"


def write(tmp_path, csv_text, meta) -> tuple[str, str]:
    (tmp_path / "trials.csv").write_text(csv_text)
    (tmp_path / "studies.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    return str(tmp_path / "trials.csv"), str(tmp_path / "studies.json")


ROWS = "".join(f"real,t{i},completed,False,,2.0,1.0\n" for i in range(45))


@pytest.mark.parametrize("csv_text,meta,needle", [
    (ROWS[: ROWS.index("t13,") - 3], {"real": {"n_trials": 45}}, "cut short"),                # mid-row
    (HEADER + "".join(ROWS.splitlines(keepends=True)[:13]), {"real": {"n_trials": 45}}, "real (13 of 45 trials)"),
    ("", {"real": {}}, "EmptyDataError"),
    (HEADER + ROWS, "{broken", "JSONDecodeError"),
    ("study,trial_id\nreal,t0\n", {"real": {}}, "lacks the column(s)"),
    (HEADER + ROWS, [1, 2], "not a JSON object of studies")])
def test_damaged_inputs_are_one_line(tmp_path, csv_text, meta, needle):
    if csv_text.startswith("real"):
        csv_text = HEADER + csv_text
    with pytest.raises(SystemExit) as e:
        ev.read_inputs(*write(tmp_path, csv_text, meta))
    msg = str(e.value.code)
    assert msg.startswith("error: ") and needle in msg and "\n" not in msg, msg


def test_intact_inputs_load(tmp_path):
    trials, meta = ev.read_inputs(*write(tmp_path, HEADER + ROWS, {"real": {"n_trials": 45}}))
    assert len(trials) == 45 and meta["real"]["n_trials"] == 45
    trials, _ = ev.read_inputs(*write(tmp_path, HEADER + ROWS, {"real": {}}))   # older studies.json: no count
    assert len(trials) == 45
