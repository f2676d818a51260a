"""How good is a pretrained encoder? Linear probing and fine-tuning on a labelled
dataset.

    python mae_minimal/evaluate.py linprobe \\
        --checkpoint output/mae_pretrain/checkpoint.pth
    python mae_minimal/evaluate.py finetune \\
        --checkpoint output/mae_pretrain/checkpoint.pth
    python mae_minimal/evaluate.py linprobe --random_init \\
        --model vit_mini_patch8_64px   # the baseline

A checkpoint written by mae_minimal rebuilds its own architecture; an official one needs
--model. Both report top-1 accuracy on the held-out split, print it and write it to
--output_dir. Linear probing freezes the encoder and trains BatchNorm (without affine
parameters) and a linear layer on its features, with SGD (the paper uses LARS at batch
16384; it notes plain SGD works similarly). Fine-tuning trains everything with AdamW,
layer-wise lr decay, label smoothing and a warmup then a cosine. The images are not
augmented: the offline datasets are small, and the paper's RandAugment, mixup and cutmix
recipe is sized for ImageNet.
"""

import argparse
import json
import math
import sys
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from mae_minimal.checkpoint import encoder_kwargs, load_checkpoint, read_checkpoint
from mae_minimal.classifier import ViTClassifier
from mae_minimal.data import DATASETS, DataError, build_dataset, num_classes
from mae_minimal.denoising import DenoisingAutoencoder
from mae_minimal.factories import CLASSIFIERS, LAYER_NORM
from mae_minimal.masking import masking_noise
from mae_minimal.optim import lr_at, param_groups
from mae_minimal.output_dir import check_output_dir
from mae_minimal.pretrain import train_step


def encoder_of(model_name, checkpoint=None, input_size=None):
    """The encoder's constructor arguments: those a checkpoint written by mae_minimal
    carries, else those of model_name (a vit_* size); input_size replaces the image
    size."""
    if isinstance(checkpoint, dict) and "model_config" in checkpoint:
        encoder = encoder_kwargs(checkpoint["model_config"])
    elif model_name in CLASSIFIERS:
        encoder = {"img_size": 224, **CLASSIFIERS[model_name], "norm_layer": LAYER_NORM}
    elif model_name is None:
        raise ValueError(
            "--model is needed: the checkpoint does not say which model it holds"
        )
    else:
        raise ValueError(
            f"unknown model {model_name!r}; choose one of {', '.join(CLASSIFIERS)}"
        )
    return {**encoder, "img_size": input_size} if input_size is not None else encoder


def build_classifier(
    model_name, num_classes, checkpoint=None, global_pool=True, input_size=None
):
    """A classifier with the encoder of `checkpoint` (a path or loaded checkpoint of an
    MAE, an encoder or a classifier), or randomly initialised without one. A checkpoint
    written by mae_minimal says its own architecture (model_name may be None); otherwise
    model_name, a vit_* size, gives it. input_size: another image size (the positions
    are resized)."""
    if isinstance(checkpoint, (str, Path)):
        checkpoint = read_checkpoint(checkpoint)
    encoder = encoder_of(model_name, checkpoint, input_size)
    classifier = ViTClassifier(
        num_classes=num_classes, global_pool=global_pool, **encoder
    )
    return (
        load_checkpoint(classifier, checkpoint)
        if checkpoint is not None
        else classifier
    )


@torch.no_grad()
def extract_features(classifier, dataset, batch_size=256, device="cpu"):
    """The frozen encoder's features of every image: (N, D) features and (N,) labels."""
    classifier.eval().to(device)
    features, labels = [], []
    for imgs, batch_labels in DataLoader(dataset, batch_size=batch_size):
        features.append(classifier.forward_features(imgs.to(device)).float().cpu())
        labels.append(batch_labels)
    return torch.cat(features), torch.cat(labels)


@torch.no_grad()
def reconstruction_errors(model, dataset, mask_ratio=0.75, masking="random",
                          batch_size=500, seed=0, device="cpu"):  # fmt: skip
    """How well an MAE fills in removed patches of the images in `dataset`, against a
    trivial answer.

    Both are mean squared errors over the removed patches' values, in the units of the
    model's loss target. For pixel targets (in the dataset's normalised units) the
    trivial answer is the visible-mean fill: each removed pixel set to the mean of that
    image's visible pixels. For a norm_pix_loss model, whose targets are patches
    normalised by their own statistics, it is 0: every removed patch flat at its own
    (unknown to the model) mean. The masks are drawn from `seed`.
    Returns {"mse", "visible_mean_mse", "ratio"}, or {"mse", "flat_patch_mse", "ratio"}
    for norm_pix_loss; a ratio well below 1 means the model uses what it sees.
    """
    model.eval().to(device)
    generator = torch.Generator().manual_seed(seed)
    # squared error of the model, of the trivial answer,
    # and the number of removed values
    totals = torch.zeros(3)
    for imgs, _ in DataLoader(dataset, batch_size=batch_size):
        noise = masking_noise(
            masking, model.grid_size, mask_ratio, len(imgs), generator
        )
        _, pred, mask = model(imgs.to(device), mask_ratio, noise.to(device))
        # (N, L, p*p*C), (N, L, 1)
        target, mask = model.loss_target(imgs.to(device)), mask.unsqueeze(-1)
        if model.norm_pix_loss:
            fill = torch.zeros_like(target)
        else:
            visible_mean = (target * (1 - mask)).sum(dim=(1, 2)) / (
                (1 - mask).sum(dim=(1, 2)) * target.shape[-1]
            )
            fill = visible_mean.view(-1, 1, 1).expand_as(target)
        removed = mask.expand_as(target)
        totals += torch.stack([((pred.float() - target) ** 2 * removed).sum(),
                               ((fill - target) ** 2 * removed).sum(),
                               removed.sum()]).cpu()  # fmt: skip
    mse, fill_mse = (totals[0] / totals[2]).item(), (totals[1] / totals[2]).item()
    fill_name = "flat_patch_mse" if model.norm_pix_loss else "visible_mean_mse"
    return {"mse": mse, fill_name: fill_mse, "ratio": mse / fill_mse}


@torch.no_grad()
def denoising_errors(denoiser, dataset, batch_size=500, seed=0, device="cpu"):
    """How well a DenoisingAutoencoder restores the images in `dataset`, against the
    noisy input itself: mean squared errors over every value of the loss target (the
    normalised pixels), the noise drawn from `seed`.
    Returns {"mse", "noisy_input_mse", "ratio"}."""
    denoiser.eval().to(device)
    mae, generator = denoiser.mae, torch.Generator().manual_seed(seed)
    # squared error of the model, of the noisy input, and the number of values
    totals = torch.zeros(3)
    for imgs, _ in DataLoader(dataset, batch_size=batch_size):
        imgs = imgs.to(device)
        noisy = denoiser.corrupt(
            imgs, torch.randn(imgs.shape, generator=generator).to(device)
        )
        target = mae.loss_target(imgs)
        totals += torch.stack([((denoiser.denoise(noisy).float() - target) ** 2).sum(),
                               ((mae.loss_target(noisy) - target) ** 2).sum(),
                               torch.tensor(target.numel())]).cpu()  # fmt: skip
    mse, noisy_mse = (totals[0] / totals[2]).item(), (totals[1] / totals[2]).item()
    return {"mse": mse, "noisy_input_mse": noisy_mse, "ratio": mse / noisy_mse}


def pretext_errors(model, dataset, flags, device="cpu"):
    """A pretrained model's held-out error on the task it was trained for, from its
    train.py flags (a dict): denoising_errors for a denoising autoencoder (objective
    "denoise", noise dae_noise_std), else reconstruction_errors under its mask_ratio and
    masking."""
    if flags.get("objective") == "denoise":
        return denoising_errors(
            DenoisingAutoencoder(model, flags["dae_noise_std"]), dataset, device=device
        )
    return reconstruction_errors(
        model, dataset, flags["mask_ratio"], flags["masking"], device=device
    )


def supervised_loss(criterion, model, batch):
    inputs, labels = batch
    return criterion(model(inputs), labels)


def fit(
    model, optimizer, loader, epochs, lr, warmup_epochs, criterion, device, progress
):
    """Epochs of train_step, one batch each, with a per-step warmup then cosine. Returns
    the last epoch's mean loss."""
    total_steps, warmup_steps = epochs * len(loader), round(warmup_epochs * len(loader))
    loss_fn, step = partial(supervised_loss, criterion), 0
    for _ in tqdm(range(epochs), desc="epochs", disable=not progress):
        model.train()
        total, count = 0.0, 0
        for inputs, labels in loader:
            batch = (inputs.to(device), labels.to(device))
            loss = train_step(
                model, loss_fn, [batch], optimizer,
                lr_at(step, total_steps, warmup_steps, lr, 0.0))  # fmt: skip
            step += 1
            total, count = total + loss.item() * len(labels), count + len(labels)
    return total / count


@torch.no_grad()
def top1(model, loader, device):
    model.eval()
    correct = total = 0
    for inputs, labels in loader:
        correct += (
            (model(inputs.to(device)).argmax(dim=-1).cpu() == labels).sum().item()
        )
        total += len(labels)
    return correct / total


def probe_features(train, val, classes, epochs=90, blr=0.1, lr=None, batch_size=256,
                   warmup_epochs=10, device="cpu", seed=0, progress=True):  # fmt: skip
    """Train BatchNorm (no affine) + linear on fixed features with SGD,
    lr = blr * batch_size / 256 unless lr is given. train, val: (features (N, D),
    labels (N,)); seed: torch's generator is seeded with it first (None: used as it is).
    Returns {"top1", "train_loss"}."""
    if seed is not None:
        torch.manual_seed(seed)
    width = train[0].shape[1]
    head = nn.Sequential(
        nn.BatchNorm1d(width, affine=False, eps=1e-6), nn.Linear(width, classes)
    ).to(device)
    nn.init.trunc_normal_(head[1].weight, std=0.01)
    nn.init.zeros_(head[1].bias)
    loader = DataLoader(TensorDataset(*train), batch_size=batch_size, shuffle=True)
    lr = lr if lr is not None else blr * batch_size / 256
    optimizer = torch.optim.SGD(
        [{"params": head.parameters(), "lr_scale": 1.0}], lr=lr, momentum=0.9
    )
    train_loss = fit(head, optimizer, loader, epochs, lr, warmup_epochs,
                     F.cross_entropy, device, progress)  # fmt: skip
    return {
        "top1": top1(head, DataLoader(TensorDataset(*val), batch_size=1024), device),
        "train_loss": train_loss,
    }


def linear_probe(classifier, train_set, val_set, epochs=90, blr=0.1, lr=None,
                 batch_size=256, warmup_epochs=10, device="cpu", seed=0,
                 progress=True):  # fmt: skip
    """A linear probe (probe_features) on the frozen encoder's features. Returns
    {"top1", "train_loss"}."""
    # before the features: iterating a DataLoader draws from the generator
    torch.manual_seed(seed)
    train = extract_features(classifier, train_set, device=device)
    val = extract_features(classifier, val_set, device=device)
    return probe_features(
        train, val, classifier.head.out_features, epochs, blr, lr, batch_size,
        warmup_epochs, device, None, progress)  # fmt: skip


def pixels(dataset):
    """The raw pixels of every image, the baseline a useful encoder must beat:
    ((N, C*H*W), (N,))."""
    imgs, labels = as_tensors(dataset).tensors
    return imgs.flatten(1), labels


def mean_and_sem(values):
    """The mean of a list of numbers and its standard error (0 for a single value)."""
    values = torch.tensor(values, dtype=torch.float64)
    sem = values.std() / len(values) ** 0.5 if len(values) > 1 else torch.tensor(0.0)
    return values.mean().item(), sem.item()


def fine_tune(
    classifier, train_set, val_set, epochs=50, blr=1e-3, lr=None, batch_size=64,
    layer_decay=0.75, weight_decay=0.05, warmup_epochs=5, label_smoothing=0.1,
    device="cpu", seed=0, progress=True,
):  # fmt: skip
    """Train the whole classifier with AdamW, lr = blr * batch_size / 256 unless lr is
    given, decayed layer by layer towards the input. Returns {"top1", "train_loss"}."""
    torch.manual_seed(seed)
    classifier.to(device)
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True,
                        drop_last=len(train_set) > batch_size)  # fmt: skip
    lr = lr if lr is not None else blr * batch_size / 256
    optimizer = torch.optim.AdamW(
        param_groups(classifier, weight_decay, layer_decay), lr=lr, betas=(0.9, 0.999)
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    train_loss = fit(classifier, optimizer, loader, epochs, lr, warmup_epochs,
                     criterion, device, progress)  # fmt: skip
    return {
        "top1": top1(classifier, DataLoader(val_set, batch_size=256), device),
        "train_loss": train_loss,
    }


def as_tensors(dataset):
    """A dataset of (image, label) -> a TensorDataset holding every item, computed
    once."""
    imgs, labels = zip(*(dataset[i] for i in range(len(dataset))), strict=False)
    return TensorDataset(torch.stack(imgs), torch.tensor(labels))


def evaluation_sets(dataset="fashion_mnist", labelled=1000, probe=10_000, test=None,
                    input_size=28, data_path=None):  # fmt: skip
    """The splits evaluate_encoder uses, as TensorDatasets: the first `labelled`
    training images (for fine-tuning), the first `probe` training images (for the linear
    probe) and the first `test` held-out ones (None: all)."""
    train = as_tensors(build_dataset(
        dataset, "train", input_size, data_path, augment=False,
        length=max(labelled, probe)))  # fmt: skip
    val = as_tensors(
        build_dataset(dataset, "val", input_size, data_path, augment=False, length=test)
    )
    labelled_set = TensorDataset(*(tensor[:labelled] for tensor in train.tensors))
    probe_set = TensorDataset(*(tensor[:probe] for tensor in train.tensors))
    return labelled_set, probe_set, val


def evaluate_encoder(checkpoint, labelled_set, probe_set, val_set, classes,
                     seeds=(0, 1, 2), finetune_epochs=10, probe_epochs=30,
                     model_name=None, protocols=("fine_tune", "linear_probe"),
                     device="cpu"):  # fmt: skip
    """The book's evaluation of an encoder: held-out top-1 after fine-tuning on few
    labels and after a linear probe, once per seed, on mean-pooled features (the better
    of the two for small MAEs).

    checkpoint: a path or loaded checkpoint, or None for the same architecture
    (model_name) randomly initialised, with a new initialisation for every seed.
    Fine-tuning trains on labelled_set (AdamW, layer decay 0.75, blr 4e-3 at batch 64,
    one epoch of warmup); the probe fits BatchNorm + linear on the frozen features of
    probe_set. Returns {protocol: [top-1 per seed]}.
    """
    if isinstance(checkpoint, (str, Path)):
        checkpoint = read_checkpoint(checkpoint)

    def classifier(seed):
        torch.manual_seed(seed)  # the random init (and the head) of this seed
        return build_classifier(model_name, classes, checkpoint,
                                global_pool=True).to(device)  # fmt: skip

    def features_of(seed):
        encoder = classifier(seed)
        return (
            extract_features(encoder, probe_set, device=device),
            extract_features(encoder, val_set, device=device),
        )

    scores = {protocol: [] for protocol in protocols}
    # the encoder is frozen: its features are the same for every seed
    if "linear_probe" in protocols:
        features = features_of(seeds[0])
    for seed in seeds:
        if "fine_tune" in protocols:
            result = fine_tune(classifier(seed), labelled_set, val_set,
                               epochs=finetune_epochs, blr=4e-3, batch_size=64,
                               layer_decay=0.75, warmup_epochs=1, device=device,
                               seed=seed, progress=False)  # fmt: skip
            scores["fine_tune"].append(result["top1"])
        if "linear_probe" in protocols:
            # a random encoder is a new one for every seed
            if checkpoint is None and seed != seeds[0]:
                features = features_of(seed)
            result = probe_features(*features, classes, epochs=probe_epochs,
                                    warmup_epochs=3, device=device, seed=seed,
                                    progress=False)  # fmt: skip
            scores["linear_probe"].append(result["top1"])
    return scores


def get_args_parser():
    parser = argparse.ArgumentParser(
        description="Linear probing or fine-tuning of an MAE encoder, reporting "
        "held-out top-1.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("mode", choices=["linprobe", "finetune"])
    start = parser.add_mutually_exclusive_group(required=True)
    start.add_argument(
        "--checkpoint",
        help="pretrained weights: a train.py checkpoint or an official .pth",
    )
    start.add_argument(
        "--random_init", action="store_true", help="no pretraining: the baseline"
    )
    add("--model", default=None, choices=list(CLASSIFIERS),
        help="size (default: the checkpoint's own)")  # fmt: skip
    add("--input_size", type=int, default=None,
        help="image side (default: the checkpoint's or model's)")  # fmt: skip
    add("--dataset", default="fashion_mnist", choices=DATASETS,
        help="a labelled dataset")  # fmt: skip
    add("--data_path", default=None)
    add("--train_size", type=int, default=None,
        help="images of the shapes training set")  # fmt: skip
    add("--epochs", type=int, default=None,
        help="default: 90 for linprobe, 50 for finetune")  # fmt: skip
    add("--warmup_epochs", type=float, default=None,
        help="default: 10 for linprobe, 5 for finetune")  # fmt: skip
    add("--batch_size", type=int, default=None,
        help="default: 256 for linprobe, 64 for finetune")  # fmt: skip
    add("--blr", type=float, default=None, help="base lr: lr = blr * batch_size / 256 "
        "(default: 0.1 for linprobe, 1e-3 for finetune), as in train.py")  # fmt: skip
    add("--lr", type=float, default=None, help="absolute lr, overriding --blr")
    add("--layer_decay", type=float, default=0.75,
        help="finetune: lr decay per layer towards the input")  # fmt: skip
    add("--weight_decay", type=float, default=0.05, help="finetune only")
    add("--pool", default=None, choices=["cls", "mean"],
        help="features: the cls token (linprobe default) or the mean of the patch "
        "tokens (finetune default)")  # fmt: skip
    add("--output_dir", default="output/evaluate")
    add("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add("--seed", type=int, default=0)
    add("--no_progress", action="store_true")
    return parser


def prepare(args, pool):
    """The classifier and the two splits, every argument checked and the output folder
    made first."""
    for name in ("epochs", "batch_size", "train_size", "input_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(args, name)}")
    for name, lr in (("blr", args.blr), ("lr", args.lr)):
        if lr is not None and not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"--{name} must be a positive number, got {lr}")
    for name in ("warmup_epochs", "weight_decay"):
        if getattr(args, name) is not None and not getattr(args, name) >= 0:
            raise ValueError(f"--{name} must be at least 0, got {getattr(args, name)}")
    if not 0 < args.layer_decay <= 1:
        raise ValueError(f"--layer_decay must be in (0, 1], got {args.layer_decay}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            "--device cuda, but PyTorch sees no GPU here: use --device cpu"
        )
    check_output_dir(args.output_dir)
    checkpoint = (
        read_checkpoint(args.checkpoint) if args.checkpoint is not None else None
    )
    image_size = encoder_of(args.model, checkpoint, args.input_size)["img_size"]
    input_size = image_size if isinstance(image_size, int) else image_size[0]
    train_set = build_dataset(args.dataset, "train", input_size, args.data_path,
                              augment=False, length=args.train_size)  # fmt: skip
    val_set = build_dataset(
        args.dataset, "val", input_size, args.data_path, augment=False
    )
    classes = num_classes(train_set)
    if classes < 2:
        raise DataError(
            f"{args.dataset} has no labels: "
            f"choose a labelled dataset (shapes, digits, cifar10...)"
        )
    classifier = build_classifier(
        args.model, classes, checkpoint, pool == "mean", args.input_size
    )
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    return classifier, train_set, val_set


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    linprobe = args.mode == "linprobe"
    pool = args.pool or ("cls" if linprobe else "mean")
    try:
        classifier, train_set, val_set = prepare(args, pool)
    except (DataError, ValueError, FileNotFoundError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    given = dict(epochs=args.epochs, warmup_epochs=args.warmup_epochs,
                 batch_size=args.batch_size, blr=args.blr, lr=args.lr)  # fmt: skip
    options = {name: value for name, value in given.items() if value is not None}
    options.update(device=args.device, seed=args.seed, progress=not args.no_progress)
    if linprobe:
        result = linear_probe(classifier, train_set, val_set, **options)
    else:
        options.update(layer_decay=args.layer_decay, weight_decay=args.weight_decay)
        result = fine_tune(classifier, train_set, val_set, **options)
    init = "random" if args.random_init else str(args.checkpoint)
    encoder = {k: classifier.encoder_config[k]
               for k in ("img_size", "patch_size", "embed_dim", "depth")}  # fmt: skip
    result.update(mode=args.mode, model=args.model, encoder=encoder,
                  dataset=args.dataset, pool=pool, init=init)  # fmt: skip
    # before anything can fail
    print(f"{args.mode} ({init}) on {args.dataset}: top-1 {100 * result['top1']:.2f}%")
    try:
        (Path(args.output_dir) / f"{args.mode}.json").write_text(
            json.dumps(result, indent=2) + "\n"
        )
    except OSError as error:
        print(f"error: could not write the result to {args.output_dir} ({error}); "
              f"it is printed above", file=sys.stderr)  # fmt: skip
        sys.exit(2)
    return result


if __name__ == "__main__":
    main()
