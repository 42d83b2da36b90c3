"""plvae.nets: every net gives the right shapes on its image sizes and trains (gradients reach
every parameter)."""
import pytest
import torch
from torch import nn

from plvae.config import ConfigError, TrialConfig
from plvae.nets import build_nets


def check_roundtrip(cfg: TrialConfig, batch: int = 2):
    torch.manual_seed(0)
    encoder, decoder, enc_out_dim = build_nets(cfg)
    x = torch.rand(batch, *cfg.image_shape)
    features = encoder(x)
    assert features.shape == (batch, enc_out_dim)
    assert enc_out_dim == cfg.enc_out_dim
    head = nn.Linear(enc_out_dim, cfg.latent_dim)  # stands in for the model's mu head
    recon = decoder(head(features))
    assert recon.shape == x.shape
    assert torch.isfinite(recon).all()
    nn.functional.mse_loss(recon, x).backward()
    for name, p in [*encoder.named_parameters(), *decoder.named_parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # some gradient is non-zero in both nets (the loss really depends on them)
    assert any(p.grad.abs().sum() > 0 for p in encoder.parameters())
    assert any(p.grad.abs().sum() > 0 for p in decoder.parameters())
    return encoder, decoder


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [8, 16, 28, 32, 64, 17])
def test_conv_shapes_and_backward(size, channels):
    check_roundtrip(TrialConfig(net="conv", image_size=size, channels=channels, enc_out_dim=128, latent_dim=16))


def test_conv_depth_follows_hidden_dims():
    cfg = TrialConfig(net="conv", image_size=16, hidden_dims=(8, 16, 32), enc_out_dim=32)
    encoder, decoder = check_roundtrip(cfg)
    convs = [m for m in encoder.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16, 32]
    assert all(c.stride == (2, 2) for c in convs)


def check_resnet_stem(encoder, first_conv, maxpool1):
    # Bolts' stems: CIFAR 3x3 stride-1 conv, or the ImageNet 7x7 stride-2 one; max-pool only with maxpool1
    assert encoder.conv1.kernel_size == ((7, 7) if first_conv else (3, 3))
    assert encoder.conv1.stride == ((2, 2) if first_conv else (1, 1))
    assert isinstance(encoder.maxpool, nn.MaxPool2d) == maxpool1


def resnet_cfg(**kw):
    return TrialConfig(net="resnet18", image_size=32, channels=3, latent_dim=256, enc_out_dim=512, **kw)


@pytest.mark.parametrize("first_conv,maxpool1", [(False, False), (True, True)])
def test_resnet18_cifar_shapes_and_backward(first_conv, maxpool1):
    encoder, _ = check_roundtrip(resnet_cfg(first_conv=first_conv, maxpool1=maxpool1))
    check_resnet_stem(encoder, first_conv, maxpool1)


@pytest.mark.parametrize("first_conv,maxpool1", [(True, False), (False, True)])
def test_resnet18_cifar_mixed_stems_shapes(first_conv, maxpool1):
    encoder, decoder, _ = build_nets(resnet_cfg(first_conv=first_conv, maxpool1=maxpool1))
    check_resnet_stem(encoder, first_conv, maxpool1)
    with torch.no_grad():
        assert encoder.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 512)
        assert decoder.eval()(torch.randn(1, 256)).shape == (1, 3, 32, 32)


def test_resnet18_grey_and_stl_sizes():
    encoder, decoder, _ = build_nets(TrialConfig(net="resnet18", image_size=28, channels=1, enc_out_dim=512))
    with torch.no_grad():
        assert encoder.eval()(torch.rand(1, 1, 28, 28)).shape == (1, 512)
        assert decoder.eval()(torch.randn(1, 16)).shape == (1, 1, 28, 28)  # 28 is not a multiple of 8
    _, decoder, _ = build_nets(TrialConfig(net="resnet18", image_size=96, channels=3, enc_out_dim=512,
                                           first_conv=True, maxpool1=True))
    with torch.no_grad():
        assert decoder.eval()(torch.randn(1, 16)).shape == (1, 3, 96, 96)


def test_resnet18_feature_width_is_fixed():
    with pytest.raises(ConfigError, match="enc_out_dim=128.*resnet18.*512"):
        build_nets(TrialConfig(net="resnet18", image_size=32, channels=3, enc_out_dim=128))


def test_mlp_fashion_mnist_shapes_and_backward():
    cfg = TrialConfig(net="mlp", image_size=28, channels=1, hidden_dims=(512, 256), enc_out_dim=256, latent_dim=100)
    encoder, decoder = check_roundtrip(cfg, batch=4)
    widths = [m.out_features for m in encoder.modules() if isinstance(m, nn.Linear)]
    assert widths == [512, 256, 256]
    assert [m.in_features for m in decoder.modules() if isinstance(m, nn.Linear)] == [100, 256, 512]
