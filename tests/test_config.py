"""TrialConfig: sensible defaults, the paper's named config, one-line errors for every bad field."""
import pytest

from plvae.config import ConfigError, TrialConfig, paper_config


def test_two_fields_are_enough():
    cfg = TrialConfig(variant="powerlaw_clamp", gamma=1.0)
    assert cfg.latent_dim >= 1 and cfg.dataset == "natural_patches" and cfg.net == "conv"


def test_paper_config_is_the_seed_protocol():
    cfg = paper_config()
    assert (cfg.dataset, cfg.net, cfg.latent_dim, cfg.enc_out_dim, cfg.kl_coeff, cfg.lr) == ("cifar10", "resnet18", 256, 512, 0.1, 1e-4)
    assert (cfg.kl_estimator, cfg.kl_reduction, cfg.max_epochs, cfg.min_decay) == ("mc", "mean", 5, 1e-3)
    assert (cfg.batch_size, cfg.val_fraction, cfg.image_shape) == (32, 0.2, (3, 32, 32))


def test_round_trip_through_a_dict():
    cfg = TrialConfig(variant="powerlaw_clip", gamma=0.5, clip_dim=4, hidden_dims=[8, 16])
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("kwargs,field,value", [
    ({"variant": "power"}, "variant", "'power'"),
    ({"gamma": -0.1}, "gamma", "-0.1"),
    ({"gamma": float("nan")}, "gamma", "nan"),
    ({"min_decay": 0.0}, "min_decay", "0.0"),
    ({"min_decay": 1.5}, "min_decay", "1.5"),
    ({"latent_dim": 0}, "latent_dim", "0"),
    ({"latent_dim": 2.5}, "latent_dim", "2.5"),
    ({"variant": "powerlaw_clip"}, "clip_dim", "None"),
    ({"variant": "powerlaw_clip", "clip_dim": 0}, "clip_dim", "0"),
    ({"variant": "exponential"}, "decay_rate", "None"),
    ({"variant": "linear", "decay_rate": -1.0}, "decay_rate", "-1.0"),
    ({"kl_coeff": -1}, "kl_coeff", "-1"),
    ({"kl_estimator": "exact"}, "kl_estimator", "'exact'"),
    ({"kl_reduction": "max"}, "kl_reduction", "'max'"),
    ({"lr": 0}, "lr", "0"),
    ({"batch_size": 0}, "batch_size", "0"),
    ({"max_epochs": 0}, "max_epochs", "0"),
    ({"seed": -1}, "seed", "-1"),
    ({"dataset": "imagenet"}, "dataset", "'imagenet'"),
    ({"channels": 2}, "channels", "2"),
    ({"val_fraction": 1.0}, "val_fraction", "1.0"),
    ({"net": "vit"}, "net", "'vit'"),
    ({"hidden_dims": ()}, "hidden_dims", "()"),
    ({"dataset": "image_folder"}, "data_dir", "None"),
    ({"data_alpha": 0}, "data_alpha", "0"),
    # bools and strings are type-checked: "no" is truthy, "garbage" is no precision
    ({"download": "no"}, "download", "'no'"),
    ({"channels_last": 1}, "channels_last", "1"),
    ({"precision": "garbage"}, "precision", "'garbage'"),
    ({"accelerator": "quantum"}, "accelerator", "'quantum'"),
    ({"extra": [1, 2]}, "extra", "[1, 2]"),
    ({"extra": "tag"}, "extra", "'tag'"),
    # sizes have upper bounds
    ({"n_train": 10**9}, "n_train", str(10**9)),
    ({"image_size": 100000}, "image_size", "100000"),
    ({"batch_size": 10**7}, "batch_size", str(10**7)),
    ({"num_workers": 10**4}, "num_workers", str(10**4)),
    ({"hidden_dims": (8, 10**6)}, "hidden_dims", "(8, 1000000)"),
])
def test_bad_values_get_one_line_naming_field_value_and_allowed(kwargs, field, value):
    with pytest.raises(ConfigError) as err:
        TrialConfig(**kwargs)
    msg = str(err.value)
    assert msg.startswith(f"{field}={value}") and "allowed:" in msg and "\n" not in msg


def test_unknown_key_in_a_dict_is_refused():
    with pytest.raises(ConfigError, match=r"^gama=1 is not a trial field; allowed: "):
        TrialConfig.from_dict({"gama": 1})


def test_resnet18_needs_its_own_feature_width():
    """The rule lives in TrialConfig, so a study refuses it before Ray, not in every trial."""
    with pytest.raises(ConfigError, match=r"^enc_out_dim=64 is invalid for net 'resnet18'; allowed: 512"):
        TrialConfig(net="resnet18", enc_out_dim=64)
    TrialConfig(net="resnet18", enc_out_dim=512)
