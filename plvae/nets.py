"""Encoders and decoders, chosen by ``cfg.net``.

``build_nets(cfg) -> (encoder, decoder, enc_out_dim)``: the encoder maps images (B, C, H, W) to
features (B, enc_out_dim) (the model puts its mu / log-variance heads on them); the decoder maps
latent codes (B, latent_dim) to images (B, C, H, W). Decoders return raw values with no final
sigmoid: the reconstruction loss is an MSE against pixels in [0, 1], as in Lightning-Bolts' VAE.

- ``resnet18``: Lightning-Bolts' CIFAR-10 ResNet-18 VAE (``resnet18_encoder`` / ``resnet18_decoder``
  in ``pl_bolts.models.autoencoders.components``), the seed's network.
- ``conv``: a small stride-2 conv net for 8x8 .. 64x64 images, fast enough for CPU studies.
- ``mlp``: the seed's Fashion-MNIST MLP VAE.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from plvae.config import RESNET18_FEATURES, ConfigError, TrialConfig  # 512: ResNet-18 after pooling



class Interpolate(nn.Module):
    """``F.interpolate`` as a module (Bolts' ``Interpolate``): nearest-neighbour resizing."""

    def __init__(self, size=None, scale_factor=None):
        super().__init__()
        self.size, self.scale_factor = size, scale_factor

    def forward(self, x):
        return F.interpolate(x, size=self.size, scale_factor=self.scale_factor)

    def extra_repr(self):
        return f"size={self.size}, scale_factor={self.scale_factor}"


class ToImage(nn.Module):
    """Resize to exactly (H, W) when a decoder's upsampling path cannot hit it (odd sizes)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, x):
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return x


# --------------------------------------------------------------------------- ResNet-18 (Bolts)

def _conv3x3(cin, cout):
    return nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1, bias=False)


def _resize_conv(cin, cout, kernel_size, scale=1):
    """Bolts' resize_conv3x3 / resize_conv1x1: nearest upsampling then a stride-1 conv."""
    conv = nn.Conv2d(cin, cout, kernel_size=kernel_size, stride=1, padding=kernel_size // 2, bias=False)
    return conv if scale == 1 else nn.Sequential(Interpolate(scale_factor=scale), conv)


class DecoderBlock(nn.Module):
    """Bolts' ``DecoderBlock``: a BasicBlock run backwards, upsampling in its second conv."""

    def __init__(self, inplanes, planes, scale=1, upsample=None):
        super().__init__()
        self.conv1 = _resize_conv(inplanes, inplanes, 3)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _resize_conv(inplanes, planes, 3, scale)
        self.bn2 = nn.BatchNorm2d(planes)
        self.upsample = upsample

    def forward(self, x):
        identity = x if self.upsample is None else self.upsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18Decoder(nn.Module):
    """Bolts' ``ResNetDecoder(DecoderBlock, [2, 2, 2, 2], ...)``: Linear(latent -> 512x4x4), resize to
    image_size / upscale_factor, four stages of residual decoder blocks (x2 upsampling in the first
    three, and in the fourth with maxpool1), x2 more with the ImageNet stem, and a 3x3 conv to the
    image channels. Bolts assumes image_size divisible by the upscale factor; other sizes get a final
    bilinear resize instead of failing."""

    def __init__(self, latent_dim, image_size, channels=3, first_conv=False, maxpool1=False, layers=(2, 2, 2, 2)):
        super().__init__()
        self.inplanes = RESNET18_FEATURES
        upscale_factor = 8
        self.linear = nn.Linear(latent_dim, RESNET18_FEATURES * 4 * 4)
        self.layer1 = self._make_layer(256, layers[0], scale=2)
        self.layer2 = self._make_layer(128, layers[1], scale=2)
        self.layer3 = self._make_layer(64, layers[2], scale=2)
        if maxpool1:
            self.layer4 = self._make_layer(64, layers[3], scale=2)
            upscale_factor *= 2
        else:
            self.layer4 = self._make_layer(64, layers[3])
        if first_conv:
            self.upscale = Interpolate(scale_factor=2)
            upscale_factor *= 2
        else:
            self.upscale = nn.Identity()
        self.upscale1 = Interpolate(size=max(1, image_size // upscale_factor))
        self.conv1 = nn.Conv2d(64, channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.to_image = ToImage(image_size)

    def _make_layer(self, planes, blocks, scale=1):
        upsample = None
        if scale != 1 or self.inplanes != planes:
            upsample = nn.Sequential(_resize_conv(self.inplanes, planes, 1, scale), nn.BatchNorm2d(planes))
        layers = [DecoderBlock(self.inplanes, planes, scale, upsample)]
        self.inplanes = planes
        layers += [DecoderBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, z):
        x = self.linear(z).view(z.size(0), RESNET18_FEATURES, 4, 4)
        x = self.upscale1(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.to_image(self.conv1(self.upscale(x)))


def resnet18_encoder(channels=3, first_conv=False, maxpool1=False) -> nn.Module:
    """Bolts' ``resnet18_encoder`` built on torchvision's ResNet-18 (the same BasicBlock stages):
    the CIFAR stem (3x3 stride-1 conv, no max-pool) unless ``first_conv`` / ``maxpool1`` ask for
    the ImageNet 7x7 stride-2 conv / the 3x3 stride-2 max-pool; ``fc`` removed so the output is
    the 512 pooled features."""
    net = torchvision.models.resnet18(weights=None)
    if first_conv:
        net.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    else:
        net.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # torchvision's init
    if not maxpool1:
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


# --------------------------------------------------------------------------- small conv net

def _spatial_sizes(image_size: int, n_blocks: int) -> list[int]:
    """Side lengths after each stride-2, padding-1, 3x3 conv: ceil(n / 2) at each step."""
    sizes = [image_size]
    for _ in range(n_blocks):
        sizes.append((sizes[-1] + 1) // 2)
    return sizes


class ConvEncoder(nn.Module):
    """A DCGAN-style encoder (Radford et al. 2016; the "vanilla VAE" of pythae / PyTorch-VAE):
    per entry of ``hidden_dims`` a 3x3 stride-2 conv, BatchNorm and LeakyReLU, then flatten and a
    Linear to ``enc_out_dim`` features. Odd sides are fine: each conv rounds up (ceil(n / 2))."""

    def __init__(self, channels, image_size, hidden_dims, enc_out_dim):
        super().__init__()
        blocks, cin = [], channels
        for h in hidden_dims:
            blocks += [nn.Conv2d(cin, h, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(h), nn.LeakyReLU(0.2)]
            cin = h
        side = _spatial_sizes(image_size, len(hidden_dims))[-1]
        self.net = nn.Sequential(*blocks, nn.Flatten(), nn.Linear(cin * side * side, enc_out_dim), nn.LeakyReLU(0.2))

    def forward(self, x):
        return self.net(x)


class ConvDecoder(nn.Module):
    """Mirror of ``ConvEncoder``: Linear to the deepest feature map, then per block a nearest
    upsampling to the encoder's side at that depth (exact inverse of its spatial path, so any
    image size works) with a 3x3 conv, BatchNorm and LeakyReLU; a last 3x3 conv gives the image.
    Resize-convolutions rather than ConvTranspose2d avoid checkerboard artefacts (Odena et al. 2016)."""

    def __init__(self, latent_dim, channels, image_size, hidden_dims):
        super().__init__()
        sizes = _spatial_sizes(image_size, len(hidden_dims))
        self.deepest = (hidden_dims[-1], sizes[-1], sizes[-1])
        self.linear = nn.Sequential(nn.Linear(latent_dim, hidden_dims[-1] * sizes[-1] ** 2), nn.LeakyReLU(0.2))
        blocks = []
        for i in reversed(range(len(hidden_dims))):
            cin, cout = hidden_dims[i], hidden_dims[max(i - 1, 0)]
            blocks += [Interpolate(size=sizes[i]), nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                       nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*blocks, nn.Conv2d(hidden_dims[0], channels, 3, padding=1))

    def forward(self, z):
        return self.net(self.linear(z).view(z.size(0), *self.deepest))


# --------------------------------------------------------------------------- MLP

class MLPEncoder(nn.Module):
    """The seed's Fashion-MNIST MLP VAE encoder (the classic Kingma & Welling 2014 MLP):
    flatten C*H*W -> hidden_dims -> enc_out_dim, ReLU after every layer."""

    def __init__(self, channels, image_size, hidden_dims, enc_out_dim):
        super().__init__()
        widths = [channels * image_size * image_size, *hidden_dims, enc_out_dim]
        layers = [nn.Flatten()]
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class MLPDecoder(nn.Module):
    """Mirror of ``MLPEncoder``'s hidden layers: latent -> reversed(hidden_dims) -> C*H*W (ReLU
    between, raw output), reshaped to (C, H, W)."""

    def __init__(self, latent_dim, channels, image_size, hidden_dims):
        super().__init__()
        self.shape = (channels, image_size, image_size)
        widths = [latent_dim, *reversed(hidden_dims), channels * image_size * image_size]
        layers = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers[:-1])  # no activation on the output

    def forward(self, z):
        return self.net(z).view(z.size(0), *self.shape)


# --------------------------------------------------------------------------- entry point

def build_nets(cfg: TrialConfig) -> tuple[nn.Module, nn.Module, int]:
    """The (encoder, decoder, enc_out_dim) for ``cfg.net`` and the image shape of ``cfg``.

    ResNet-18's feature width is fixed at 512: ``net="resnet18"`` with another ``enc_out_dim`` is a
    ConfigError rather than a silent extra projection layer that Bolts' network does not have."""
    c, s = cfg.channels, cfg.image_size
    if cfg.net == "resnet18":
        if cfg.enc_out_dim != RESNET18_FEATURES:
            raise ConfigError(f"enc_out_dim={cfg.enc_out_dim!r} is invalid for net 'resnet18'; "
                              f"allowed: {RESNET18_FEATURES} (ResNet-18's pooled feature width)")
        encoder = resnet18_encoder(c, cfg.first_conv, cfg.maxpool1)
        decoder = ResNet18Decoder(cfg.latent_dim, s, c, cfg.first_conv, cfg.maxpool1)
    elif cfg.net == "conv":
        encoder = ConvEncoder(c, s, cfg.hidden_dims, cfg.enc_out_dim)
        decoder = ConvDecoder(cfg.latent_dim, c, s, cfg.hidden_dims)
    elif cfg.net == "mlp":
        encoder = MLPEncoder(c, s, cfg.hidden_dims, cfg.enc_out_dim)
        decoder = MLPDecoder(cfg.latent_dim, c, s, cfg.hidden_dims)
    else:  # TrialConfig validates net; this guards direct misuse
        raise ConfigError(f"net={cfg.net!r} is invalid; allowed: conv, resnet18, mlp")
    return encoder, decoder, cfg.enc_out_dim
