"""A ViT classifier built from the MAE encoder, for linear probing and fine-tuning.

It sees every patch (no masking) and classifies one feature vector per image: the
average of the patch tokens passed through `fc_norm` (global_pool=True, the paper's
fine-tuning choice), or the cls token after `norm`. Names follow the official
models_vit.py, so the official fine-tuned checkpoints load as they are and pretrained
ones (MAE or encoder-only) load through `mae_minimal.load_checkpoint`.
"""

from torch import nn

from mae_minimal.encoder import ViTEncoder

NEW_HEAD_KEYS = ("head.weight", "head.bias", "fc_norm.weight", "fc_norm.bias")


class ViTClassifier(ViTEncoder):
    """imgs: (N, C, H, W) -> logits: (N, num_classes)."""

    def __init__(self, num_classes=1000, global_pool=True, **encoder_kwargs):
        super().__init__(**encoder_kwargs)
        self.config = dict(
            self.encoder_config, num_classes=num_classes, global_pool=global_pool
        )
        self.global_pool = global_pool
        embed_dim = self.cls_token.shape[-1]
        # the pooled features get their own norm; the encoder's last one goes
        if global_pool:
            self.fc_norm = self.encoder_config["norm_layer"](embed_dim)
            del self.norm
        self.head = nn.Linear(embed_dim, num_classes)
        self.initialize_weights()
        # a near-zero head, as official fine-tuning
        nn.init.trunc_normal_(self.head.weight, std=2e-5)

    @classmethod
    def from_mae(cls, mae, num_classes, global_pool=True):
        """A classifier with mae's encoder architecture and weights, and a new head."""
        classifier = cls(
            num_classes=num_classes, global_pool=global_pool, **mae.encoder_config
        )
        ours = classifier.state_dict()
        missing, _ = classifier.load_state_dict(
            {k: v for k, v in mae.state_dict().items() if k in ours}, strict=False
        )
        # the same encoder: only the head is new
        assert set(missing) <= set(NEW_HEAD_KEYS), missing
        return classifier

    def forward_features(self, imgs):
        """imgs: (N, C, H, W) -> features: (N, D)."""
        x = self.encode(imgs)  # (N, 1 + L, D)
        if self.global_pool:
            return self.fc_norm(x[:, 1:, :].mean(dim=1))
        return self.norm(x)[:, 0]

    def forward(self, imgs):
        return self.head(self.forward_features(imgs))
