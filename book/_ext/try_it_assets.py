"""A Sphinx extension that writes, each time the book is built, what the page book/try_it.md runs:
the book's reference MAE exported to ONNX, onnxruntime-web's WebAssembly runtime, held-out
Fashion-MNIST images and masks drawn by the package's own masking functions.

Chromium refuses fetch() and JavaScript modules to a page opened from disk (file://), so each
asset is a classic script that puts its contents into `window.TRY_IT_ASSETS`:

    _static/try_it/ort.wasm.min.js  onnxruntime-web's browser build, copied from node_modules
    _static/try_it/ort_wasm.js      ortGlue: its WebAssembly loader (an ES module, as text);
                                    ortWasm: its WebAssembly binary, gzipped, base64
    _static/try_it/model.js         model: the ONNX file (mae_minimal/export_onnx.py), gzipped, base64
    _static/try_it/data.js          data: the images, masks and the run's numbers (see page_data)

The page's own script and style are book/_static/try_it/. The numbers the page's text quotes
become MyST substitutions ({{ try_it_mse }} and friends), read from the run's files.
"""

import base64
import gzip
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from mae_minimal import load_model, masking_noise
from mae_minimal.data import FashionMNIST, fashion_mnist_arrays, normalization
from mae_minimal.export_onnx import export_onnx
from mae_minimal.masking import mask_from_noise, num_kept
from mae_minimal.train import get_args_parser

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "runs" / "fashion_mnist"
ORT_DIST = ROOT / "node_modules" / "onnxruntime-web" / "dist"
ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
IMAGES_PER_CLASS = 3
DRAWS = 12  # masks drawn for each masking and number of hidden patches: what "re-roll" steps through


def setup(app):
    app.connect("config-inited", write_assets)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def write_assets(app, config):
    """Write the assets under the build folder, add them and book/_static to the static files,
    and set the page's substitutions."""
    missing = [name for name in ORT_FILES if not (ORT_DIST / name).is_file()]
    if missing:
        raise RuntimeError(f"onnxruntime-web is not installed ({ORT_DIST / missing[0]} is missing): "
                           f"run `npm ci` in {ROOT} before building the book")  # fmt: skip
    folder = Path(app.outdir).parent / "try_it_static"
    target = folder / "try_it"
    target.mkdir(parents=True, exist_ok=True)
    model = load_model(RUN / "weights.pth").eval()

    shutil.copyfile(ORT_DIST / "ort.wasm.min.js", target / "ort.wasm.min.js")
    glue = (ORT_DIST / "ort-wasm-simd-threaded.mjs").read_text()
    wasm = (ORT_DIST / "ort-wasm-simd-threaded.wasm").read_bytes()
    write_script(target / "ort_wasm.js", ortGlue=glue, ortWasm=gzip_base64(wasm))
    with tempfile.TemporaryDirectory() as scratch:
        onnx_bytes = Path(export_onnx(model, Path(scratch) / "mae.onnx")).read_bytes()
    write_script(target / "model.js", model=gzip_base64(onnx_bytes))
    write_script(target / "data.js", data=page_data(model))

    config.html_static_path = [*config.html_static_path, str(ROOT / "book" / "_static"), str(folder)]
    config.myst_substitutions = {**config.myst_substitutions, **substitutions(model, len(onnx_bytes))}


def gzip_base64(data):
    return base64.b64encode(gzip.compress(data, compresslevel=6, mtime=0)).decode("ascii")


def write_script(path, **values):
    """A classic script that adds `values` to window.TRY_IT_ASSETS."""
    lines = ["window.TRY_IT_ASSETS = window.TRY_IT_ASSETS || {};"]
    lines += [f"window.TRY_IT_ASSETS.{name} = {json.dumps(value)};" for name, value in values.items()]
    path.write_text("\n".join(lines) + "\n")


def page_data(model):
    """What the page shows: a dict of JSON values.

    images: IMAGES_PER_CLASS held-out test images of each class (their index in the test split,
    their class, their 28 x 28 uint8 pixels in base64); masks[masking][hidden]: DRAWS masks with
    that many hidden patches (strings of L digits, 1 = hidden), drawn by masking.py's functions as
    training draws them; the normalisation the model expects; the run's metrics, and the masking it
    was trained with (the page starts with it).
    """
    pixels, labels = fashion_mnist_arrays(None, train=False)  # (10000, 28, 28) uint8, (10000,)
    indices = [
        int(i)
        for c in range(len(FashionMNIST.CLASSES))
        for i in np.flatnonzero(labels == c)[:IMAGES_PER_CLASS]
    ]
    images = [{"index": i, "label": FashionMNIST.CLASSES[labels[i]],
               "pixels": base64.b64encode(pixels[i].tobytes()).decode("ascii")} for i in indices]  # fmt: skip
    (mean,), (std,) = normalization("fashion_mnist")
    flags, length = run_flags(), model.patch_embed.num_patches
    return {
        "run": RUN.relative_to(ROOT).as_posix(),
        "metrics": read_json(RUN / "metrics.json"),
        "training": {"masking": flags.masking, "hidden": length - num_kept(length, flags.mask_ratio)},
        "gridSize": list(model.grid_size),
        "patchSize": model.patch_size,
        "mean": mean,
        "std": std,
        "images": images,
        "masks": drawn_masks(model.grid_size),
    }


def substitutions(model, onnx_size):
    """The numbers the page's text quotes, as MyST substitutions, from the run's files and model."""
    manifest, metrics, flags = read_json(RUN / "manifest.json"), read_json(RUN / "metrics.json"), run_flags()
    threads, (rows, cols) = manifest["threads"], model.grid_size
    minutes = manifest["wall_time_s"] / 60
    return {
        "try_it_run": f"`{RUN.relative_to(ROOT).as_posix()}`",
        "try_it_epochs": f"{flags.epochs:g}",
        "try_it_mask_ratio": f"{flags.mask_ratio:.0%}",
        "try_it_masking": flags.masking,
        "try_it_train_time": f"{minutes:.0f} minutes on {threads} CPU thread{'s' * (threads > 1)}",
        "try_it_patches": f"a {rows}x{cols} grid of {model.patch_size}x{model.patch_size}-pixel patches",
        "try_it_images_per_class": str(IMAGES_PER_CLASS),
        "try_it_held_out": f"{metrics['held_out_images']:,}",
        "try_it_mse": f"{metrics['mse']:.3f}",
        "try_it_visible_mean_mse": f"{metrics['visible_mean_mse']:.3f}",
        "try_it_parameters": f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} million",
        "try_it_onnx_mb": f"{onnx_size / 1e6:.1f}",
    }


def run_flags():
    """The run's train.py flags, parsed from its manifest's command by train.py's own parser."""
    return get_args_parser().parse_args(read_json(RUN / "manifest.json")["command"][2:])


def read_json(path):
    return json.loads(path.read_text())


def drawn_masks(grid_size):
    """{masking: {hidden: [DRAWS masks as strings of 0/1, 1 = hidden]}} for every number of hidden
    patches that a masking allows (grid masking: the ratios 1 - 1/s**2 that leave a patch visible)."""
    rows, cols = grid_size
    length = rows * cols
    generator = torch.Generator().manual_seed(0)
    ratios = {name: [hidden / length for hidden in range(length)] for name in ("random", "block")}
    ratios["grid"] = [1 - 1 / stride**2 for stride in (2, 3) if stride <= min(rows, cols)]
    masks = {}
    for name, name_ratios in ratios.items():
        masks[name] = {}
        for ratio in name_ratios:
            noise = masking_noise(name, grid_size, ratio, batch=DRAWS, generator=generator)
            mask = mask_from_noise(noise, ratio)  # (DRAWS, L)
            masks[name][int(mask[0].sum())] = ["".join(str(int(v)) for v in row) for row in mask]
    return masks
