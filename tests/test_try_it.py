"""The page book/try_it.md: the reference MAE exported to ONNX gives PyTorch's predictions, and the
built page, opened from disk in Chromium, runs it: it loads cleanly and offline, reacts to clicks
and drawing, and shows the error that PyTorch computes for the same image and mask."""

import statistics
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from mae_minimal import load_model, mask_to_noise
from mae_minimal.data import FASHION_MNIST_MEAN, FASHION_MNIST_STD, FashionMNIST
from mae_minimal.export_onnx import export_onnx

REFERENCE_RUN = Path(__file__).resolve().parents[1] / "runs" / "fashion_mnist" / "weights.pth"
(MEAN,), (STD,) = FASHION_MNIST_MEAN, FASHION_MNIST_STD
READY = """(updates) => {
    const root = document.getElementById("try-it");
    return root.dataset.state === "ready" && Number(root.dataset.updates) >= updates;
}"""
PIXELS = """(name) => Array.from(
    document.querySelector(".try-it-" + name).getContext("2d").getImageData(0, 0, 28, 28).data
).filter((_, i) => i % 4 === 0)"""  # the red channel of a grey picture


@pytest.fixture(scope="module")
def mae():
    return load_model(REFERENCE_RUN).eval()


@pytest.fixture(scope="module")
def held_out_images():
    return FashionMNIST(None, train=False, augment=False).images  # (10000, 1, 28, 28), normalised


def pytorch_outputs(mae, imgs, mask):
    """The package's own forward pass with `mask` (1, L), 1 = removed: reconstruction (1, 1, 28, 28)
    and loss."""
    num_kept = int((mask == 0).sum())
    with torch.no_grad():
        latent, used_mask, ids_restore = mae.forward_encoder(
            imgs, 1 - num_kept / mask.shape[1], mask_to_noise(mask)
        )
        assert torch.equal(used_mask, mask)
        pred = mae.forward_decoder(latent, ids_restore, used_mask)
        return mae.unpatchify(pred), mae.forward_loss(imgs, pred, used_mask)


def test_onnxruntime_gives_the_pytorch_predictions_for_masks_of_every_size(mae, held_out_images, tmp_path):
    session = onnxruntime.InferenceSession(export_onnx(mae, tmp_path / "mae.onnx"))
    generator = torch.Generator().manual_seed(0)
    length = mae.patch_embed.num_patches
    for num_kept in range(1, length + 1):
        imgs = held_out_images[num_kept : num_kept + 1]
        ids_keep = torch.randperm(length, generator=generator)[:num_kept]  # in no particular order
        mask = torch.ones(1, length).index_fill(1, ids_keep, 0.0)
        reconstruction, pasted, error, loss = session.run(
            None, {"imgs": imgs.numpy(), "ids_keep": ids_keep[None].numpy()}
        )
        expected, expected_loss = pytorch_outputs(mae, imgs, mask)
        removed = mae.unpatchify(mask.unsqueeze(-1).expand(-1, -1, mae.patch_size**2))
        assert np.abs(reconstruction - expected.numpy()).max() < 1e-4
        assert np.abs(pasted - (imgs * (1 - removed) + expected * removed).numpy()).max() < 1e-4
        assert np.abs(error - ((expected - imgs) ** 2 * removed).numpy()).max() < 1e-4
        assert abs(float(loss) - float(expected_loss)) < 1e-4


@pytest.mark.parametrize("switch", [dict(norm_pix_loss=True), dict(encoder_sees_mask_tokens=True)])
def test_export_refuses_a_model_whose_predictions_are_not_pixels_of_visible_patches(
    tiny_mae, tmp_path, switch
):
    with pytest.raises(ValueError, match="can be exported"):
        export_onnx(tiny_mae(**switch), tmp_path / "mae.onnx")


class PageFromDisk:
    """The built page opened with a file:// URL, with what it logged and requested."""

    def __init__(self, browser, built_book):
        self.page = browser.new_page(viewport={"width": 1200, "height": 1000})
        self.errors, self.requests = [], []
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.goto((built_book / "book" / "try_it.html").as_uri())
        self.page.wait_for_function(READY, arg=1, timeout=30_000)

    def state(self):
        return self.page.evaluate("() => ({...document.getElementById('try-it').dataset})")

    def act(self, action):
        """Do `action()` (a click, a drag), then wait until the page has redrawn."""
        updates = int(self.state()["updates"])
        action()
        self.page.wait_for_function(READY, arg=updates + 1, timeout=10_000)
        return self.state()

    def click_patch(self, index):
        canvas = self.page.locator(".try-it-masked")
        box = canvas.bounding_box()
        row, col = divmod(index, 7)
        return self.act(lambda: canvas.click(position={"x": (col + 0.5) * box["width"] / 7,
                                                       "y": (row + 0.5) * box["height"] / 7}))  # fmt: skip

    def pixels(self, name):
        """A picture's 28 x 28 grey levels (0-255): name is image, reconstruction, pasted, ..."""
        return np.array(self.page.evaluate(PIXELS, name), dtype=np.uint8).reshape(28, 28)

    def shown_loss(self):
        return float(self.page.inner_text(".try-it-loss"))


@pytest.fixture
def page_from_disk(browser, built_book):
    page = PageFromDisk(browser, built_book)
    yield page
    page.page.close()


def test_the_page_opened_from_disk_runs_the_model_with_no_console_error_and_no_request_leaving_it(
    page_from_disk,
):
    assert page_from_disk.state()["state"] == "ready"
    assert 0 < page_from_disk.shown_loss() < 10
    assert page_from_disk.errors == []
    assert page_from_disk.requests and all(url.startswith("file://") for url in page_from_disk.requests)


def test_clicking_a_patch_flips_it_and_changes_the_reconstruction(page_from_disk):
    before = page_from_disk.state()["mask"]
    reconstruction_before = page_from_disk.pixels("reconstruction")
    hidden = before.index("1")
    after = page_from_disk.click_patch(hidden)["mask"]
    assert after == before[:hidden] + "0" + before[hidden + 1 :]
    assert (page_from_disk.pixels("reconstruction") != reconstruction_before).any()


def expect_pytorchs_error_and_reconstruction(page, mae, imgs):
    mask = torch.tensor([[float(c) for c in page.state()["mask"]]])
    reconstruction, loss = pytorch_outputs(mae, imgs, mask)
    assert page.shown_loss() == pytest.approx(float(loss), abs=1e-3)
    grey = (reconstruction[0, 0] * STD + MEAN).clamp(0, 1).mul(255).round().numpy()
    assert np.abs(page.pixels("reconstruction").astype(float) - grey).max() <= 1


def test_the_error_the_page_shows_is_pytorchs_for_the_same_image_and_mask(
    page_from_disk, mae, held_out_images
):
    page = page_from_disk
    imgs = held_out_images[int(page.state()["image"])][None]
    expect_pytorchs_error_and_reconstruction(page, mae, imgs)  # the mask it starts with
    for patch in (3, 24, 40):
        page.click_patch(patch)
        expect_pytorchs_error_and_reconstruction(page, mae, imgs)
    for masking in ("block", "grid"):
        page.act(lambda: page.page.select_option("select[name=masking]", masking))  # noqa: B023
        page.act(lambda: page.page.click("[data-action=reroll]"))
        expect_pytorchs_error_and_reconstruction(page, mae, imgs)
    other = page.page.locator(".try-it-gallery button").nth(20)
    imgs = held_out_images[int(page.act(other.click)["image"])][None]
    expect_pytorchs_error_and_reconstruction(page, mae, imgs)


def test_drawing_on_the_image_changes_it_and_the_model_completes_the_drawing(page_from_disk, mae):
    page = page_from_disk
    page.act(lambda: page.page.check("input[name=try-it-mode][value=draw]"))
    assert page.state()["image"] == "drawing" and page.pixels("image").max() == 0  # an empty canvas
    canvas = page.page.locator(".try-it-image")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()

    def stroke():
        page.page.mouse.move(box["x"] + 0.2 * box["width"], box["y"] + 0.5 * box["height"])
        page.page.mouse.down()
        page.page.mouse.move(box["x"] + 0.8 * box["width"], box["y"] + 0.5 * box["height"], steps=8)
        page.page.mouse.up()

    page.act(stroke)
    page.page.wait_for_function("() => document.getElementById('try-it').dataset.state === 'ready'")
    drawn = page.pixels("image")
    assert drawn[14].max() == 255 and drawn[:10].max() == 0  # a horizontal line across the middle
    imgs = ((torch.from_numpy(drawn).float() / 255 - MEAN) / STD)[None, None]
    expect_pytorchs_error_and_reconstruction(page, mae, imgs)


def test_each_update_is_timed_on_the_page(page_from_disk, capsys):
    """The time of each update (model and pictures) is measured in the page and printed here."""
    times = []
    for patch in range(0, 49, 2):
        state = page_from_disk.click_patch(patch)
        times.append(float(state["updateMs"]))
        assert page_from_disk.page.inner_text(".try-it-time") == f"{float(state['updateMs']):.1f} ms"
    with capsys.disabled():
        print(f"\ntry_it page, {len(times)} updates: median {statistics.median(times):.1f} ms, "
              f"max {max(times):.1f} ms")  # fmt: skip
    assert all(t > 0 for t in times)
