"""The standard stabilisers, warm-up and gradient clipping, as trial options (issue 18, part 1):
checked against hand-computed learning rates and gradient norms during real tiny Lightning fits,
off by default to the bit, refused in one line when bad, and sweepable from the command line."""
from __future__ import annotations

import copy
import math

import pytest
import pytorch_lightning as pl
import torch
import yaml

from plvae import metrics as M
from plvae.config import ConfigError, TrialConfig
from plvae.data import VAEDataModule
from plvae.model import PowerLawVAE, make_trainer, quiet_lightning, train
from tune.cli import config_from_args
from tune.run_study import main

TINY = dict(dataset="digits", image_size=8, channels=1, latent_dim=4, hidden_dims=(8, 16), enc_out_dim=32,
            batch_size=64, max_epochs=1, lr=3e-3)


def tiny(**kw) -> TrialConfig:
    return TrialConfig(**{**TINY, **kw})


def total_norm(tensors) -> float:
    """The total 2-norm over all tensors, by hand (in float64)."""
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in tensors))


class Steps(pl.Callback):
    """Per optimiser step: the learning rate the step uses, the loss, and (with ``check_adam``) the
    gradient before and after Lightning's clipping and whether the update is Adam's on the
    hand-clipped gradient. Lightning calls ``on_before_optimizer_step`` after backward and before
    clipping; the optimizer's step post-hook runs after the update, with the (clipped) gradients
    still in ``.grad``."""

    def __init__(self, clip=None, check_adam=False):
        self.clip, self.check_adam = clip, check_adam
        self.lrs, self.losses, self.pre, self.post, self.adam_ok = [], [], [], [], []
        self._snap = None

    def on_train_start(self, trainer, module):
        trainer.optimizers[0].register_step_post_hook(self._after_step)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.lrs.append(optimizer.param_groups[0]["lr"])
        params = [p for g in optimizer.param_groups for p in g["params"]]
        grads = [p.grad.detach().clone() for p in params]
        self.pre.append(total_norm(grads))
        if self.check_adam:
            self._snap = ([p.detach().clone() for p in params], grads, copy.deepcopy(optimizer.state_dict()))

    def _after_step(self, optimizer, args, kwargs):
        params = [p for g in optimizer.param_groups for p in g["params"]]
        self.post.append(total_norm(p.grad for p in params))
        if not self.check_adam:
            return
        before, grads, state = self._snap
        norm = total_norm(grads)
        # torch's clip_grad_norm_, which Lightning calls: scale by min(1, clip / (norm + 1e-6)).
        scale = 1.0 if self.clip is None else min(1.0, self.clip / (norm + 1e-6))
        shadow = [b.clone().requires_grad_(True) for b in before]
        for s, g in zip(shadow, grads):
            s.grad = g * scale
        adam = torch.optim.Adam(shadow, lr=optimizer.param_groups[0]["lr"])
        adam.load_state_dict(state)
        adam.step()
        self.adam_ok.append(all(torch.allclose(s.detach(), p.detach(), rtol=1e-5, atol=1e-8)
                                for s, p in zip(shadow, params)))


def fit(cfg: TrialConfig, callback: pl.Callback, model_cls=PowerLawVAE, **trainer_kwargs) -> dict:
    """plvae.model.train's own steps, with a chosen model class (and trainer arguments)."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    dm, model = VAEDataModule(cfg), model_cls(cfg)
    with quiet_lightning():
        trainer = make_trainer(cfg, callbacks=[callback], **trainer_kwargs) if not trainer_kwargs.get("raw") else \
            pl.Trainer(**{k: v for k, v in trainer_kwargs.items() if k != "raw"}, callbacks=[callback])
        trainer.fit(model, datamodule=dm)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


# ---------------------------------------------------------------------------- warm-up
def test_warmup_ramps_the_learning_rate_linearly_then_holds_it():
    w, lr = 10, 3e-3
    steps = Steps()
    train(tiny(warmup_steps=w, lr=lr, max_epochs=2), callbacks=[steps])
    assert len(steps.lrs) > w + 5
    # Hand-computed: update s (from 0) uses lr * min(1, (s + 1) / w).
    expected = {0: lr / 10, 1: 2 * lr / 10, 4: 5 * lr / 10, w - 1: lr, w: lr, w + 5: lr}
    for s, value in expected.items():
        assert steps.lrs[s] == pytest.approx(value, rel=1e-9, abs=1e-15), s
    assert steps.lrs[0] < lr / 5   # from ~0
    assert all(a < b for a, b in zip(steps.lrs[:w], steps.lrs[1:w]))   # strictly rising on the ramp
    assert all(x == pytest.approx(lr, rel=1e-9) for x in steps.lrs[w - 1:])   # then constant


def test_warmup_off_keeps_the_learning_rate_constant():
    for w in (0, 1):   # a one-step ramp ends where it starts: plain Adam
        steps = Steps()
        train(tiny(warmup_steps=w), callbacks=[steps])
        assert set(steps.lrs) == {TINY["lr"]}


# ---------------------------------------------------------------------------- clipping
def test_clipping_caps_the_total_gradient_norm_and_adam_steps_on_the_clipped_gradient():
    free = Steps()
    train(tiny(max_epochs=1), callbacks=[free])
    clip = sorted(free.pre)[len(free.pre) // 2]   # the unclipped run's median norm: binds at some steps
    steps = Steps(clip=clip, check_adam=True)
    out = train(tiny(max_epochs=1, grad_clip_norm=clip), callbacks=[steps])
    assert out[M.DIVERGED] == 0.0
    assert len(steps.pre) == len(steps.post) == len(steps.adam_ok) > 10
    assert any(n > clip * 1.01 for n in steps.pre), "the clip must bind at some step for the test to mean anything"
    for pre, post in zip(steps.pre, steps.post):
        assert post == pytest.approx(min(pre, clip), rel=1e-5), (pre, post, clip)
    assert all(steps.adam_ok)
    # and the check can fail: without clipping, the post-step norms are the raw ones
    assert max(free.post) > clip * 1.01


def test_the_adam_check_fails_when_the_gradient_was_not_clipped():
    """The same hand-computed update, told of a clip that Lightning did not apply: it must disagree."""
    free = Steps()
    train(tiny(max_epochs=1), callbacks=[free])
    clip = min(free.pre) / 4
    steps = Steps(clip=clip, check_adam=True)
    train(tiny(max_epochs=1), callbacks=[steps])
    assert not all(steps.adam_ok)


# ---------------------------------------------------------------------------- off by default
class PlainAdamVAE(PowerLawVAE):
    """The model as it was before the stabilisers: Adam at cfg.lr, nothing else."""

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.cfg.lr)


def test_defaults_off_train_bit_identically_to_plain_adam_without_clipping():
    cfg = tiny(max_epochs=2)
    assert cfg.warmup_steps == 0 and cfg.grad_clip_norm is None
    assert make_trainer(cfg).gradient_clip_val is None
    assert isinstance(PowerLawVAE(cfg).configure_optimizers(), torch.optim.Adam)
    ours, before = Steps(), Steps()
    out = fit(cfg, ours)
    ref = fit(cfg, before, PlainAdamVAE, raw=True, max_epochs=2, devices=1, accelerator="auto", logger=False,
              enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
              num_sanity_val_steps=0)
    assert ours.losses == before.losses and len(ours.losses) > 20
    assert out[M.VAL_LOSS] == ref[M.VAL_LOSS]


def test_a_clip_that_never_binds_and_a_one_step_ramp_change_nothing_but_real_ones_do():
    base = Steps()
    train(tiny(), callbacks=[base])
    for kw in (dict(grad_clip_norm=1e12), dict(warmup_steps=1)):
        same = Steps()
        train(tiny(**kw), callbacks=[same])
        assert same.losses == base.losses, kw
    for kw in (dict(grad_clip_norm=min(base.pre) / 2), dict(warmup_steps=10)):
        other = Steps()
        train(tiny(**kw), callbacks=[other])
        assert other.losses[0] == base.losses[0] and other.losses != base.losses, kw


def test_divergence_with_stabilisers_is_an_outcome_not_a_crash():
    out = train(tiny(lr=1e8, max_epochs=3, warmup_steps=3, grad_clip_norm=1.0))
    assert out[M.DIVERGED] == 1.0


# ---------------------------------------------------------------------------- bad values, the CLI
@pytest.mark.parametrize("name,value", [("warmup_steps", -1), ("warmup_steps", 2.5), ("warmup_steps", True),
                                        ("warmup_steps", "10"), ("warmup_steps", 10**9),
                                        ("grad_clip_norm", 0), ("grad_clip_norm", -1.0),
                                        ("grad_clip_norm", math.nan), ("grad_clip_norm", math.inf),
                                        ("grad_clip_norm", True), ("grad_clip_norm", "1")])
def test_bad_values_are_refused_in_one_line(name, value):
    with pytest.raises(ConfigError) as e:
        tiny(**{name: value})
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{name}={value!r} is invalid; allowed: ")


@pytest.mark.parametrize("argv,field", [(["--warmup-steps", "-5"], "warmup_steps"),
                                        (["--warmup-steps", "1.5"], "warmup_steps"),
                                        (["--grad-clip-norms", "0"], "grad_clip_norm"),
                                        (["--grad-clip-norms", "off,-2"], "grad_clip_norm"),
                                        (["--set", "grad_clip_norm=1"], "grad_clip_norm")])
def test_bad_command_line_values_are_one_line_before_ray(argv, field, capsys):
    assert main(argv + ["--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and field in err[0], err


def test_a_warmup_and_clipping_sweep_is_counted_in_the_dry_run(tmp_path, capsys):
    base = ["--variants", "vae", "--seeds", "0,1,2", "--storage-path", str(tmp_path), "--dry-run"]
    assert main(base) == 0
    assert "3 trials" in capsys.readouterr().out
    assert main(base + ["--warmup-steps", "0,100"]) == 0
    out = capsys.readouterr().out
    assert "6 trials" in out and "warmup_steps=100" in out
    assert main(base + ["--warmup-steps", "0,100", "--grad-clip-norms", "none,1"]) == 0
    assert "12 trials" in capsys.readouterr().out
    cfg, _ = config_from_args(base[:-1] + ["--warmup-steps", "0,100", "--grad-clip-norms", "none,1"])
    trials = cfg.trial_dicts()
    assert {(t["warmup_steps"], t["grad_clip_norm"]) for t in trials} == {(0, None), (0, 1.0), (100, None),
                                                                          (100, 1.0)}
    assert all(TrialConfig.from_dict(t).warmup_steps == t["warmup_steps"] for t in trials)


def test_stabilisers_go_through_print_config_and_a_preset_style_file(tmp_path, capsys):
    argv = ["--variants", "vae", "--warmup-steps", "0,50", "--grad-clip-norms", "none,2.5",
            "--storage-path", str(tmp_path)]
    assert main(argv + ["--print-config"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert data["warmup_steps"] == [0, 50] and data["grad_clip_norms"] == [None, 2.5]
    f = tmp_path / "study.yaml"
    f.write_text(yaml.safe_dump({**data, "grids": [{}, {"warmup_steps": [200], "grad_clip_norms": [None]}]}))
    cfg, _ = config_from_args(["--config", str(f)])
    assert {(t["warmup_steps"], t["grad_clip_norm"]) for t in cfg.trial_dicts()} == {
        (0, None), (0, 2.5), (50, None), (50, 2.5), (200, None)}


def test_resume_refuses_a_changed_stabiliser_and_accepts_the_same_one(tmp_path, capsys):
    from tune.run_study import new_record
    from tune.study_record import TUNER_STATE, claim, prepare_resume

    argv = ["--variants", "vae", "--warmup-steps", "0,100", "--storage-path", str(tmp_path), "--study-name", "s"]
    cfg, _ = config_from_args(argv)
    rec = {**new_record(cfg), "status": "running", "heartbeat": "2020-01-01T00:00:00+00:00"}   # driver gone
    claim(cfg, rec)
    (tmp_path / "s" / TUNER_STATE).write_bytes(b"state")
    again, args = config_from_args(argv)
    resumed, _, _ = prepare_resume(again, args.given)
    assert resumed.warmup_steps == [0, 100] and resumed.grad_clip_norms == [None]
    for flags, needle in ((["--warmup-steps", "0,200"], "--warmup-steps ([0, 100] -> [0, 200])"),
                          (["--grad-clip-norms", "1"], "--grad-clip-norms ([None] -> [1.0])")):
        assert main(["--resume", "--dry-run", "--storage-path", str(tmp_path), "--study-name", "s", *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
