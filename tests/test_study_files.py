"""The study-files vocabulary: the one outcome rule in every case it decides, and the tolerant
reader of result.json. No Ray, no files: the rule is a pure function of what a study leaves."""
from __future__ import annotations

import json
import math

import pytest

from plvae import metrics as M
from plvae import study_files as F

ERROR_TXT = "Failure # 1 (occurred at 2026-01-01_10-00-05)\nTraceback ...\nRayActorError: worker died\n"


def rows(n: int, start: str = "2026-01-01_10-00-0", **last) -> list[dict]:
    """n reported epochs, dated one second apart from <start>0, the last one updated with `last`."""
    out = [{F.TRAINING_ITERATION: e, M.VAL_LOSS: 1.0 / e, F.DATE: f"{start}{e}"} for e in range(1, n + 1)]
    if out:
        out[-1].update(last)
    return out


# ---------------------------------------------------------------------------- with a Tune status
@pytest.mark.parametrize("status,n,expected", [
    (F.TUNE_TERMINATED, 3, M.COMPLETED),       # TERMINATED and its last epoch reported
    (F.TUNE_TERMINATED, 2, M.EARLY_STOPPED),   # TERMINATED before max_epochs: the scheduler stopped it
    (F.TUNE_RUNNING, 2, M.RUNNING),
    (F.TUNE_PENDING, 0, M.RUNNING),
    (F.TUNE_PAUSED, 1, M.RUNNING),
    (F.TUNE_ERROR, 1, M.ERRORED),
])
def test_tune_status_and_epochs_reached(status, n, expected):
    assert F.trial_outcome(status, rows(n), 3) == expected
    assert F.trial_outcome(status, rows(n)[-1] if n else {}, 3) == expected   # the last result alone


def test_all_epochs_reported_while_tune_still_says_running_is_completed():
    """The disagreement of the old copies (review 1.2 item 1): the driver was killed after the
    last report, so Tune's saved state still says RUNNING; study.json used to say running while
    the analysis said completed. Both now read completed."""
    for status in F.TUNE_UNFINISHED + (None,):
        assert F.trial_outcome(status, rows(3), 3) == M.COMPLETED
        assert F.trial_outcome(status, rows(3), 3, F.STUDY_INTERRUPTED) == M.COMPLETED


def test_an_error_txt_of_a_retried_trial_is_no_outcome():
    """The other disagreement (issue 21): Tune leaves error.txt after a retry; the analysis ranked
    it above TERMINATED and the epochs reached, so a study whose workers were killed was all
    'errored'. A retried trial is completed, or early-stopped, as Tune says."""
    assert F.trial_outcome(F.TUNE_TERMINATED, rows(3), 3, F.STUDY_FINISHED, error_text=ERROR_TXT) == M.COMPLETED
    assert F.trial_outcome(F.TUNE_TERMINATED, rows(2), 3, error_text=ERROR_TXT) == M.EARLY_STOPPED
    assert F.trial_outcome(F.TUNE_RUNNING, rows(3), 3, error_text=ERROR_TXT) == M.COMPLETED
    assert F.trial_outcome(None, rows(3), 3, error_text=ERROR_TXT) == M.COMPLETED   # no study.json either
    assert F.trial_outcome(F.TUNE_RUNNING, rows(2), 3, error_text=ERROR_TXT) == M.RUNNING
    # Only Tune's final ERROR makes it errored, whatever the epochs.
    assert F.trial_outcome(F.TUNE_ERROR, rows(3), 3, error_text=ERROR_TXT) == M.ERRORED


def test_divergence_is_an_outcome_at_any_epoch_and_error_still_ranks_first():
    diverged_early = rows(3)
    diverged_early[0][M.DIVERGED] = 1.0
    assert F.trial_outcome(F.TUNE_TERMINATED, diverged_early, 3) == M.DIVERGED_OUTCOME  # not completed
    assert F.trial_outcome(F.TUNE_TERMINATED, rows(2, **{M.TRAIN_LOSS: math.nan}), 5) == M.DIVERGED_OUTCOME
    assert F.trial_outcome(F.TUNE_RUNNING, rows(1, **{M.DIVERGED: 1.0}), 5) == M.DIVERGED_OUTCOME
    assert F.trial_outcome(None, rows(1, **{M.VAL_LOSS: math.inf}), 5) == M.DIVERGED_OUTCOME
    assert F.trial_outcome(F.TUNE_ERROR, rows(1, **{M.DIVERGED: 1.0}), 5) == M.ERRORED


def test_unknown_max_epochs():
    assert F.trial_outcome(F.TUNE_TERMINATED, rows(2), None) == M.COMPLETED   # nothing says it stopped early
    assert F.trial_outcome(F.TUNE_RUNNING, rows(2), None) == M.RUNNING
    assert F.trial_outcome(None, rows(2), None, F.STUDY_FINISHED) == M.COMPLETED


# ---------------------------------------------------------------------------- without a Tune status
def test_without_tune_status_an_error_txt_with_no_later_result_is_errored():
    assert F.trial_outcome(None, rows(2), 3, error_text=ERROR_TXT) == M.ERRORED          # failed after epoch 2
    assert F.trial_outcome(None, rows(2), 3, F.STUDY_FINISHED, error_text=ERROR_TXT) == M.ERRORED
    assert F.trial_outcome(None, [], 3, error_text="") == M.ERRORED                       # present, unreadable
    undated = [{F.TRAINING_ITERATION: 1}]
    assert F.trial_outcome(None, undated, 3, error_text=ERROR_TXT) == M.ERRORED          # nothing can follow it
    # Results dated after the last failure: the trial was retried and went on.
    later = rows(2, start="2026-01-01_10-00-1")                                           # 10-00-11, 10-00-12
    assert F.trial_outcome(None, later, 3, F.STUDY_INTERRUPTED, error_text=ERROR_TXT) == M.RUNNING
    assert F.trial_outcome(None, later, 3, F.STUDY_FINISHED, error_text=ERROR_TXT) == M.EARLY_STOPPED
    two = ERROR_TXT + "Failure # 2 (occurred at 2026-01-01_10-00-20)\nworker died\n"
    assert F.trial_outcome(None, later, 3, F.STUDY_FINISHED, error_text=two) == M.ERRORED  # failed again after them


@pytest.mark.parametrize("study_status,done,expected", [
    (F.STUDY_RUNNING, False, M.RUNNING),
    (F.STUDY_INTERRUPTED, False, M.RUNNING),
    (F.STUDY_CLAIMED, False, M.RUNNING),
    (F.STUDY_RUNNING, True, M.EARLY_STOPPED),
    (F.STUDY_FINISHED, False, M.EARLY_STOPPED),
    (None, True, M.EARLY_STOPPED),
    (None, False, M.RUNNING),
])
def test_without_tune_status_the_study_status_and_done_decide(study_status, done, expected):
    assert F.trial_outcome(None, rows(2, **{F.DONE: done}), 3, study_status) == expected


def test_an_unknown_tune_state_counts_as_no_status():
    assert F.trial_outcome("LOST", rows(2), 3, F.STUDY_FINISHED) == M.EARLY_STOPPED
    assert F.trial_outcome("LOST", rows(2), 3, F.STUDY_RUNNING) == M.RUNNING


def test_every_outcome_is_one_of_the_outcomes():
    seen = set()
    for status in F.TUNE_STATES + (None,):
        for study in F.STUDY_STATUSES + (None,):
            for n in (0, 2, 3):
                for err in (None, ERROR_TXT):
                    seen.add(F.trial_outcome(status, rows(n), 3, study, error_text=err))
    assert seen == set(M.OUTCOMES) - {M.DIVERGED_OUTCOME}


# ---------------------------------------------------------------------------- reading
def test_result_lines_skip_torn_and_invalid_lines_and_say_which():
    good = [json.dumps({F.TRAINING_ITERATION: e}) for e in (1, 2)]
    text = "\n".join([good[0], "", "[1, 2]", good[1], '{"training_iter'])
    parsed, bad = F.read_result_lines(text)
    assert [r[F.TRAINING_ITERATION] for r in parsed] == [1, 2]
    assert bad == [3, 5]                                          # the list and the torn last line
    assert F.read_result_lines(text.encode()) == (parsed, bad)    # bytes as they come from storage
    assert F.read_result_lines(b"\xff\xfe{") == ([], [1])
    assert F.read_result_lines("") == ([], [])
    assert F.epochs_reported(parsed + [{F.TRAINING_ITERATION: "x"}, {}]) == 2


def test_failures_are_counted_from_error_txt():
    assert F.failures(None) == [] and F.failures("garbage") == []
    two = ERROR_TXT + "Failure # 2 (occurred at 2026-01-01_10-00-20)\nworker died\n"
    assert F.failures(two) == ["2026-01-01_10-00-05", "2026-01-01_10-00-20"]
