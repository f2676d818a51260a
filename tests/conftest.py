import functools
import http.server
import os
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from mae_minimal import MaskedAutoencoderViT

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")  # Debian's package; .ci/run installs it
JUPYTER_BOOK = Path(sys.executable).parent / "jupyter-book"  # this environment's, not PATH's

TINY = dict(
    img_size=32,
    patch_size=8,
    embed_dim=32,
    depth=2,
    num_heads=4,
    decoder_embed_dim=16,
    decoder_depth=1,
    decoder_num_heads=2,
    norm_layer=partial(nn.LayerNorm, eps=1e-6),
)


def make_tiny_mae(**overrides):
    return MaskedAutoencoderViT(**{**TINY, **overrides})


@pytest.fixture
def tiny_mae():
    """tiny_mae(**overrides): an MAE small enough for unit tests, 32x32 images in a 4x4 grid of 8x8 patches."""
    return make_tiny_mae


def make_image_folder(root, classes=("cat", "dog"), per_class=5, size=20):
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((size, size + 4, 3), 40 * label + 10 * i, dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")


@pytest.fixture
def write_image_folder():
    """write_image_folder(root, classes, per_class, size): class subfolders of small PNG images."""
    return make_image_folder


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def built_book(tmp_path_factory):
    """The folder of the book's HTML, built with warnings as errors (once per test session)."""
    output = tmp_path_factory.mktemp("book")
    build = subprocess.run(
        [str(JUPYTER_BOOK), "build", str(ROOT), "--path-output", str(output), "-W", "-n", "--keep-going"],
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    return output / "_build" / "html"


@pytest.fixture(scope="session")
def site(built_book):
    """The built book served on localhost: its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=built_book)
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium (Debian's package, which .ci/run installs), driven by playwright."""
    from playwright.sync_api import sync_playwright

    flags = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
             "--disable-background-networking", "--disable-component-update"]  # fmt: skip
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=flags)
        yield browser
        browser.close()
