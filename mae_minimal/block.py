"""The transformer block of ViT and MAE: pre-norm attention, then a pre-norm MLP, each
residual.

Parameter names are timm's (norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2), which
the official MAE checkpoints use.
"""

import torch.nn.functional as F
from einops import rearrange
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention with one fused projection for queries, keys and values.

    x: (N, T, D) -> (N, T, D)
    """

    def __init__(self, dim, num_heads):
        super().__init__()
        if dim % num_heads:
            raise ValueError(
                f"the width {dim} is not divisible by the number of heads {num_heads}"
            )
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        q, k, v = rearrange(
            self.qkv(x), "n t (three h d) -> three n h t d", three=3, h=self.num_heads
        )  # each (N, heads, T, D/heads)
        x = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v
        return self.proj(rearrange(x, "n h t d -> n t (h d)"))


class Mlp(nn.Module):
    """Two linear layers with a GELU between:
    (N, T, D) -> (N, T, hidden) -> (N, T, D)."""

    def __init__(self, dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """x + attn(norm1(x)), then x + mlp(norm2(x)).  x: (N, T, D) -> (N, T, D)."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, norm_layer=nn.LayerNorm):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))
