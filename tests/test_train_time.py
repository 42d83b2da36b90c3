"""train_time_s (plvae.metrics.TRAIN_TIME_S): seconds since the trial's first training step, so the
time a trial spends before it trains (a fresh worker's warm-up, set-up, the initial validation)
never counts, while time spent training does; a resumed trial continues its clock. Real Lightning
trainers on tiny data; the delays are real sleeps in callbacks."""
import time

import pytorch_lightning as pl

from plvae import metrics as M
from plvae.config import TrialConfig
from plvae.model import train

TINY = dict(dataset="digits", image_size=8, channels=1, latent_dim=4, hidden_dims=(8, 16), enc_out_dim=32,
            batch_size=64, max_epochs=2, lr=3e-3)


class Sleep(pl.Callback):
    """Sleeps `before` seconds when training starts (before the first step) and `during` seconds
    after the first training batch; records train_time_s at each train-epoch end."""

    def __init__(self, before=0.0, during=0.0):
        self.before, self.during, self.seen = before, during, []

    def on_train_start(self, trainer, pl_module):
        time.sleep(self.before)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 0 and batch_idx == 0:
            time.sleep(self.during)

    def on_train_epoch_end(self, trainer, pl_module):
        self.seen.append(float(trainer.callback_metrics[M.TRAIN_TIME_S]))


def test_time_before_the_first_step_is_left_out_and_training_time_counts():
    before = Sleep(before=1.5)
    t0 = time.perf_counter()
    train(TrialConfig(**TINY), callbacks=[before])
    wall = time.perf_counter() - t0
    assert before.seen[0] > 0 and before.seen[1] > before.seen[0]
    assert before.seen[-1] < wall - 1.5, (before.seen, wall)   # the sleep before the first step is not in it

    during = Sleep(during=1.5)
    train(TrialConfig(**TINY), callbacks=[during])
    assert during.seen[0] >= 1.5, during.seen                   # a slow first step is training time


def test_a_resumed_trial_continues_its_clock(tmp_path):
    first = Sleep(during=1.0)
    ckpt = tmp_path / "epoch1.ckpt"

    class SaveAtEpochEnd(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            trainer.save_checkpoint(ckpt)

    train(TrialConfig(**{**TINY, "max_epochs": 1}), callbacks=[first, SaveAtEpochEnd()])
    resumed = Sleep()
    train(TrialConfig(**TINY), callbacks=[resumed], ckpt_path=str(ckpt))
    assert len(resumed.seen) == 1 and resumed.seen[0] > first.seen[0] >= 1.0, (first.seen, resumed.seen)
