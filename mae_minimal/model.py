"""The masked autoencoder: an encoder that sees only the visible patches, a light
decoder that fills in the rest, and a loss on the removed patches only.

Mask convention (see masking.py): mask (N, L), 1 = removed, 0 = kept; ids_restore undoes
the shuffle.
"""

import torch
from torch import nn

from mae_minimal.block import Block
from mae_minimal.encoder import ViTEncoder
from mae_minimal.masking import random_masking
from mae_minimal.patches import patchify, unpatchify
from mae_minimal.pos_embed import get_2d_sincos_pos_embed

DECODER_POS_EMBED_CHOICES = ("all", "mask", "none")


class MaskedAutoencoderViT(ViTEncoder):
    """MAE with a ViT encoder and decoder, under the official constructor arguments and
    names.

    Two switches, off by default, serve the book's ablations:
      encoder_sees_mask_tokens: the encoder processes all L positions, with a learned
        mask token in place of each removed patch (the paper's "encoder w/ [M]",
        Table 1c and Table 2); the decoder then takes the encoder's full output and has
        no mask token of its own.
      decoder_pos_embed_to: where the decoder adds its positional embedding: "all"
        tokens (the paper), "mask" tokens only, or "none".
    """

    def __init__(
        self,
        img_size=224,
        patch_size=16,
        in_chans=3,
        embed_dim=1024,
        depth=24,
        num_heads=16,
        decoder_embed_dim=512,
        decoder_depth=8,
        decoder_num_heads=16,
        mlp_ratio=4.0,
        norm_layer=nn.LayerNorm,
        norm_pix_loss=False,
        *,
        encoder_sees_mask_tokens=False,
        decoder_pos_embed_to="all",
    ):
        super().__init__(img_size, patch_size, in_chans, embed_dim, depth, num_heads,
                         mlp_ratio, norm_layer)  # fmt: skip
        if decoder_pos_embed_to not in DECODER_POS_EMBED_CHOICES:
            raise ValueError(
                f"decoder_pos_embed_to must be one of {DECODER_POS_EMBED_CHOICES}, "
                f"got {decoder_pos_embed_to!r}"
            )
        if encoder_sees_mask_tokens and decoder_pos_embed_to == "mask":
            raise ValueError(
                "decoder_pos_embed_to='mask' needs the decoder's own mask tokens, "
                "which a model with encoder_sees_mask_tokens=True does not have"
            )
        self.config = dict(
            self.encoder_config, decoder_embed_dim=decoder_embed_dim,
            decoder_depth=decoder_depth, decoder_num_heads=decoder_num_heads,
            norm_pix_loss=norm_pix_loss,
            encoder_sees_mask_tokens=encoder_sees_mask_tokens,
            decoder_pos_embed_to=decoder_pos_embed_to)  # fmt: skip
        self.norm_pix_loss = norm_pix_loss
        self.encoder_sees_mask_tokens = encoder_sees_mask_tokens
        self.decoder_pos_embed_to = decoder_pos_embed_to
        num_patches = self.patch_embed.num_patches

        if encoder_sees_mask_tokens:  # one mask token, in the encoder's width
            self.encoder_mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.mask_token = None
        else:  # the paper's design: the decoder's mask token
            self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.decoder_pos_embed = nn.Parameter(
            torch.zeros(1, num_patches + 1, decoder_embed_dim), requires_grad=False
        )
        self.decoder_blocks = nn.ModuleList(
            [
                Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, norm_layer)
                for _ in range(decoder_depth)
            ]
        )
        self.decoder_norm = norm_layer(decoder_embed_dim)
        # a patch's pixels
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2 * in_chans)
        self.initialize_weights()

    def initialize_weights(self):
        super().initialize_weights()
        self.decoder_pos_embed.data.copy_(
            get_2d_sincos_pos_embed(
                self.decoder_pos_embed.shape[-1], self.grid_size, cls_token=True
            )
        )
        if self.encoder_sees_mask_tokens:
            nn.init.normal_(self.encoder_mask_token, std=0.02)
        else:
            nn.init.normal_(self.mask_token, std=0.02)

    def patchify(self, imgs):
        """imgs: (N, C, H, W) -> (N, L, p*p*C)"""
        return patchify(imgs, self.patch_size)

    def unpatchify(self, x):
        """x: (N, L, p*p*C) -> (N, C, H, W)"""
        return unpatchify(x, self.patch_size, self.grid_size, self.patch_embed.in_chans)

    def forward_encoder(self, imgs, mask_ratio, noise=None):
        """imgs: (N, C, H, W) -> latent (N, 1 + L_kept, D), mask (N, L),
        ids_restore (N, L).

        With encoder_sees_mask_tokens the latent holds all positions: (N, 1 + L, D).
        """
        x = self.embed_patches(imgs)  # (N, L, D)
        if self.encoder_sees_mask_tokens:
            _, mask, ids_restore = random_masking(x, mask_ratio, noise)
            # (1, L, D)
            mask_tokens = self.encoder_mask_token + self.pos_embed[:, 1:, :]
            x = torch.where(mask.bool().unsqueeze(-1), mask_tokens, x)  # (N, L, D)
        else:
            # (N, L_kept, D)
            x, mask, ids_restore = random_masking(x, mask_ratio, noise)
        return self.norm(self.forward_blocks(x)), mask, ids_restore

    def forward_decoder(self, x, ids_restore, mask=None):
        """x: (N, 1 + L_kept, D) latent, ids_restore: (N, L) -> pred: (N, L, p*p*C).

        mask: (N, L), 1 = removed; needed only by decoder_pos_embed_to="mask".
        """
        x = self.decoder_embed(x)  # (N, 1 + L_kept, D_dec)
        batch, length, dim = x.shape[0], ids_restore.shape[1], x.shape[2]
        cls_token, tokens = x[:, :1, :], x[:, 1:, :]
        num_kept = tokens.shape[1]
        # a mask token per removed patch, then unshuffle
        if not self.encoder_sees_mask_tokens:
            mask_tokens = self.mask_token.expand(batch, length - num_kept, -1)
            # (N, L, D_dec), shuffled order
            tokens = torch.cat([tokens, mask_tokens], dim=1)
            tokens = torch.gather(
                tokens, 1, ids_restore.unsqueeze(-1).expand(-1, -1, dim)
            )
        x = torch.cat([cls_token, tokens], dim=1)  # (N, 1 + L, D_dec), image order

        if self.decoder_pos_embed_to == "all":
            x = x + self.decoder_pos_embed
        elif self.decoder_pos_embed_to == "mask":
            if mask is None:
                raise ValueError(
                    "decoder_pos_embed_to='mask' needs the mask: "
                    "forward_decoder(x, ids_restore, mask)"
                )
            # (N, 1 + L), the cls slot
            removed = torch.cat([mask.new_zeros(batch, 1), mask], dim=1).to(x.dtype)
            x = x + self.decoder_pos_embed * removed.unsqueeze(-1)

        for block in self.decoder_blocks:
            x = block(x)
        x = self.decoder_pred(self.decoder_norm(x))  # (N, 1 + L, p*p*C)
        return x[:, 1:, :]  # drop the cls token

    def forward_loss(self, imgs, pred, mask):
        """Mean squared error per patch, averaged over the removed patches only.

        imgs: (N, C, H, W), pred: (N, L, p*p*C), mask: (N, L) with 1 = removed.
        With norm_pix_loss the target is each patch normalised by its own mean and
        variance. With nothing removed (mask_ratio=0) there is nothing to predict and
        the loss is 0.
        """
        loss = ((pred - self.loss_target(imgs)) ** 2).mean(dim=-1)  # (N, L), per patch
        return (loss * mask).sum() / mask.sum().clamp(min=1)

    def loss_target(self, imgs):
        """What pred is scored against: imgs (N, C, H, W) -> (N, L, p*p*C), the patches,
        each one normalised by its own mean and variance when norm_pix_loss."""
        target = self.patchify(imgs)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        return target

    def forward(self, imgs, mask_ratio=0.75, noise=None):
        """imgs: (N, C, H, W); noise: (N, L) or None for uniform random masking.

        Returns loss (a scalar), pred (N, L, p*p*C) and mask (N, L).
        """
        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, noise)
        pred = self.forward_decoder(latent, ids_restore, mask)
        return self.forward_loss(imgs, pred, mask), pred, mask
