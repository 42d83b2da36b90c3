"""The driver's closing summary never ranks a W2 variant against the KL ones on a total loss."""
from __future__ import annotations

from plvae import metrics as M
from tune.cli import config_from_args
from tune.summary import summary_text


def test_w2_is_listed_apart_from_the_kl_ranking():
    cfg, _ = config_from_args(["--variants", "vae,powerlaw_clamp,powerlaw_wae", "--storage-path", "/tmp/x"])
    best = {"vae": {M.VAL_LOSS: 0.036, "epochs": 4, "trial_id": "a", "latent_dim": 16},
            "powerlaw_clamp": {M.VAL_LOSS: 0.032, "epochs": 4, "trial_id": "b", "gamma": 0.5, "latent_dim": 16},
            "powerlaw_wae": {M.VAL_LOSS: 0.018, "epochs": 4, "trial_id": "c", "gamma": 1.0, "latent_dim": 16}}
    record = {"summary": {k: 0 for k in M.OUTCOMES}, "best_per_variant": best, "status": "finished"}
    lines = summary_text(cfg, record, 1.0).splitlines()
    rows = [ln.split()[0] for ln in lines if ln.startswith("  ")]
    assert rows == ["powerlaw_clamp", "vae", "powerlaw_wae"]          # lowest W2 loss still last
    assert "not comparable" in next(ln for ln in lines if ln.startswith("  powerlaw_wae"))
    assert "not comparable" not in next(ln for ln in lines if ln.startswith("  vae"))


def test_summary_names_mlflow_and_where_the_dashboard_token_is(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "token"))
    cfg, _ = config_from_args(["--storage-path", str(tmp_path)])
    cfg.mlflow = f"sqlite:///{tmp_path}/mlflow.db"
    record = {"summary": {k: 0 for k in M.OUTCOMES}, "best_per_variant": {}, "status": "finished",
              "dashboard_url": "http://127.0.0.1:8265"}
    text = summary_text(cfg, record, 1.0)
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path}/mlflow.db" in text
    assert f"Ray dashboard: http://127.0.0.1:8265" in text and f"the file {tmp_path / 'token'}" in text
    cfg.mlflow = None
    text = summary_text(cfg, {**record, "dashboard_url": ""}, 1.0)
    assert "MLflow" not in text and "Ray dashboard" not in text
