"""Datasets as in-memory numpy arrays, and the LightningDataModule that batches them.

``load_data(cfg) -> DataSplits(train, val, info)``: arrays shaped (N, C, H, W), uint8 for file
datasets (a quarter of the memory; Ray's object store shares them zero-copy between trials) or
float32 in about [0, 1] for generated ones. Everything is deterministic given ``cfg.data_seed``;
``cfg.seed`` only orders the training batches (``VAEDataModule``).

The datasets (``DATASET_LOADERS``, keyed by ``plvae.config.DATASETS``):

- ``natural_patches`` (the offline default): patches of the public-domain / CC0 photographs that
  ship inside scikit-image's wheel (``NATURAL_PHOTOS``), whole photos held out for validation.
- ``digits``: scikit-learn's bundled 8x8 handwritten digits.
- ``powerlaw_gaussian``: Gaussian data whose covariance spectrum is exactly k^(-alpha), the
  controlled experiment (the "correlated Gaussian datasets" of Levi & Oz 2023).
- ``cifar10`` / ``mnist`` / ``fashion_mnist`` / ``stl10``: torchvision's classes on their native
  files (downloaded once per root under a file lock); the training split with ``val_fraction``
  held out, pixels unnormalised in [0, 1], as Lightning-Bolts' CIFAR10DataModule.
- ``image_folder``: a folder of the user's images (flat or ImageFolder class sub-folders).
"""
from __future__ import annotations

import functools
import warnings
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from plvae.config import DATASETS, ConfigError, TrialConfig

DEFAULT_DATA_DIR = "~/.cache/plvae/data"


@dataclass
class DataSplits:
    """Training and validation images, (N, C, H, W), and JSON-able facts about them."""

    train: np.ndarray
    val: np.ndarray
    info: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- shared helpers

def _split_indices(n: int, val_fraction: float, data_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random hold-out of round(val_fraction * n) items (at least one on each side);
    indices sorted so the copies read memory in order."""
    if n < 2:
        raise ValueError(f"cannot split {n} image(s) into training and validation; need at least 2")
    n_val = min(max(1, round(val_fraction * n)), n - 1)
    perm = np.random.default_rng(data_seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _split(images: np.ndarray, cfg: TrialConfig, info: dict) -> DataSplits:
    train_idx, val_idx = _split_indices(len(images), cfg.val_fraction, cfg.data_seed)
    return DataSplits(images[train_idx], images[val_idx], info)


def _to_cfg_shape(images: np.ndarray, cfg: TrialConfig, chunk: int = 2048) -> np.ndarray:
    """Convert (N, C, H, W) images (uint8 or float) to cfg.channels and cfg.image_size with
    torchvision's own functions (ITU-R 601 luma for RGB -> grey, antialiased bilinear resizing),
    in chunks to bound memory. Returns the input untouched when nothing needs to change."""
    from torchvision.transforms.v2 import functional as TF

    n, c, h, w = images.shape
    size = cfg.image_size
    if c == cfg.channels and (h, w) == (size, size):
        return images
    out = np.empty((n, cfg.channels, size, size), dtype=images.dtype)
    for start in range(0, n, chunk):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + chunk]))
        if (h, w) != (size, size):
            x = TF.resize(x, [size, size], antialias=True)
        if c == 3 and cfg.channels == 1:
            x = TF.rgb_to_grayscale(x, num_output_channels=1)
        elif c == 1 and cfg.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        out[start:start + len(x)] = x.numpy()
    return out


# --------------------------------------------------------------------------- natural_patches

# name -> (credit and licence as scikit-image's docstrings state them). Only photographs whose
# terms scikit-image states and that load offline from the wheel are used: moon and page (no terms
# stated), horse (clip art), the stereo motorcycle (Middlebury, terms not stated) and the
# pooch-downloaded images (eagle, brain, skin, ...) are left out on purpose.
NATURAL_PHOTOS = {
    "astronaut": "Eileen Collins, NASA Great Images database; public domain",
    "camera": "Lav Varshney; CC0",
    "chelsea": "Chelsea the cat, Stefan van der Walt; CC0",
    "rocket": "DSCOVR launch on Falcon 9, SpaceX; public domain",
    "immunohistochemistry": "colonic glands (IHC), Center for Microscopy And Molecular Imaging (CMMI); no known copyright restrictions",
    "hubble_deep_field": "Hubble eXtreme Deep Field, NASA/HubbleSite; public domain",
    "brick": "brick wall, CC0Textures (Bricks25); CC0",
    "gravel": "gravel, CC0Textures (Gravel04); CC0",
    "clock": "motion-blurred wall clock, Stefan van der Walt; public domain",
    "cell": "cell in saline, quantitative phase image, Paul Mueller et al. 2018; CC0",
    "retina": "fundus photograph, Mikael Haggstrom, Wikimedia Commons; CC0",
    "text": "text corner (Wikipedia File:Corner.png); public domain",
    "microaneurysms": "retina detail, HRF Image Database, Andreas Maier; CC0",
    "coffee": "coffee cup, Rachel Michetti (Pikolo Espresso Bar); CC0",
    "coins": "Greek coins from Pompeii, Brooklyn Museum Collection; no known copyright restrictions",
    "grass": "grass, linolafett on DeviantArt; CC0",
}
# Whole photos held out, so training and validation patches never share a pixel: one colour
# photograph, one grey photograph and one texture (a fixed choice; about 19% of the photos).
NATURAL_VAL_PHOTOS = ("coffee", "coins", "grass")
NATURAL_TRAIN_PHOTOS = tuple(p for p in NATURAL_PHOTOS if p not in NATURAL_VAL_PHOTOS)


@functools.lru_cache(maxsize=None)
def natural_photo(name: str, channels: int) -> np.ndarray:
    """One scikit-image photograph as float32 (channels, H, W) in [0, 1], read-only, cached:
    grey through ``skimage.color.rgb2gray``; grey photos repeated to three channels for RGB."""
    import skimage.color
    import skimage.data

    img = getattr(skimage.data, name)()
    img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    if img.ndim == 3 and channels == 1:
        img = skimage.color.rgb2gray(img[..., :3]).astype(np.float32)
    if img.ndim == 2:
        img = np.repeat(img[None], channels, axis=0)
    else:
        img = np.ascontiguousarray(img[..., :3].transpose(2, 0, 1))
    img.setflags(write=False)
    return img


def cut_patches(photos: list[str], n: int, cfg: TrialConfig, seed) -> np.ndarray:
    """n patches: each picks a photo uniformly (so large photos do not dominate), then a uniform
    position inside it, at the photo's native resolution."""
    size = cfg.image_size
    usable = [p for p in photos if min(natural_photo(p, cfg.channels).shape[1:]) >= size]
    if not usable:
        raise ConfigError(f"image_size={size!r} is invalid for dataset 'natural_patches'; allowed: at most "
                          f"{max(min(natural_photo(p, cfg.channels).shape[1:]) for p in photos)} (the photos' smallest side)")
    rng = np.random.default_rng(seed)
    which = rng.integers(len(usable), size=n)
    out = np.empty((n, cfg.channels, size, size), dtype=np.float32)
    for i, k in enumerate(which):
        img = natural_photo(usable[k], cfg.channels)
        top = rng.integers(img.shape[1] - size + 1)
        left = rng.integers(img.shape[2] - size + 1)
        out[i] = img[:, top:top + size, left:left + size]
    return out


def _natural_patches(cfg: TrialConfig) -> DataSplits:
    seed_train, seed_val = np.random.SeedSequence(cfg.data_seed).spawn(2)
    return DataSplits(
        cut_patches(list(NATURAL_TRAIN_PHOTOS), cfg.n_train, cfg, seed_train),
        cut_patches(list(NATURAL_VAL_PHOTOS), cfg.n_val, cfg, seed_val),
        {"sources_train": list(NATURAL_TRAIN_PHOTOS), "sources_val": list(NATURAL_VAL_PHOTOS),
         "source": "scikit-image data (skimage.data)"},
    )


# --------------------------------------------------------------------------- digits

def _digits(cfg: TrialConfig) -> DataSplits:
    """scikit-learn's 1797 bundled 8x8 digits (UCI optical digits), 0..16 scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    images = (load_digits().images[:, None] / 16.0).astype(np.float32)
    images = np.clip(_to_cfg_shape(images, cfg), 0.0, 1.0)
    return _split(images, cfg, {"source": "sklearn.datasets.load_digits", "n_total": len(images)})


# --------------------------------------------------------------------------- powerlaw_gaussian

def powerlaw_basis(dim: int, alpha: float, rotate: bool, data_seed: int):
    """The covariance of ``powerlaw_gaussian`` as (sqrt of eigenvalues, orthonormal basis or None).

    Eigenvalues are exactly k^(-alpha), k = 1..dim. With ``rotate`` the eigenvectors are a
    Haar-random orthonormal basis (QR of a Gaussian matrix with the sign fix of Mezzadri 2007),
    so no pixel is special; without it the covariance is diagonal, the seed's form."""
    sqrt_eig = np.arange(1, dim + 1, dtype=np.float64) ** (-alpha / 2)
    if not rotate:
        return sqrt_eig, None
    g = np.random.default_rng(np.random.SeedSequence([data_seed, 0])).standard_normal((dim, dim))
    q, r = np.linalg.qr(g)
    return sqrt_eig, q * np.sign(np.diag(r))


def _powerlaw_gaussian(cfg: TrialConfig, chunk: int = 4096) -> DataSplits:
    """x = 0.5 + scale * Q diag(k^(-alpha/2)) z, z ~ N(0, I), shaped (N, C, H, W).

    ``scale`` puts the widest pixel's +-3 sigma inside [0, 1] (values are not clipped: clipping
    would bend the spectrum); the affine map multiplies every eigenvalue by scale^2, so the
    exponent stays exactly alpha."""
    c, s = cfg.channels, cfg.image_size
    dim = c * s * s
    sqrt_eig, q = powerlaw_basis(dim, cfg.data_alpha, cfg.data_rotate, cfg.data_seed)
    pixel_var = sqrt_eig ** 2 if q is None else (q ** 2) @ (sqrt_eig ** 2)
    scale = 1.0 / (6.0 * float(np.sqrt(pixel_var.max())))

    def sample(n, seed):
        rng = np.random.default_rng(seed)
        out = np.empty((n, dim), dtype=np.float32)
        for start in range(0, n, chunk):
            x = rng.standard_normal((min(chunk, n - start), dim)) * sqrt_eig
            if q is not None:
                x = x @ q.T
            out[start:start + len(x)] = 0.5 + scale * x
        return out.reshape(n, c, s, s)

    seed_train, seed_val = np.random.SeedSequence([cfg.data_seed, 1]).spawn(2)
    info = {"alpha_true": float(cfg.data_alpha), "rotated": bool(cfg.data_rotate), "dim": dim,
            "offset": 0.5, "scale": scale}
    return DataSplits(sample(cfg.n_train, seed_train), sample(cfg.n_val, seed_val), info)


# --------------------------------------------------------------------------- torchvision datasets

def data_root(cfg: TrialConfig) -> str:
    return os.path.abspath(os.path.expanduser(cfg.data_dir or DEFAULT_DATA_DIR))


@dataclass(frozen=True)
class _Torchvision:
    cls_name: str                    # torchvision.datasets.<cls_name>
    folder: str                      # where torchvision expects the files, under the root
    kwargs: dict                     # the split
    to_nchw: Callable[[object], np.ndarray]
    how: str                         # how to get the files by hand ({root}: the data root)

    def cls(self):
        import torchvision.datasets

        return getattr(torchvision.datasets, self.cls_name)


_TORCHVISION = {
    "cifar10": _Torchvision("CIFAR10", "cifar-10-batches-py", {"train": True},
                            lambda ds: ds.data.transpose(0, 3, 1, 2),
                            "extract https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz into {root}"),
    "mnist": _Torchvision("MNIST", "MNIST/raw", {"train": True}, lambda ds: ds.data.numpy()[:, None],
                          "gunzip the four *-ubyte.gz files of https://ossci-datasets.s3.amazonaws.com/mnist/ into {root}/MNIST/raw"),
    "fashion_mnist": _Torchvision("FashionMNIST", "FashionMNIST/raw", {"train": True}, lambda ds: ds.data.numpy()[:, None],
                                  "gunzip the four *-ubyte.gz files of http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ into {root}/FashionMNIST/raw"),
    # STL-10's 5000 labelled training images (no official validation split, so val_fraction of
    # them are held out); "train+unlabeled" would add 100k unlabelled images and ~2.7 GB of RAM.
    "stl10": _Torchvision("STL10", "stl10_binary", {"split": "train"}, lambda ds: ds.data,
                          "extract http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz into {root}"),
}


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"[:300]


def open_torchvision(name: str, cfg: TrialConfig):
    """The torchvision dataset object on its native files, downloading when missing and allowed.

    A file lock on ``<root>/.plvae.lock`` makes concurrent trials on one node download once. Any
    failure becomes one line saying which dataset, the exact directory and how to get the files."""
    from filelock import FileLock

    spec = _TORCHVISION[name]
    root = data_root(cfg)
    where = os.path.join(root, spec.folder)
    how = spec.how.format(root=root)
    os.makedirs(root, exist_ok=True)
    with FileLock(os.path.join(root, ".plvae.lock")):
        try:
            return spec.cls()(root, download=False, **spec.kwargs)
        except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
            if not cfg.download:
                raise FileNotFoundError(
                    f"dataset {name!r} not found in {where} ({_one_line(e)}) and download=False; set download=True "
                    f"on a machine with internet, or {how}") from None
        try:
            return spec.cls()(root, download=True, **spec.kwargs)
        except Exception as e:  # URLError (no network), RuntimeError (all mirrors failed, md5), tar errors
            raise RuntimeError(
                f"dataset {name!r} could not be downloaded into {where} ({_one_line(e)}); {how} by hand, or "
                f"download it with download=True on a machine with internet and copy {root} here") from e


def _torchvision_loader(name: str) -> Callable[[TrialConfig], DataSplits]:
    def load(cfg: TrialConfig) -> DataSplits:
        images = np.asarray(_TORCHVISION[name].to_nchw(open_torchvision(name, cfg)), dtype=np.uint8)
        images = _to_cfg_shape(images, cfg)
        return _split(images, cfg, {"source": f"torchvision.datasets.{_TORCHVISION[name].cls_name}",
                                    "root": data_root(cfg), "n_total": len(images)})

    load.__name__ = f"_{name}"
    load.__doc__ = f"torchvision's {_TORCHVISION[name].cls_name} training split, val_fraction held out."
    return load


# --------------------------------------------------------------------------- image_folder

def _image_folder(cfg: TrialConfig) -> DataSplits:
    """Every image file under cfg.data_dir, recursively (so a flat folder and torchvision's
    ImageFolder class sub-folders both work; labels are ignored), in sorted path order. Each is
    converted to grey ("L") or RGB, and scaled and centre-cropped to a square by ``ImageOps.fit``."""
    from PIL import Image, ImageOps
    from torchvision.datasets.folder import IMG_EXTENSIONS

    root = Path(data_root(cfg))
    if not root.is_dir():
        raise FileNotFoundError(f"dataset 'image_folder': data_dir {str(root)!r} is not a directory")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if len(paths) < 2:
        raise FileNotFoundError(f"dataset 'image_folder': found {len(paths)} image(s) in {str(root)!r}; need at "
                                f"least 2 files with extensions {', '.join(IMG_EXTENSIONS)}")
    mode, size = ("L" if cfg.channels == 1 else "RGB"), cfg.image_size
    images = np.empty((len(paths), cfg.channels, size, size), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with warnings.catch_warnings():   # scoped: a huge image is refused, not half-decoded
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as img:
                    img = ImageOps.fit(img.convert(mode), (size, size), method=Image.Resampling.BICUBIC)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ConfigError(f"image_folder: {str(path)!r} is invalid ({_one_line(e)}); allowed: images of at "
                              f"most {Image.MAX_IMAGE_PIXELS} pixels (PIL's decompression-bomb limit)") from None
        except OSError as e:
            raise OSError(f"dataset 'image_folder': cannot read {str(path)!r} ({_one_line(e)})") from e
        arr = np.asarray(img, dtype=np.uint8)
        images[i] = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return _split(images, cfg, {"source": str(root), "n_total": len(paths)})


# --------------------------------------------------------------------------- registry, entry points

DATASET_LOADERS: dict[str, Callable[[TrialConfig], DataSplits]] = {
    "natural_patches": _natural_patches,
    "digits": _digits,
    "powerlaw_gaussian": _powerlaw_gaussian,
    **{name: _torchvision_loader(name) for name in _TORCHVISION},
    "image_folder": _image_folder,
}
assert set(DATASET_LOADERS) == set(DATASETS), "plvae.config.DATASETS and DATASET_LOADERS disagree"

_GENERATED = ("n_train", "n_val")
_HELD_OUT = ("val_fraction",)
_KEY_FIELDS = {
    "natural_patches": _GENERATED,
    "digits": _HELD_OUT,
    "powerlaw_gaussian": _GENERATED + ("data_alpha", "data_rotate"),
    **{name: ("data_dir",) + _HELD_OUT for name in _TORCHVISION},
    "image_folder": ("data_dir",) + _HELD_OUT,
}


def data_key(cfg: TrialConfig) -> tuple:
    """The (field, value) pairs of cfg that determine its data, so a study builds each distinct
    dataset once: trials with equal keys get identical arrays from ``load_data``."""
    names = ("dataset", "image_size", "channels", "data_seed") + _KEY_FIELDS[cfg.dataset]
    return tuple((name, getattr(cfg, name)) for name in names)


def load_data(cfg: TrialConfig) -> DataSplits:
    """The training and validation images of cfg.dataset, shaped (N, *cfg.image_shape)."""
    data = DATASET_LOADERS[cfg.dataset](cfg)
    for split in (data.train, data.val):
        assert split.shape[1:] == cfg.image_shape, (split.shape, cfg.image_shape)
    return data


# --------------------------------------------------------------------------- Lightning

class ImageArrayDataset(Dataset):
    """Rows of an (N, C, H, W) array as float32 tensors in [0, 1]: uint8 divided by 255, floats
    as they are. Converting one row at a time copies only that row, so the array itself may be a
    read-only view (Ray's object store) without torch's non-writable-array warning or a full copy."""

    def __init__(self, images: np.ndarray):
        self.images = images
        self.is_uint8 = images.dtype == np.uint8

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i) -> torch.Tensor:
        x = torch.from_numpy(np.array(self.images[i], dtype=np.float32))
        return x.div_(255.0) if self.is_uint8 else x


class VAEDataModule(pl.LightningDataModule):
    """Batches of plain float32 tensors (N, C, H, W). Pass ``data`` to share arrays loaded once
    (e.g. from Ray's object store); otherwise ``setup`` loads them. The training order is
    shuffled by a generator seeded with cfg.seed; validation is not shuffled."""

    def __init__(self, cfg: TrialConfig, data: Optional[DataSplits] = None):
        super().__init__()
        self.cfg = cfg
        self.data = data

    def setup(self, stage: Optional[str] = None) -> None:
        if self.data is None:
            self.data = load_data(self.cfg)

    def _loader(self, images: np.ndarray, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.cfg.seed) if shuffle else None
        return DataLoader(
            ImageArrayDataset(images), batch_size=self.cfg.batch_size, shuffle=shuffle, generator=generator,
            num_workers=self.cfg.num_workers, persistent_workers=self.cfg.num_workers > 0,
            pin_memory=torch.cuda.is_available(), drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.data.train, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.data.val, shuffle=False)
