"""Datasets for pretraining and probing, with their transforms and held-out splits.

The book's main dataset:
  fashion_mnist  70,000 28x28 grey images of garments, 10 classes (train 60k, test 10k
                 as "val"): offline from Debian's dataset-fashion-mnist package, else
                 downloaded by torchvision to --data_path. One channel, normalised with
                 its own mean and std.
Offline, with nothing to download (they ship inside scikit-image and scikit-learn):
  photos   random crops of real photographs; the held-out split is two photos never
           trained on
  digits   scikit-learn's 1,797 handwritten digits (8x8, upscaled), 10 classes
  shapes   a procedurally generated labelled set: 10 classes of shapes and textures
With a download or a folder of your own:
  cifar10, cifar100   through torchvision, downloaded to --data_path when the network
                      allows
  imagefolder         any folder of class subfolders (ImageNet, Imagenette...): `train/`
                      and `val/` when present, else a fixed 10% of the images is held
                      out. Its first 1,000 images are decoded before anything starts (a
                      folder of broken files is refused at once); an unreadable image
                      met later is replaced by the next readable one, with a warning
                      naming it

Every dataset yields (image, label), the image a (C, H, W) tensor normalised with the
mean and std that `normalization(name)` gives: the ImageNet ones for every colour
dataset.
"""

import gzip
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset
from torchvision import datasets as tv_datasets
from torchvision import transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FASHION_MNIST_MEAN = (0.2860,)  # over the 60,000 training images, pixels in [0, 1]
FASHION_MNIST_STD = (0.3530,)
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DATASETS = ("fashion_mnist", "photos", "digits", "shapes", "cifar10", "cifar100",
            "imagefolder")  # fmt: skip
TRAIN_PHOTOS = (
    "astronaut", "coffee", "rocket", "hubble_deep_field", "retina",
    "immunohistochemistry", "stereo_motorcycle", "china.jpg", "camera", "coins", "moon",
    "grass", "gravel", "brick",
)  # fmt: skip
HELD_OUT_PHOTOS = ("chelsea", "flower.jpg")


class DataError(Exception):
    """A dataset that cannot be used: missing, empty, unreadable or too small."""


def train_transform(input_size):
    """The paper's pretraining augmentation: a random crop of 20-100% of the area, then
    a flip."""
    bicubic = transforms.InterpolationMode.BICUBIC
    return transforms.Compose([
        transforms.RandomResizedCrop(input_size, scale=(0.2, 1.0),
                                     interpolation=bicubic),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])  # fmt: skip


def eval_transform(input_size):
    """No randomness: resize the short side, then take the centre."""
    return transforms.Compose([
        transforms.Resize(input_size,
                          interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(input_size),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])  # fmt: skip


def normalization(dataset):
    """(mean, std) per channel that a dataset (a name or one built by build_dataset) is
    normalised with."""
    if dataset == "fashion_mnist" or isinstance(dataset, FashionMNIST):
        return FASHION_MNIST_MEAN, FASHION_MNIST_STD
    return IMAGENET_MEAN, IMAGENET_STD


def denormalize(imgs, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Normalised (N, C, H, W) -> pixel values in [0, 1], for showing (ImageNet's mean
    and std unless told otherwise)."""
    mean = torch.tensor(mean, device=imgs.device).view(1, -1, 1, 1)
    std = torch.tensor(std, device=imgs.device).view(1, -1, 1, 1)
    return (imgs * std + mean).clamp(0, 1)


def read_idx(path):
    """An IDX file (gzipped, as Fashion-MNIST ships) -> a uint8 array of the shape it
    declares."""
    with gzip.open(path) as file:
        data = file.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_mnist_arrays(data_path, train):
    """(images (N, 28, 28) uint8, labels (N,)): from Debian's package or data_path when
    there, else downloaded to data_path by torchvision."""
    prefix = "train" if train else "t10k"
    for folder in [Path(data_path)] if data_path else [DEBIAN_FASHION_MNIST]:
        images, labels = (
            folder / f"{prefix}-images-idx3-ubyte.gz",
            folder / f"{prefix}-labels-idx1-ubyte.gz",
        )
        if images.is_file() and labels.is_file():
            return read_idx(images), read_idx(labels)
    root = data_path or "data"
    try:
        dataset = tv_datasets.FashionMNIST(root, train=train, download=True)
    except Exception as error:  # no network, a full disk...
        raise DataError(
            f"Fashion-MNIST is not in {data_path or DEBIAN_FASHION_MNIST} and could "
            f"not be downloaded to {root} ({type(error).__name__}); install Debian's "
            f"dataset-fashion-mnist package, or download it where there is a network "
            f"and pass its folder as --data_path"
        ) from None
    return dataset.data.numpy(), dataset.targets.numpy()


class FashionMNIST(Dataset):
    """Fashion-MNIST as normalised (1, 28, 28) tensors and labels, decoded once into
    memory; with augment, each image is flipped left-right with probability 1/2 (torch's
    random generator)."""

    CLASSES = ("T-shirt/top", "trouser", "pullover", "dress", "coat",
               "sandal", "shirt", "sneaker", "bag", "ankle boot")  # fmt: skip

    def __init__(self, data_path, train, augment, length=None):
        images, labels = fashion_mnist_arrays(data_path, train)
        images, labels = images[:length], labels[:length]  # the files come shuffled
        # (N, 1, 28, 28)
        pixels = torch.from_numpy(images.copy()).float().div_(255).unsqueeze(1)
        self.images = (pixels - FASHION_MNIST_MEAN[0]) / FASHION_MNIST_STD[0]
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.augment = augment

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        image = self.images[index]
        if self.augment and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image, int(self.labels[index])


def load_photo(name):
    """One bundled photograph as an RGB PIL image (grey ones are repeated over 3
    channels)."""
    if name.endswith(".jpg"):
        from sklearn.datasets import load_sample_image

        array = load_sample_image(name)
    else:
        import skimage.data

        array = getattr(skimage.data, name)()
        # a stereo pair: its left image
        array = array[0] if isinstance(array, tuple) else array
    return Image.fromarray(np.asarray(array, dtype=np.uint8)).convert("RGB")


class PhotoCrops(Dataset):
    """`length` crops of a few photographs; item i is a crop of photo i % len(photos).

    The photos are shrunk to at most max(256, 2 x input_size) pixels a side, which keeps
    crops near the input size (they cover 20% to 100% of the area) and makes cropping
    fast.
    """

    def __init__(self, photo_names, length, transform, input_size):
        self.photos = [load_photo(name) for name in photo_names]
        longest_side = max(256, 2 * input_size)
        for photo in self.photos:
            photo.thumbnail((longest_side, longest_side))
        self.length = length
        self.transform = transform

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        return self.transform(self.photos[index % len(self.photos)]), 0


def shape_image(label, size, rng):
    """One image of class `label` (see SyntheticShapes.CLASSES) as an RGB uint8 array
    (size, size, 3)."""
    y, x = np.mgrid[0:size, 0:size] / size  # coordinates in [0, 1)
    cx, cy = rng.uniform(0.35, 0.65, size=2)
    r = rng.uniform(0.18, 0.3)
    dx, dy = np.abs(x - cx), np.abs(y - cy)
    dist = np.hypot(x - cx, y - cy)
    period = rng.uniform(0.12, 0.25)
    phase = rng.uniform(0, 2 * np.pi)
    shapes = [
        dist < r,  # disc
        (dist < r) & (dist > 0.6 * r),  # ring
        (dx < r) & (dy < r),  # square
        (dx < r) & (dy < r) & ~((dx < 0.6 * r) & (dy < 0.6 * r)),  # frame
        (y > cy - r) & (y < cy + r) & (dx < (y - cy + r) / 2),  # triangle
        ((dx < r / 3) & (dy < r)) | ((dy < r / 3) & (dx < r)),  # cross
        np.sin(2 * np.pi * y / period + phase) > 0,  # horizontal stripes
        np.sin(2 * np.pi * x / period + phase) > 0,  # vertical stripes
        (np.sin(2 * np.pi * x / period + phase) > 0)
        ^ (np.sin(2 * np.pi * y / period) > 0),  # checks
        np.sin(2 * np.pi * (x + y) / period + phase) > 0,  # diagonal stripes
    ]
    background, foreground = rng.uniform(0, 1, size=(2, 3))
    while np.abs(background - foreground).sum() < 0.6:  # keep the shape visible
        foreground = rng.uniform(0, 1, size=3)
    image = np.where(shapes[label][..., None], foreground, background)
    image = image + rng.normal(0, 0.05, size=image.shape)
    return (image.clip(0, 1) * 255).astype(np.uint8)


class SyntheticShapes(Dataset):
    """A labelled set made by a program: item i is always the same image, made from seed
    (first + i)."""

    CLASSES = ("disc", "ring", "square", "frame", "triangle", "cross",
               "horizontal stripes", "vertical stripes", "checkerboard",
               "diagonal stripes")  # fmt: skip

    def __init__(self, length, first_seed, image_size, transform):
        self.length, self.first_seed, self.image_size = length, first_seed, image_size
        self.transform = transform

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        rng = np.random.default_rng(self.first_seed + index)
        label = int(rng.integers(len(self.CLASSES)))
        return self.transform(
            Image.fromarray(shape_image(label, self.image_size, rng))
        ), label


class Digits(Dataset):
    """scikit-learn's handwritten digits as RGB images; `indices` selects the split."""

    def __init__(self, indices, transform):
        from sklearn.datasets import load_digits

        digits = load_digits()
        # values 0..16
        self.images = (digits.images[indices] * (255 / 16)).astype(np.uint8)
        self.labels = digits.target[indices]
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        image = Image.fromarray(self.images[index]).convert("RGB")
        return self.transform(image), int(self.labels[index])


def held_out_indices(length, fraction=0.1):
    """A fixed (seed 0) split of range(length) into (train, held_out) index arrays; each
    gets at least one index when there are two or more."""
    order = np.random.default_rng(0).permutation(length)
    cut = min(max(1, round(length * fraction)), length - 1)
    return np.sort(order[cut:]), np.sort(order[:cut])


def cifar(name, root, train, transform):
    dataset_class = tv_datasets.CIFAR10 if name == "cifar10" else tv_datasets.CIFAR100
    try:
        return dataset_class(root, train=train, transform=transform, download=False)
    except RuntimeError:
        pass  # not there yet: download it
    try:
        return dataset_class(root, train=train, transform=transform, download=True)
    except Exception as error:  # no network, a full disk, a proxy...
        raise DataError(
            f"{name} is not in {root} and could not be downloaded "
            f"({type(error).__name__}: {error}); download it where there is a network "
            f"and pass its folder as --data_path"
        ) from None


class CheckedImageFolder(tv_datasets.ImageFolder):
    """ImageFolder that carries on past a bad file: an unreadable image (truncated,
    corrupt) is replaced by the next readable one in file order, with a one-line warning
    naming it on stderr."""

    def __getitem__(self, index):
        for offset in range(len(self)):
            replacement = (index + offset) % len(self)
            try:
                return super().__getitem__(replacement)
            except (OSError, ValueError) as error:
                print(f"warning: skipped unreadable image "
                      f"{self.samples[replacement][0]} ({error}); remove or replace it",
                      file=sys.stderr)  # fmt: skip
        raise DataError(f"no image in {self.root} can be read")


def image_folder(root, split, transform):
    root = Path(root) if root else None
    if root is None or not root.is_dir():
        raise DataError(
            f"no image folder at {root}: pass --data_path pointing to a folder of "
            f"class subfolders"
        )
    has_splits = (root / "train").is_dir() and (root / "val").is_dir()
    folder = root / ("train" if split == "train" else "val") if has_splits else root
    try:
        dataset = CheckedImageFolder(str(folder), transform=transform)
    except (FileNotFoundError, OSError) as error:
        raise DataError(
            f"found no images in {folder} ({error}); expected class subfolders of "
            f"image files"
        ) from None
    # refuse a folder of broken files at once (later ones are skipped)
    for path, _ in dataset.samples[:1000]:
        try:
            with Image.open(path) as image:
                image.load()  # decoded in full: verify() misses a truncated file
        except Exception as error:
            raise DataError(f"cannot read image {path}: {error}") from None
    if has_splits:
        return dataset
    train_indices, held_out = held_out_indices(len(dataset))
    subset = Subset(dataset, train_indices if split == "train" else held_out)
    subset.classes = dataset.classes
    return subset


def build_dataset(name, split, input_size, data_path=None, augment=None, length=None):
    """The `split` ("train" or "val") of dataset `name`, as (image, label) pairs.

    augment: use the random pretraining augmentation; by default on for "train", off
    for "val".
    length: how many crops make an epoch of "photos" (default 2048 for train, 64 for
    val), how many images "shapes" has (default 4000 for train, 500 for val), or how
    many of the first Fashion-MNIST images to use (default all).
    """
    if name not in DATASETS:
        raise DataError(
            f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}"
        )
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    augment = split == "train" if augment is None else augment
    transform = train_transform(input_size) if augment else eval_transform(input_size)
    train = split == "train"
    if name == "fashion_mnist":
        if input_size != 28:
            raise DataError(
                f"Fashion-MNIST images are 28x28: use a model for 28-pixel images, "
                f"not {input_size}"
            )
        return FashionMNIST(data_path, train, augment, length)
    # held-out crops are random too, so that each shows another part of a photo
    if name == "photos":
        names, default_length = (TRAIN_PHOTOS, 2048) if train else (HELD_OUT_PHOTOS, 64)
        return PhotoCrops(
            names, length or default_length, train_transform(input_size), input_size
        )
    if name == "shapes":
        size = max(input_size, 32)
        return SyntheticShapes(
            length or (4000 if train else 500), 0 if train else 10**6, size, transform
        )
    if name == "digits":
        train_indices, held_out = held_out_indices(1797, fraction=0.2)
        return Digits(train_indices if train else held_out, transform)
    if name in ("cifar10", "cifar100"):
        return cifar(name, data_path or "data", train, transform)
    return image_folder(data_path, split, transform)


def num_classes(dataset):
    """How many classes a dataset built by build_dataset has (1 for the unlabelled
    photos)."""
    if isinstance(dataset, PhotoCrops):
        return 1
    if isinstance(dataset, SyntheticShapes):
        return len(dataset.CLASSES)
    if isinstance(dataset, (Digits, FashionMNIST)):
        return 10
    return len(dataset.classes)
