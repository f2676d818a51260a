import pickle
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar
from torchvision import datasets as tv_datasets

from mae_minimal.data import (
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataError,
    SyntheticShapes,
    build_dataset,
    denormalize,
    num_classes,
)
from mae_minimal.masking import masking_noise
from mae_minimal.sampler import ResumableDistributedSampler, SeededItems, seeded_item


def test_photo_crops_are_normalised_rgb_and_fixed_by_the_seed():
    photos = build_dataset("photos", "train", 32, length=10)
    first, second = seeded_item(photos, 3, seed=7), seeded_item(photos, 3, seed=7)
    assert len(photos) == 10 and first[0].shape == (3, 32, 32) and first[1] == 0
    assert torch.equal(first[0], second[0])
    assert not torch.equal(first[0], seeded_item(photos, 3, seed=8)[0])
    assert -2.2 < first[0].min() and first[0].max() < 2.7  # ImageNet-normalised range


def test_held_out_photos_are_other_photographs():
    train, held_out = build_dataset("photos", "train", 32), build_dataset("photos", "val", 32)
    assert len(train.photos) == 14 and len(held_out.photos) == 2
    for photo in held_out.photos:
        assert not any(np.array_equal(np.asarray(photo), np.asarray(seen)) for seen in train.photos)


def test_digits_have_ten_classes_and_a_fixed_held_out_fifth():
    train, held_out = build_dataset("digits", "train", 32), build_dataset("digits", "val", 32)
    assert (len(train), len(held_out)) == (1438, 359) and num_classes(train) == 10
    image, label = held_out[0]
    assert image.shape == (3, 32, 32) and 0 <= label < 10
    assert torch.equal(held_out[0][0], build_dataset("digits", "val", 32)[0][0])


def test_shapes_are_labelled_deterministic_and_cover_every_class():
    shapes = build_dataset("shapes", "train", 32, augment=False, length=200)
    assert num_classes(shapes) == len(SyntheticShapes.CLASSES) == 10
    assert torch.equal(shapes[5][0], build_dataset("shapes", "train", 32, augment=False, length=200)[5][0])
    assert {shapes[i][1] for i in range(200)} == set(range(10))
    held_out = build_dataset("shapes", "val", 32, length=50)
    assert not torch.equal(held_out[0][0], shapes[0][0])


@pytest.mark.parametrize("mean, std", [(IMAGENET_MEAN, IMAGENET_STD), (FASHION_MNIST_MEAN, FASHION_MNIST_STD)])
def test_denormalize_inverts_the_normalisation(mean, std):
    pixels = torch.rand(2, len(mean), 4, 4, generator=torch.Generator().manual_seed(0))
    normalised = (pixels - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    assert torch.allclose(denormalize(normalised, mean, std), pixels, atol=1e-6)


def test_image_folder_uses_train_and_val_subfolders(write_image_folder, tmp_path):
    write_image_folder(tmp_path / "train")
    write_image_folder(tmp_path / "val", per_class=2)
    train, val = (
        build_dataset("imagefolder", "train", 16, tmp_path),
        build_dataset("imagefolder", "val", 16, tmp_path),
    )
    assert (len(train), len(val)) == (10, 4) and num_classes(train) == 2
    assert train[0][0].shape == (3, 16, 16)


def test_image_folder_without_splits_holds_out_a_fixed_tenth(write_image_folder, tmp_path):
    write_image_folder(tmp_path, per_class=10)
    train, val = (
        build_dataset("imagefolder", "train", 16, tmp_path),
        build_dataset("imagefolder", "val", 16, tmp_path),
    )
    assert (len(train), len(val)) == (18, 2) and num_classes(val) == 2
    assert not set(train.indices) & set(val.indices)


@pytest.mark.parametrize("problem", ["missing", "empty", "unreadable", "truncated"])
def test_bad_image_folders_get_clear_errors(tmp_path, write_image_folder, problem):
    if problem == "empty":
        (tmp_path / "data" / "cat").mkdir(parents=True)
    if problem == "unreadable":
        (tmp_path / "data" / "cat").mkdir(parents=True)
        (tmp_path / "data" / "cat" / "broken.png").write_bytes(b"not an image")
    if problem == "truncated":  # PIL's verify() would let it through: the check decodes each image in full
        write_image_folder(tmp_path / "data")
        (tmp_path / "data" / "dog" / "2.png").write_bytes((tmp_path / "data" / "dog" / "2.png").read_bytes()[:60])
    message = {
        "missing": "no image folder at",
        "empty": "found no images in",
        "unreadable": "cannot read image",
        "truncated": "cannot read image .*dog/2.png",
    }
    with pytest.raises(DataError, match=message[problem]):
        build_dataset("imagefolder", "train", 16, tmp_path / "data")


def test_an_image_unreadable_when_met_is_replaced_by_the_next_one_with_a_warning_naming_it(
    tmp_path, write_image_folder, capsys
):  # fmt: skip
    write_image_folder(tmp_path, per_class=3)
    dataset = build_dataset("imagefolder", "val", 16, tmp_path, augment=False)
    folder, index = dataset.dataset, dataset.indices[0]
    broken = Path(folder.samples[index][0])
    broken.write_bytes(broken.read_bytes()[:60])  # truncated after the check, as a file past the first 1,000
    image, label = dataset[0]
    assert torch.equal(image, folder[(index + 1) % len(folder)][0])
    assert capsys.readouterr().err.startswith(f"warning: skipped unreadable image {broken} (")


def test_a_folder_whose_images_all_became_unreadable_is_an_error(tmp_path, write_image_folder):
    write_image_folder(tmp_path, per_class=1)
    dataset = build_dataset("imagefolder", "train", 16, tmp_path, augment=False)
    for path, _ in dataset.dataset.samples:
        Path(path).write_bytes(b"")
    with pytest.raises(DataError, match="no image in .* can be read"):
        dataset[0]


def write_fake_cifar10(root, images_per_batch=4):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            "data": rng.integers(0, 256, (images_per_batch, 3072), dtype=np.uint8),
            "labels": [1, 2, 3, 4],
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"class{i}" for i in range(10)]}))


def test_cifar10_loader_reads_the_torchvision_layout(tmp_path, monkeypatch):
    write_fake_cifar10(tmp_path)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args: True)  # fake files
    train, test = (
        build_dataset("cifar10", "train", 32, tmp_path),
        build_dataset("cifar10", "val", 32, tmp_path),
    )
    assert (len(train), len(test)) == (20, 4) and num_classes(train) == 10
    image, label = test[0]
    assert image.shape == (3, 32, 32) and label == 1


def test_cifar_without_network_gets_a_clear_error(tmp_path, monkeypatch):
    def no_network(self):
        raise OSError("network is unreachable")

    monkeypatch.setattr(tv_datasets.CIFAR10, "download", no_network)
    with pytest.raises(DataError, match="could not be downloaded.*--data_path"):
        build_dataset("cifar10", "train", 32, tmp_path)


def test_unknown_dataset_is_named_in_the_error():
    with pytest.raises(DataError, match="unknown dataset 'imagenet'"):
        build_dataset("imagenet", "train", 32)


def test_seeded_items_fix_augmentation_and_noise_by_epoch_and_index():
    noise_of = partial(masking_noise, "random", (4, 4), 0.75)
    items = SeededItems(build_dataset("photos", "train", 32, length=8), noise_of, seed=0)
    image, _, noise = items[(0, 3)]
    again_image, _, again_noise = items[(0, 3)]
    next_epoch_image, _, next_epoch_noise = items[(1, 3)]
    assert torch.equal(image, again_image) and torch.equal(noise, again_noise) and noise.shape == (16,)
    assert not torch.equal(image, next_epoch_image) and not torch.equal(noise, next_epoch_noise)


def test_sampler_splits_an_epoch_over_ranks_and_can_start_part_way():
    dataset = list(range(12))
    ranks = [
        ResumableDistributedSampler(dataset, num_replicas=2, rank=r, seed=0, drop_last=True) for r in (0, 1)
    ]
    for sampler in ranks:
        sampler.start_epoch(3)
    shares = [[index for _, index in sampler] for sampler in ranks]
    assert sorted(shares[0] + shares[1]) == dataset
    assert all(epoch == 3 for epoch, _ in ranks[0])
    ranks[0].start_epoch(3, skip=4)
    assert [index for _, index in ranks[0]] == shares[0][4:] and len(ranks[0]) == 2


def test_fashion_mnist_is_one_channel_and_normalised_with_its_own_statistics():
    train = build_dataset("fashion_mnist", "train", 28, augment=False)
    test = build_dataset("fashion_mnist", "val", 28, augment=False, length=100)
    assert (len(train), len(test), num_classes(train)) == (60_000, 100, 10)
    image, label = train[0]
    assert image.shape == (1, 28, 28) and 0 <= label < 10
    assert abs(train.images.mean().item()) < 1e-3 and abs(train.images.std().item() - 1) < 1e-3


def test_fashion_mnist_augmentation_only_flips():
    train = build_dataset("fashion_mnist", "train", 28, length=10)
    image = train[3][0]
    assert torch.equal(image, train.images[3]) or torch.equal(image, train.images[3].flip(-1))


def test_a_missing_fashion_mnist_names_both_remedies(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(tv_datasets.FashionMNIST, "download", no_network)
    with pytest.raises(DataError, match="dataset-fashion-mnist package, or download it.*--data_path"):
        build_dataset("fashion_mnist", "train", 28, data_path=tmp_path)


def test_fashion_mnist_needs_a_model_for_28_pixels():
    with pytest.raises(DataError, match="28x28"):
        build_dataset("fashion_mnist", "train", 32)
