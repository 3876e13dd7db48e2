"""Vision Transformer backbone on timm's VisionTransformer, with RelViT's ablation switches."""
from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from relvit.backbones.base import TokenBackbone

ATTENTION_MASKS = ("none", "diagonal", "diagonal_clf_row")
POSITION_EMBEDDINGS = ("learned", "sincos")


def sincos_position_embedding(side: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine embedding of a side x side grid in raster order: [side*side, dim].

    Half the channels encode the row, half the column, each as sin/cos pairs over geometric
    frequencies (dim must be a multiple of 4).
    """
    if dim % 4:
        raise ValueError(f"sincos position embeddings need a width divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # [D/4]
    coords = torch.arange(side, dtype=torch.float64)
    rows = coords.repeat_interleave(side)[:, None] * omega  # [N, D/4]
    cols = coords.repeat(side)[:, None] * omega
    emb = torch.cat((rows.sin(), rows.cos(), cols.sin(), cols.cos()), dim=1)
    return emb.float()


class ViTBackbone(TokenBackbone):
    """timm VisionTransformer (pre-norm blocks, qkv bias, LayerNorm eps 1e-6, truncated-normal init).

    Ablations of the original: ``attention_mask`` (``diagonal``: every token attends to itself
    only; ``diagonal_clf_row``: the same, but the CLS token attends to all), ``class_token=False``
    (the final LayerNorm still normalises the patch tokens), and fixed ``sincos`` position
    embeddings instead of learned ones. ``drop_rate`` is the original's ``dropout``: after the
    attention projection, in the MLP and on the embedded tokens; ``attn_drop_rate`` drops attention
    weights. The CLS token starts from a truncated normal of std ``cls_token_std``. The token
    dropout also acts where no position embeddings are added unless ``pos_drop_without_pos_embed``
    is false (the original's: only together with the position embeddings).
    """

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        class_token: bool = True,
        attention_mask: str = "none",
        position_embedding: str = "learned",
        cls_token_std: float = 1e-6,
        pos_drop_without_pos_embed: bool = True,
    ):
        super().__init__()
        if attention_mask not in ATTENTION_MASKS:
            raise ValueError(f"attention_mask must be one of {ATTENTION_MASKS}, got {attention_mask!r}")
        if position_embedding not in POSITION_EMBEDDINGS:
            raise ValueError(f"position_embedding must be one of {POSITION_EMBEDDINGS}, got {position_embedding!r}")
        if attention_mask == "diagonal_clf_row" and not class_token:
            raise ValueError("attention_mask 'diagonal_clf_row' needs a CLS token (class_token: true)")
        self.vit = VisionTransformer(
            img_size=image_size,
            patch_size=patch_size,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=True,
            # timm's drop_rate only feeds its classifier, which is left out here
            pos_drop_rate=drop_rate,
            proj_drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate,
            class_token=class_token,
            # not "avg": timm would move the final norm after its pooling, leaving vit.norm an Identity
            global_pool="token" if class_token else "",
            fc_norm=False,  # timm's pooled-feature norm: forward never reaches it (the heads pool)
            num_classes=0,
        )
        if self.vit.cls_token is not None:  # timm builds it for class_token=True
            nn.init.trunc_normal_(self.vit.cls_token, std=cls_token_std)
        self.embed_dim = embed_dim
        self.grid_size = image_size // patch_size
        self.has_cls_token = class_token
        self.attention_mask = attention_mask
        self.pos_drop_without_pos_embed = pos_drop_without_pos_embed
        if position_embedding == "sincos" and self.vit.pos_embed is not None:
            prefix = torch.zeros(1 if class_token else 0, embed_dim)
            fixed = torch.cat((prefix, sincos_position_embedding(self.grid_size, embed_dim)))
            self.vit.pos_embed.data.copy_(fixed[None])
            self.vit.pos_embed.requires_grad_(False)

    @property
    def num_layers(self) -> int:
        """Layers for layer-wise learning-rate decay: the embeddings (0), then one per block."""
        return len(self.vit.blocks) + 1

    def layer_of(self, name: str) -> int:
        """The layer of parameter ``name`` (relative to this module): 0 for the patch, position and CLS
        embeddings, ``i + 1`` for block ``i``, ``num_layers`` for what follows the blocks (the final norm)."""
        parts = name.split(".")
        if parts[:2] == ["vit", "blocks"]:
            return int(parts[2]) + 1
        if parts[1:2] and parts[1] in ("patch_embed", "cls_token", "pos_embed", "reg_token"):
            return 0
        return self.num_layers

    def _mask(self, num_tokens: int, device: torch.device) -> torch.Tensor | None:
        """Boolean attention mask [T, T], True where attention is allowed."""
        if self.attention_mask == "none":
            return None
        mask = torch.eye(num_tokens, dtype=torch.bool, device=device)
        if self.attention_mask == "diagonal_clf_row":
            mask[0] = True
        return mask

    def forward(self, images: torch.Tensor, add_pos_embed: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
        """images [B, 3, H, W] -> (cls [B, D] or None, patches [B, N, D])."""
        vit = self.vit
        x = vit.patch_embed(images)  # [B, N, D]
        if vit.cls_token is not None:
            x = torch.cat((vit.cls_token.expand(x.shape[0], -1, -1), x), dim=1)  # [B, 1 + N, D]
        if add_pos_embed and vit.pos_embed is not None:
            x = x + vit.pos_embed
        if add_pos_embed or self.pos_drop_without_pos_embed:  # the original drops only embedded positions
            x = vit.pos_drop(x)
        x = vit.norm_pre(x)
        mask = self._mask(x.shape[1], x.device)
        for block in vit.blocks:
            x = block(x, attn_mask=mask)
        x = vit.norm(x)
        if self.has_cls_token:
            return x[:, 0], x[:, 1:]
        return None, x

    def position_embeddings(self) -> torch.Tensor | None:
        pos = self.vit.pos_embed
        return None if pos is None else pos[0, 1 if self.has_cls_token else 0 :]

    def patch_embedding_filters(self) -> torch.Tensor:
        return self.vit.patch_embed.proj.weight

    @staticmethod
    def remap_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Published DeiT / timm ViT weights -> this module's names (the classifier head dropped)."""
        return {f"vit.{k}": v for k, v in state_dict.items() if not k.startswith(("head.", "head_dist.", "fc_norm."))}
