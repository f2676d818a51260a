"""The ViT encoder that the MAE and the classifier share.

Its parameters sit at the top level of the model, under the official names
(patch_embed.proj, cls_token, pos_embed, blocks.N, norm), so the released checkpoints
load without renaming.
"""

import torch
from torch import nn

from mae_minimal.block import Block
from mae_minimal.patches import PatchEmbed
from mae_minimal.pos_embed import get_2d_sincos_pos_embed


class ViTEncoder(nn.Module):
    """Patch embedding, a cls token, fixed sin-cos positions and `depth` transformer
    blocks.

    img_size may be an int (square images) or (H, W); both sides must be multiples of
    patch_size.
    """

    def __init__(
        self,
        img_size=224,
        patch_size=16,
        in_chans=3,
        embed_dim=1024,
        depth=24,
        num_heads=16,
        mlp_ratio=4.0,
        norm_layer=nn.LayerNorm,
    ):
        super().__init__()
        self.encoder_config = dict(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            norm_layer=norm_layer,
        )
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # Fixed, not learned: a Parameter without gradient, as in the official code, so
        # that it is saved in (and loaded from) checkpoints under the name "pos_embed".
        self.pos_embed = nn.Parameter(
            torch.zeros(1, num_patches + 1, embed_dim), requires_grad=False
        )
        self.blocks = nn.ModuleList(
            [Block(embed_dim, num_heads, mlp_ratio, norm_layer) for _ in range(depth)]
        )
        self.norm = norm_layer(embed_dim)

    @property
    def patch_size(self):
        return self.patch_embed.patch_size

    @property
    def grid_size(self):
        """(rows, cols) of the patch grid."""
        return self.patch_embed.grid_size

    def embed_patches(self, imgs):
        """imgs: (N, C, H, W) -> tokens with their positions added: (N, L, D)."""
        return self.patch_embed(imgs) + self.pos_embed[:, 1:, :]

    def forward_blocks(self, x):
        """x: (N, T, D) tokens with their positions -> (N, 1 + T, D): the cls token
        (with its zero position) put first, then every transformer block. The final norm
        is the caller's."""
        cls_token = (self.cls_token + self.pos_embed[:, :1, :]).expand(
            x.shape[0], -1, -1
        )
        x = torch.cat([cls_token, x], dim=1)
        for block in self.blocks:
            x = block(x)
        return x

    def encode(self, imgs):
        """imgs: (N, C, H, W) -> (N, 1 + L, D): every patch, in image order, through the
        blocks (before the final norm; an MAE's features are
        model.norm(model.encode(imgs)))."""
        return self.forward_blocks(self.embed_patches(imgs))

    def initialize_weights(self):
        """The official initialisation: sin-cos positions, xavier-uniform linear layers
        (the patch embedding included, seen as a linear layer), N(0, 0.02) tokens,
        LayerNorms at (1, 0)."""
        self.pos_embed.data.copy_(
            get_2d_sincos_pos_embed(
                self.pos_embed.shape[-1], self.grid_size, cls_token=True
            )
        )
        patch_weight = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(patch_weight.view(patch_weight.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
