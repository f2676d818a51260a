"""How good is a pretrained encoder? Linear probing and fine-tuning on a labelled dataset.

    python mae_minimal/evaluate.py linprobe --checkpoint output/mae_pretrain/checkpoint.pth
    python mae_minimal/evaluate.py finetune --checkpoint output/mae_pretrain/checkpoint.pth
    python mae_minimal/evaluate.py linprobe --random_init --model vit_mini_patch8_64px   # the baseline

Both report top-1 accuracy on the held-out split, print it and write it to --output_dir.
Linear probing freezes the encoder and trains BatchNorm (without affine parameters) and a linear
layer on its features, with SGD (the paper uses LARS at batch 16384; it notes plain SGD works
similarly). Fine-tuning trains everything with AdamW, layer-wise lr decay, label smoothing and a
warmup then a cosine. The images are not augmented: the offline datasets are small, and the
paper's RandAugment, mixup and cutmix recipe is sized for ImageNet.
"""

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from mae_minimal import factories
from mae_minimal.checkpoint import load_checkpoint, read_state_dict
from mae_minimal.data import DATASETS, DataError, build_dataset, num_classes
from mae_minimal.optim import lr_at, param_groups, set_lr

CLASSIFIERS = [name for name in dir(factories) if name.startswith("vit_")]


def build_classifier(model_name, num_classes, checkpoint=None, global_pool=True, input_size=None):
    """A classifier of size `model_name` (a vit_* factory), with the encoder of `checkpoint` (a path
    or state_dict of an MAE, an encoder or a classifier), or randomly initialised without one."""
    kwargs = dict(num_classes=num_classes, global_pool=global_pool)
    if input_size is not None:
        kwargs["img_size"] = input_size
    classifier = getattr(factories, model_name)(**kwargs)
    return load_checkpoint(classifier, checkpoint) if checkpoint is not None else classifier


@torch.no_grad()
def extract_features(classifier, dataset, batch_size=256, device="cpu"):
    """The frozen encoder's features of every image: (N, D) features and (N,) labels."""
    classifier.eval().to(device)
    features, labels = [], []
    for imgs, batch_labels in DataLoader(dataset, batch_size=batch_size):
        features.append(classifier.forward_features(imgs.to(device)).float().cpu())
        labels.append(batch_labels)
    return torch.cat(features), torch.cat(labels)


def train_loop(model, optimizer, loader, epochs, lr, warmup_epochs, loss_fn, device, progress):
    """Epochs of plain training with a per-step warmup then cosine. Returns the last epoch's loss."""
    total_steps, warmup_steps = epochs * len(loader), round(warmup_epochs * len(loader))
    step = 0
    for _ in tqdm(range(epochs), desc="epochs", disable=not progress):
        model.train()
        total, count = 0.0, 0
        for inputs, labels in loader:
            set_lr(optimizer, lr_at(step, total_steps, warmup_steps, lr, 0.0))
            loss = loss_fn(model(inputs.to(device)), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            total, count = total + loss.item() * len(labels), count + len(labels)
    return total / count


@torch.no_grad()
def top1(model, loader, device):
    model.eval()
    correct = total = 0
    for inputs, labels in loader:
        correct += (model(inputs.to(device)).argmax(dim=-1).cpu() == labels).sum().item()
        total += len(labels)
    return correct / total


def linear_probe(
    classifier, train_set, val_set, epochs=90, lr=0.1, batch_size=256, warmup_epochs=10, device="cpu", seed=0,
    progress=True,
):  # fmt: skip
    """Train BatchNorm + linear on the frozen encoder's features. Returns {"top1", "train_loss"}."""
    torch.manual_seed(seed)
    train_features, train_labels = extract_features(classifier, train_set, device=device)
    val_features, val_labels = extract_features(classifier, val_set, device=device)
    width, classes = train_features.shape[1], classifier.head.out_features
    head = nn.Sequential(nn.BatchNorm1d(width, affine=False, eps=1e-6), nn.Linear(width, classes)).to(device)
    nn.init.trunc_normal_(head[1].weight, std=0.01)
    nn.init.zeros_(head[1].bias)
    loader = DataLoader(TensorDataset(train_features, train_labels), batch_size=batch_size, shuffle=True)
    optimizer = torch.optim.SGD([{"params": head.parameters(), "lr_scale": 1.0}], lr=lr, momentum=0.9)
    train_loss = train_loop(
        head, optimizer, loader, epochs, lr, warmup_epochs, F.cross_entropy, device, progress
    )
    accuracy = top1(head, DataLoader(TensorDataset(val_features, val_labels), batch_size=1024), device)
    return {"top1": accuracy, "train_loss": train_loss}


def fine_tune(
    classifier, train_set, val_set, epochs=50, blr=1e-3, batch_size=64, layer_decay=0.75, weight_decay=0.05,
    warmup_epochs=5, label_smoothing=0.1, device="cpu", seed=0, progress=True,
):  # fmt: skip
    """Train the whole classifier, lr = blr * batch_size / 256 decayed layer by layer towards the
    input. Returns {"top1", "train_loss"}."""
    torch.manual_seed(seed)
    classifier.to(device)
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=len(train_set) > batch_size)
    lr = blr * batch_size / 256
    optimizer = torch.optim.AdamW(
        param_groups(classifier, weight_decay, layer_decay), lr=lr, betas=(0.9, 0.999)
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    train_loss = train_loop(
        classifier, optimizer, loader, epochs, lr, warmup_epochs, loss_fn, device, progress
    )
    return {"top1": top1(classifier, DataLoader(val_set, batch_size=256), device), "train_loss": train_loss}


def get_args_parser():
    parser = argparse.ArgumentParser(
        description="Linear probing or fine-tuning of an MAE encoder, reporting held-out top-1.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("mode", choices=["linprobe", "finetune"])
    start = parser.add_mutually_exclusive_group(required=True)
    start.add_argument("--checkpoint", help="pretrained weights: a train.py checkpoint or an official .pth")
    start.add_argument("--random_init", action="store_true", help="no pretraining: the baseline")
    add("--model", default=None, choices=CLASSIFIERS, help="size (default: the train.py checkpoint's)")
    add("--input_size", type=int, default=None, help="image side (default: the checkpoint's or model's)")
    add("--dataset", default="shapes", choices=DATASETS, help="a labelled dataset")
    add("--data_path", default=None)
    add("--train_size", type=int, default=None, help="images of the shapes training set")
    add("--epochs", type=int, default=None, help="default: 90 for linprobe, 50 for finetune")
    add("--warmup_epochs", type=float, default=None, help="default: 10 for linprobe, 5 for finetune")
    add("--batch_size", type=int, default=None, help="default: 256 for linprobe, 64 for finetune")
    add("--lr", type=float, default=None, help="linprobe: the SGD lr (default 0.1); finetune: the base lr "
        "blr, scaled by batch/256 (default 1e-3)")  # fmt: skip
    add("--layer_decay", type=float, default=0.75, help="finetune: lr decay per layer towards the input")
    add("--weight_decay", type=float, default=0.05, help="finetune only")
    add("--pool", default=None, choices=["cls", "mean"], help="features: the cls token (linprobe default) or "
        "the mean of the patch tokens (finetune default)")  # fmt: skip
    add("--output_dir", default="output/evaluate")
    add("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add("--seed", type=int, default=0)
    add("--no_progress", action="store_true")
    return parser


def model_and_size(args, checkpoint):
    """The classifier name and input size: as given, else those the train.py checkpoint was made with."""
    config = checkpoint.get("config", {}) if checkpoint is not None else {}
    model = args.model or config.get("model", "").removeprefix("mae_") or None
    if model is None:
        raise ValueError("--model is needed: the checkpoint does not say which model it holds")
    if model not in CLASSIFIERS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(CLASSIFIERS)}")
    default_size = factories.ENCODER_SIZES[model.removeprefix("vit_")].get("img_size", 224)
    return model, args.input_size or config.get("input_size") or default_size


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    linprobe = args.mode == "linprobe"
    pool = args.pool or ("cls" if linprobe else "mean")
    try:
        checkpoint = None
        if args.checkpoint is not None:
            if not Path(args.checkpoint).is_file():
                raise FileNotFoundError(f"no checkpoint file at {args.checkpoint}")
            checkpoint = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        model_name, input_size = model_and_size(args, checkpoint)
        train_set = build_dataset(args.dataset, "train", input_size, args.data_path, augment=False,
                                  length=args.train_size)  # fmt: skip
        val_set = build_dataset(args.dataset, "val", input_size, args.data_path, augment=False)
        classes = num_classes(train_set)
        if classes < 2:
            raise DataError(
                f"{args.dataset} has no labels: choose a labelled dataset (shapes, digits, cifar10...)"
            )
        weights = read_state_dict(checkpoint) if checkpoint is not None else None
        classifier = build_classifier(model_name, classes, weights, pool == "mean", input_size)
    except (DataError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)

    given = dict(epochs=args.epochs, warmup_epochs=args.warmup_epochs, batch_size=args.batch_size)
    options = {name: value for name, value in given.items() if value is not None}
    options.update(device=args.device, seed=args.seed, progress=not args.no_progress)
    if args.lr is not None:
        options["lr" if linprobe else "blr"] = args.lr
    if linprobe:
        result = linear_probe(classifier, train_set, val_set, **options)
    else:
        options.update(layer_decay=args.layer_decay, weight_decay=args.weight_decay)
        result = fine_tune(classifier, train_set, val_set, **options)
    init = "random" if args.random_init else str(args.checkpoint)
    result.update(mode=args.mode, model=model_name, dataset=args.dataset, pool=pool, init=init)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / f"{args.mode}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.mode} {model_name} ({init}) on {args.dataset}: top-1 {100 * result['top1']:.2f}%")
    return result


if __name__ == "__main__":
    main()
