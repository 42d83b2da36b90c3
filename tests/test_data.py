"""plvae.data: every loader on data in its native on-disk format (written here, tiny), the
offline datasets, the power-law spectrum of the synthetic data, and the DataModule's batches.

torchvision verifies CIFAR-10 and STL-10 files by md5; the fixtures monkeypatch only the class
attributes that hold the expected checksums (train_list / test_list / meta), so torchvision's real
integrity check and parsing code run on the fixture files. MNIST's check is by file existence.
"""
import hashlib
import pickle
import socket
import warnings

import numpy as np
import pytest
import torch
import torchvision.datasets
from PIL import Image

from plvae.config import DATASETS, ConfigError, TrialConfig
from plvae.data import (
    DATASET_LOADERS, NATURAL_PHOTOS, NATURAL_TRAIN_PHOTOS, NATURAL_VAL_PHOTOS, DataSplits, VAEDataModule,
    data_key, load_data, natural_photo,
)

N_FILE_IMAGES = 20  # training images in each native-format fixture


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def images_as_set(array: np.ndarray) -> list[bytes]:
    return sorted(a.tobytes() for a in array)


def assert_split_of(data: DataSplits, expected: np.ndarray, val_fraction=0.2):
    """train and val are a disjoint partition of exactly the expected images."""
    n_val = round(val_fraction * len(expected))
    assert len(data.val) == n_val and len(data.train) == len(expected) - n_val
    assert images_as_set(np.concatenate([data.train, data.val])) == images_as_set(expected)
    assert not set(images_as_set(data.train)) & set(images_as_set(data.val))


# --------------------------------------------------------------------------- CIFAR-10

@pytest.fixture
def cifar_root(tmp_path, monkeypatch):
    """cifar-10-batches-py/ as the python pickles of the real archive: data_batch_1..5, test_batch,
    batches.meta; rows are 3072 uint8 (1024 R, 1024 G, 1024 B, row-major)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    train = rng.integers(0, 256, (N_FILE_IMAGES, 3, 32, 32), dtype=np.uint8)
    per_batch = N_FILE_IMAGES // 5
    train_list, test_list = [], []
    for i in range(5):
        rows = train[i * per_batch:(i + 1) * per_batch].reshape(per_batch, 3072)
        path = folder / f"data_batch_{i + 1}"
        path.write_bytes(pickle.dumps({"batch_label": f"training batch {i + 1} of 5", "data": rows,
                                       "labels": list(range(per_batch)), "filenames": []}))
        train_list.append([path.name, md5(path)])
    path = folder / "test_batch"
    path.write_bytes(pickle.dumps({"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0] * 4}))
    test_list.append([path.name, md5(path)])
    meta = folder / "batches.meta"
    meta.write_bytes(pickle.dumps({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog",
                                                   "frog", "horse", "ship", "truck"]}))
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "train_list", train_list)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "test_list", test_list)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "meta", {"filename": meta.name, "key": "label_names", "md5": md5(meta)})
    return tmp_path, train


def test_cifar10_native_files(cifar_root):
    root, train = cifar_root
    cfg = TrialConfig(dataset="cifar10", data_dir=str(root), download=False, image_size=32, channels=3)
    data = load_data(cfg)
    assert data.train.dtype == np.uint8 and data.train.shape[1:] == (3, 32, 32)
    assert_split_of(data, train)
    again = load_data(cfg)
    assert np.array_equal(again.train, data.train) and np.array_equal(again.val, data.val)
    other = load_data(cfg.replace(data_seed=1))
    assert not np.array_equal(other.val, data.val)
    assert (root / ".plvae.lock").exists()


def test_cifar10_converted_to_grey_and_resized(cifar_root):
    root, train = cifar_root
    data = load_data(TrialConfig(dataset="cifar10", data_dir=str(root), download=False, image_size=16, channels=1))
    assert data.train.dtype == np.uint8
    assert data.train.shape == (16, 1, 16, 16) and data.val.shape == (4, 1, 16, 16)


# --------------------------------------------------------------------------- MNIST / Fashion-MNIST

def write_idx(path, array: np.ndarray):
    """The idx format of LeCun's files: magic (0, 0, 0x08 = uint8, ndim), big-endian int32 sizes, data."""
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture(params=[("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def mnist_root(request, tmp_path):
    name, folder = request.param
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    train = rng.integers(0, 256, (N_FILE_IMAGES, 28, 28), dtype=np.uint8)
    write_idx(raw / "train-images-idx3-ubyte", train)
    write_idx(raw / "train-labels-idx1-ubyte", rng.integers(0, 10, N_FILE_IMAGES, dtype=np.uint8))
    write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (4, 28, 28), dtype=np.uint8))
    write_idx(raw / "t10k-labels-idx1-ubyte", rng.integers(0, 10, 4, dtype=np.uint8))
    return name, tmp_path, train[:, None]


def test_mnist_like_native_files(mnist_root):
    name, root, train = mnist_root
    cfg = TrialConfig(dataset=name, data_dir=str(root), download=False, image_size=28, channels=1)
    data = load_data(cfg)
    assert data.train.dtype == np.uint8
    assert_split_of(data, train)
    colour = load_data(cfg.replace(channels=3, image_size=32))
    assert colour.train.shape == (16, 3, 32, 32)
    assert np.array_equal(colour.train[:, 0], colour.train[:, 2])  # grey replicated


# --------------------------------------------------------------------------- STL-10

@pytest.fixture
def stl10_root(tmp_path, monkeypatch):
    """stl10_binary/*.bin as in the real archive: uint8 images stored column-major per channel."""
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    rng = np.random.default_rng(2)
    train = rng.integers(0, 256, (N_FILE_IMAGES, 3, 96, 96), dtype=np.uint8)

    def write_images(name, images):
        (folder / name).write_bytes(np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tobytes())

    write_images("train_X.bin", train)
    (folder / "train_y.bin").write_bytes(rng.integers(1, 11, N_FILE_IMAGES, dtype=np.uint8).tobytes())
    write_images("unlabeled_X.bin", rng.integers(0, 256, (2, 3, 96, 96), dtype=np.uint8))
    write_images("test_X.bin", rng.integers(0, 256, (2, 3, 96, 96), dtype=np.uint8))
    (folder / "test_y.bin").write_bytes(np.array([1, 2], dtype=np.uint8).tobytes())
    (folder / "class_names.txt").write_text("\n".join(f"class{i}" for i in range(10)))
    listed = lambda names: [[n, md5(folder / n)] for n in names]  # noqa: E731
    monkeypatch.setattr(torchvision.datasets.STL10, "train_list", listed(["train_X.bin", "train_y.bin", "unlabeled_X.bin"]))
    monkeypatch.setattr(torchvision.datasets.STL10, "test_list", listed(["test_X.bin", "test_y.bin"]))
    return tmp_path, train


def test_stl10_native_files(stl10_root):
    root, train = stl10_root
    data = load_data(TrialConfig(dataset="stl10", data_dir=str(root), download=False, image_size=96, channels=3))
    assert_split_of(data, train)  # the 5000 labelled training images only: unlabeled/test left out
    small = load_data(TrialConfig(dataset="stl10", data_dir=str(root), download=False, image_size=32, channels=3))
    assert small.train.shape == (16, 3, 32, 32) and small.train.dtype == np.uint8


# --------------------------------------------------------------------------- missing data

@pytest.mark.parametrize("name,folder", [("cifar10", "cifar-10-batches-py"), ("mnist", "MNIST/raw"),
                                         ("fashion_mnist", "FashionMNIST/raw"), ("stl10", "stl10_binary")])
def test_missing_dataset_without_download_is_one_clear_line(tmp_path, name, folder):
    with pytest.raises(FileNotFoundError) as info:
        load_data(TrialConfig(dataset=name, data_dir=str(tmp_path), download=False))
    message = str(info.value)
    assert "\n" not in message
    assert repr(name) in message and str(tmp_path / folder) in message and "download=True" in message


def network_reachable(host="www.cs.toronto.edu") -> bool:
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


@pytest.mark.skipif(network_reachable(), reason="network reachable: would download the real CIFAR-10 (170 MB)")
def test_download_without_network_is_one_clear_line(tmp_path):
    with pytest.raises(RuntimeError) as info:
        load_data(TrialConfig(dataset="cifar10", data_dir=str(tmp_path), download=True))
    message = str(info.value)
    assert "\n" not in message
    assert "'cifar10'" in message and str(tmp_path / "cifar-10-batches-py") in message
    assert "cifar-10-python.tar.gz" in message  # how to get the files by hand


# --------------------------------------------------------------------------- image_folder

def write_png(path, size, colour, mode):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


@pytest.mark.parametrize("layout", ["flat", "class_subfolders"])
def test_image_folder(tmp_path, layout):
    colours = [(200, 50, 0), (0, 120, 255)] * 5
    for i, colour in enumerate(colours):
        sub = f"class{i % 2}/" if layout == "class_subfolders" else ""
        write_png(tmp_path / f"{sub}img{i:02d}.png", (20 + i, 30), colour, "RGB")
    (tmp_path / "notes.txt").write_text("not an image")
    cfg = TrialConfig(dataset="image_folder", data_dir=str(tmp_path), image_size=16, channels=3)
    data = load_data(cfg)
    assert data.train.dtype == np.uint8
    assert data.train.shape == (8, 3, 16, 16) and data.val.shape == (2, 3, 16, 16)
    # solid-colour images survive the crop and resize exactly, channels in RGB order
    seen = {tuple(int(v) for v in img[:, 0, 0]) for img in np.concatenate([data.train, data.val])}
    assert seen == set(colours)
    grey = load_data(cfg.replace(channels=1))
    assert grey.train.shape == (8, 1, 16, 16)


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_data(TrialConfig(dataset="image_folder", data_dir=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="found 0 image"):
        load_data(TrialConfig(dataset="image_folder", data_dir=str(tmp_path / "empty")))


# --------------------------------------------------------------------------- natural_patches

def test_registry_covers_every_dataset():
    assert set(DATASET_LOADERS) == set(DATASETS)


@pytest.mark.parametrize("name", list(NATURAL_PHOTOS))
def test_every_photo_loads_offline(name):
    for channels in (1, 3):
        img = natural_photo(name, channels)
        assert img.dtype == np.float32 and img.ndim == 3 and img.shape[0] == channels
        assert min(img.shape[1:]) >= 64
        assert 0.0 <= img.min() and img.max() <= 1.0 and img.std() > 0.01


def test_natural_photo_split_is_disjoint():
    assert set(NATURAL_TRAIN_PHOTOS).isdisjoint(NATURAL_VAL_PHOTOS)
    assert set(NATURAL_TRAIN_PHOTOS) | set(NATURAL_VAL_PHOTOS) == set(NATURAL_PHOTOS)


def found_in(patch: np.ndarray, photo: np.ndarray) -> bool:
    size = patch.shape[-1]
    for top, left in np.argwhere(photo[0] == patch[0, 0, 0]):
        if np.array_equal(photo[:, top:top + size, left:left + size], patch):
            return True
    return False


@pytest.mark.parametrize("channels", [1, 3])
def test_natural_patches(channels):
    cfg = TrialConfig(dataset="natural_patches", n_train=300, n_val=100, image_size=16, channels=channels)
    data = load_data(cfg)
    assert data.train.shape == (300, channels, 16, 16) and data.val.shape == (100, channels, 16, 16)
    assert data.train.dtype == np.float32 and data.val.dtype == np.float32
    assert 0.0 <= data.train.min() and data.train.max() <= 1.0
    assert data.info["sources_train"] == list(NATURAL_TRAIN_PHOTOS)
    assert data.info["sources_val"] == list(NATURAL_VAL_PHOTOS)
    # validation patches are cut from the held-out photos
    val_photos = [natural_photo(p, channels) for p in NATURAL_VAL_PHOTOS]
    for patch in data.val[:5]:
        assert any(found_in(patch, photo) for photo in val_photos)
    again = load_data(cfg)
    assert np.array_equal(again.train, data.train) and np.array_equal(again.val, data.val)
    other = load_data(cfg.replace(data_seed=1))
    assert not np.array_equal(other.train, data.train) and not np.array_equal(other.val, data.val)


def test_natural_patches_too_large_is_a_config_error():
    with pytest.raises(ConfigError, match="image_size=4096"):
        load_data(TrialConfig(dataset="natural_patches", image_size=4096, n_train=2, n_val=2))


# --------------------------------------------------------------------------- powerlaw_gaussian

def fitted_exponent(x: np.ndarray) -> float:
    """Minus the log-log slope of the descending covariance eigenvalues over every rank."""
    eig = np.linalg.eigvalsh(np.cov(x.reshape(len(x), -1), rowvar=False))[::-1]
    k = np.arange(1, len(eig) + 1)
    return -np.polyfit(np.log(k), np.log(eig), 1)[0]


@pytest.mark.parametrize("rotate", [True, False])
@pytest.mark.parametrize("alpha", [0.8, 1.6])
def test_powerlaw_gaussian_spectrum(alpha, rotate):
    cfg = TrialConfig(dataset="powerlaw_gaussian", data_alpha=alpha, data_rotate=rotate,
                      image_size=8, channels=1, n_train=20000, n_val=64)
    data = load_data(cfg)
    assert data.train.shape == (20000, 1, 8, 8) and data.train.dtype == np.float32
    assert data.info["alpha_true"] == alpha and data.info["rotated"] == rotate
    assert abs(fitted_exponent(data.train) - alpha) < 0.1
    assert abs(data.train.mean() - 0.5) < 0.01
    x = data.train.reshape(20000, -1).astype(np.float64)
    corr = np.corrcoef(x, rowvar=False)
    off_diagonal = np.abs(corr[~np.eye(64, dtype=bool)]).max()
    if not rotate:  # the seed's diagonal form: pixel k has variance scale^2 k^-alpha, no correlations
        k = np.arange(1, 65)
        np.testing.assert_allclose(x.var(axis=0), data.info["scale"] ** 2 * k ** -alpha, rtol=0.05)
        assert off_diagonal < 0.05
    else:  # a random orthonormal basis correlates the pixels
        assert off_diagonal > 0.3


def test_powerlaw_gaussian_deterministic():
    cfg = TrialConfig(dataset="powerlaw_gaussian", n_train=50, n_val=10)
    a, b = load_data(cfg), load_data(cfg)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val)
    assert not np.array_equal(load_data(cfg.replace(data_seed=1)).train, a.train)
    # the validation set does not depend on how many training samples were drawn
    assert np.array_equal(load_data(cfg.replace(n_train=60)).val, a.val)


# --------------------------------------------------------------------------- digits, data_key

def test_digits():
    data = load_data(TrialConfig(dataset="digits", image_size=8, channels=1))
    assert data.train.dtype == np.float32
    assert data.train.shape == (1438, 1, 8, 8) and data.val.shape == (359, 1, 8, 8)
    assert data.train.min() == 0.0 and data.train.max() == 1.0
    big = load_data(TrialConfig(dataset="digits", image_size=28, channels=3))
    assert big.train.shape == (1438, 3, 28, 28)
    assert 0.0 <= big.train.min() and big.train.max() <= 1.0


def test_data_key_names_what_determines_the_data():
    cfg = TrialConfig(dataset="powerlaw_gaussian")
    assert data_key(cfg) == data_key(cfg.replace(seed=5, lr=0.1, gamma=1.0, variant="powerlaw", net="mlp"))
    assert data_key(cfg) != data_key(cfg.replace(data_alpha=2.0))
    assert data_key(cfg) != data_key(cfg.replace(data_seed=1))
    hash(data_key(cfg))
    cifar = TrialConfig(dataset="cifar10", data_dir="/data")
    assert dict(data_key(cifar))["data_dir"] == "/data"
    assert data_key(cifar) == data_key(cifar.replace(n_train=7, data_alpha=3.0))


# --------------------------------------------------------------------------- VAEDataModule

def epoch(loader) -> torch.Tensor:
    batches = list(loader)
    for b in batches:
        assert isinstance(b, torch.Tensor) and b.dtype == torch.float32
    return torch.cat(batches)


def test_datamodule_batches_and_order():
    cfg = TrialConfig(dataset="natural_patches", n_train=100, n_val=30, batch_size=32, seed=3)
    dm = VAEDataModule(cfg)
    dm.setup("fit")
    first = list(dm.train_dataloader())
    assert [len(b) for b in first] == [32, 32, 32, 4]  # drop_last=False
    assert first[0].shape == (32, 1, 16, 16)
    train = epoch(first)
    assert 0.0 <= train.min() and train.max() <= 1.0
    # shuffled: a permutation of the training set, the same for the same seed, another for another
    assert images_as_set(train.numpy()) == images_as_set(dm.data.train)
    assert not torch.equal(train, torch.from_numpy(dm.data.train))
    same = VAEDataModule(cfg, data=dm.data)
    assert torch.equal(epoch(same.train_dataloader()), train)
    assert not torch.equal(epoch(VAEDataModule(cfg.replace(seed=4), data=dm.data).train_dataloader()), train)
    # validation in order
    assert torch.equal(epoch(dm.val_dataloader()), torch.from_numpy(dm.data.val))


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_datamodule_read_only_arrays(dtype):
    """Arrays from Ray's object store are read-only: each item is converted into its own tensor
    (torch warns once per process on non-writable arrays, so check memory, not warnings)."""
    rng = np.random.default_rng(0)
    make = lambda n: (rng.integers(0, 256, (n, 3, 8, 8)) if dtype == np.uint8 else rng.random((n, 3, 8, 8))).astype(dtype)  # noqa: E731
    train, val = make(10), make(4)
    expected_val = torch.tensor(val, dtype=torch.float32) / (255.0 if dtype == np.uint8 else 1.0)
    before = train.copy()
    for a in (train, val):
        a.setflags(write=False)
    dm = VAEDataModule(TrialConfig(batch_size=4, image_size=8, channels=3), data=DataSplits(train, val, {}))
    item = dm.train_dataloader().dataset[0]
    assert item.dtype == torch.float32 and not np.shares_memory(item.numpy(), train)
    item.add_(1)  # writable, and the shared array is untouched
    assert np.array_equal(train, before)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batches = epoch(dm.val_dataloader())
        assert len(epoch(dm.train_dataloader())) == 10
    torch.testing.assert_close(batches, expected_val)


def test_datamodule_workers_give_the_same_batches():
    cfg = TrialConfig(dataset="digits", batch_size=256, seed=7)
    data = load_data(cfg)
    in_process = epoch(VAEDataModule(cfg, data=data).train_dataloader())
    with_worker = epoch(VAEDataModule(cfg.replace(num_workers=1), data=data).train_dataloader())
    assert torch.equal(in_process, with_worker)


def test_datamodule_in_a_lightning_trainer():
    """A real Trainer fits an autoencoder built by plvae.nets on the DataModule's batches."""
    import pytorch_lightning as pl
    from torch import nn

    from plvae.nets import build_nets

    class AutoEncoder(pl.LightningModule):
        def __init__(self, cfg):
            super().__init__()
            self.encoder, self.decoder, width = build_nets(cfg)
            self.head = nn.Linear(width, cfg.latent_dim)
            self.val_losses = []

        def loss(self, x):
            return nn.functional.mse_loss(self.decoder(self.head(self.encoder(x))), x)

        def training_step(self, x, _):
            return self.loss(x)

        def validation_step(self, x, _):
            self.val_losses.append(float(self.loss(x)))

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    cfg = TrialConfig(n_train=128, n_val=64, enc_out_dim=32, batch_size=32, max_epochs=2)
    model = AutoEncoder(cfg)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=VAEDataModule(cfg))
    assert trainer.global_step == 2 * 4  # 128 / 32 batches per epoch
    assert len(model.val_losses) == 2 * 2 and all(np.isfinite(model.val_losses))


@pytest.mark.parametrize("limit", [1000, 3000])   # 4096 pixels: over twice the limit (error), over it (warning)
def test_image_folder_decompression_bomb_is_one_line_naming_the_file(tmp_path, monkeypatch, limit):
    from PIL import Image

    for i in range(3):
        Image.new("L", (64, 64), color=i * 40).save(tmp_path / f"img{i}.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)   # a 64x64 image stands in for a gigapixel bomb
    with pytest.raises(ConfigError) as err:
        load_data(TrialConfig(dataset="image_folder", data_dir=str(tmp_path), image_size=8))
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "img0.png") in msg and "allowed:" in msg
