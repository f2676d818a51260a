"""Exporting an MAE to ONNX, to run it where PyTorch is not: in a web page with
onnxruntime-web, or anywhere onnxruntime runs.

The exported graph is asked "what if these patches were hidden?": it takes an image and
the indices of its visible patches, as many as the caller likes (a dynamic dimension),
instead of a mask ratio and masking noise. `VisiblePatchesMAE` turns the indices into a
mask and the order that the decoder undoes, as masking.py does with noise; the rest is
the model's own code: its patch embedding, encoder blocks, decoder, unpatchify and loss.

    inputs   imgs: (1, C, H, W), normalised as the model was trained
             ids_keep: (1, K) int64, the visible patches (distinct, in any order),
               1 <= K <= L
    outputs  reconstruction: (1, C, H, W), the decoder's prediction of every patch
             pasted: (1, C, H, W), the reconstruction with the visible patches pasted
               back
             error: (1, C, H, W), the squared error per pixel on the removed patches,
               0 elsewhere
             loss: (), the model's loss: the mean squared error over the removed patches

Mask convention (see masking.py): mask (N, L), 1 = removed, 0 = kept.

    python -m mae_minimal.export_onnx runs/fashion_mnist/weights.pth mae.onnx
"""

import argparse

import torch
from torch import nn

from mae_minimal.checkpoint import load_model
from mae_minimal.visualize import removed_pixels

INPUT_NAMES = ("imgs", "ids_keep")
OUTPUT_NAMES = ("reconstruction", "pasted", "error", "loss")


class VisiblePatchesMAE(nn.Module):
    """An MAE whose visible patches are given by their indices; see the module's
    docstring."""

    def __init__(self, mae):
        super().__init__()
        if mae.encoder_sees_mask_tokens or mae.norm_pix_loss:
            raise ValueError(
                "only an MAE whose encoder sees the visible patches alone and that "
                "predicts pixels can be exported "
                "(not encoder_sees_mask_tokens, not norm_pix_loss)"
            )
        self.mae = mae

    def forward(self, imgs, ids_keep):
        """imgs: (N, C, H, W), ids_keep: (N, K) -> reconstruction, pasted, error
        (N, C, H, W); loss ()."""
        mae = self.mae
        x = mae.embed_patches(imgs)  # (N, L, D)
        batch, length, dim = x.shape
        # (N, L), 1 = removed
        mask = x.new_ones(batch, length).scatter(1, ids_keep, 0.0)
        # Masking noise as in masking.py: lowest for the kept patches, so that argsort
        # puts them first (in image order here), then the removed ones; ids_restore
        # undoes that order.
        noise = mask + torch.arange(length, device=x.device) / length  # (N, L)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_kept = ids_shuffle[:, : ids_keep.shape[1]]  # (N, K)
        x = torch.gather(x, 1, ids_kept.unsqueeze(-1).expand(-1, -1, dim))  # (N, K, D)

        # what forward_encoder returns: (N, 1 + K, D)
        latent = mae.norm(mae.forward_blocks(x))
        pred = mae.forward_decoder(latent, ids_restore, mask)  # (N, L, p*p*C)
        reconstruction = mae.unpatchify(pred)
        channels = mae.patch_embed.in_chans
        removed = removed_pixels(mask, mae.patch_size, mae.grid_size, channels)
        pasted = imgs * (1 - removed) + reconstruction * removed
        error = (reconstruction - imgs) ** 2 * removed
        return reconstruction, pasted, error, mae.forward_loss(imgs, pred, mask)


def export_onnx(mae, path):
    """Write `VisiblePatchesMAE(mae)` to `path` as one self-contained ONNX file, with K
    (the number of visible patches) a dynamic dimension from 1 to L. Returns path."""
    wrapper = VisiblePatchesMAE(mae).eval()
    channels, (height, width) = mae.patch_embed.in_chans, mae.patch_embed.img_size
    length = mae.patch_embed.num_patches
    imgs = torch.zeros(1, channels, height, width)
    ids_keep = torch.arange(length // 2).unsqueeze(0)  # (1, L/2): any K would do
    num_kept = torch.export.Dim("num_kept", min=1, max=length)
    with torch.no_grad():
        torch.onnx.export(
            wrapper, (imgs, ids_keep), path,
            input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
            dynamic_shapes={"imgs": None, "ids_keep": {1: num_kept}},
            dynamo=True, external_data=False, verbose=False,
        )  # fmt: skip
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Export an MAE checkpoint to ONNX (see the module docstring)."
    )
    parser.add_argument(
        "checkpoint",
        help="a checkpoint written by mae_minimal, e.g. runs/fashion_mnist/weights.pth",
    )
    parser.add_argument("output", help="the .onnx file to write")
    args = parser.parse_args(argv)
    print(export_onnx(load_model(args.checkpoint), args.output))


if __name__ == "__main__":
    main()
