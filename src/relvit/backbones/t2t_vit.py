"""T2T-ViT (Yuan et al., ICCV 2021) on timm building blocks.

A tokens-to-token module turns the image into 14 x 14 tokens at 224 px by three overlapping
soft splits (unfolds), with a small token transformer after each of the first two, then a
stack of ViT blocks with a CLS token and a fixed sinusoidal position embedding.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import Mlp, trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn

from relvit.backbones.base import TokenBackbone

# name -> (embed dim, depth, heads, mlp ratio, token layer)
T2T_VIT_VARIANTS: dict[str, tuple[int, int, int, float, str]] = {
    "t2t_vit_7": (256, 7, 4, 2.0, "performer"),
    "t2t_vit_10": (256, 10, 4, 2.0, "performer"),
    "t2t_vit_12": (256, 12, 4, 2.0, "performer"),
    "t2t_vit_14": (384, 14, 6, 3.0, "performer"),
    "t2t_vit_19": (448, 19, 7, 3.0, "performer"),
    "t2t_vit_24": (512, 24, 8, 3.0, "performer"),
    "t2t_vit_t_14": (384, 14, 6, 3.0, "transformer"),
    "t2t_vit_t_19": (448, 19, 7, 3.0, "transformer"),
    "t2t_vit_t_24": (512, 24, 8, 3.0, "transformer"),
}

# Published sizes with a 1000-class head at 224 px, millions (T2T-ViT paper, ICCV 2021).
PUBLISHED_PARAMS_M = {
    "t2t_vit_7": 4.3, "t2t_vit_10": 5.9, "t2t_vit_12": 6.9, "t2t_vit_14": 21.5, "t2t_vit_19": 39.2,
    "t2t_vit_24": 64.1, "t2t_vit_t_14": 21.5, "t2t_vit_t_19": 39.2, "t2t_vit_t_24": 64.1,
}

TOKEN_DIM = 64  # width of the tokens between the soft splits
# the ViT tokens sit on a grid 16x coarser than the image: soft split strides 4, 2, 2
TOKEN_STRIDE = 16


def sinusoid_position_table(num_positions: int, dim: int) -> torch.Tensor:
    """1-D sine/cosine table of the Transformer paper, [num_positions, dim]: even channels sin, odd cos."""
    position = torch.arange(num_positions, dtype=torch.float64)[:, None]  # [P, 1]
    channel = torch.arange(dim)
    angle = position / 10000 ** (2 * (channel // 2) / dim)  # [P, D]
    return torch.where(channel % 2 == 0, angle.sin(), angle.cos()).float()


class TokenPerformer(nn.Module):
    """Single-head Performer token layer: [B, T, dim] -> [B, T, token_dim].

    Softmax attention is approximated with positive random features phi(x) = exp(w x - |x|^2 / 2)
    / sqrt(m), with m = token_dim / 2 fixed orthogonal directions, so the cost is linear in T.
    The input and output widths differ, so the value tokens carry the residual.
    """

    w: torch.Tensor  # [m, token_dim] random features (a buffer)

    def __init__(self, dim: int, token_dim: int, kernel_ratio: float = 0.5):
        super().__init__()
        self.token_dim = token_dim
        self.norm1 = nn.LayerNorm(dim)
        self.kqv = nn.Linear(dim, 3 * token_dim)  # split in this order: key, query, value
        self.proj = nn.Linear(token_dim, token_dim)
        # the original hard-wires 0.1 dropout in its Performer token layers, whatever the model's rate
        self.proj_drop = nn.Dropout(0.1)
        self.norm2 = nn.LayerNorm(token_dim)
        self.mlp = Mlp(token_dim, token_dim, drop=(0.0, 0.1))
        m = int(token_dim * kernel_ratio)
        # fixed random features, saved with the weights so a checkpoint reproduces its kernel
        self.register_buffer("w", nn.init.orthogonal_(torch.empty(m, token_dim)) * math.sqrt(m))

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, d] -> positive random features [B, T, m]."""
        sq_norm = x.pow(2).sum(-1, keepdim=True) / 2  # [B, T, 1]
        return torch.exp(x @ self.w.t() - sq_norm) / math.sqrt(self.w.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, q, v = self.kqv(self.norm1(x)).split(self.token_dim, dim=-1)  # each [B, T, d]
        # the exponentials overflow half precision, so this part always runs in float32
        with torch.autocast(device_type=x.device.type, enabled=False):
            kp, qp, vf = self._features(k.float()), self._features(q.float()), v.float()  # [B, T, m] x2, [B, T, d]
            kv = kp.transpose(1, 2) @ vf  # [B, m, d]
            normaliser = qp @ kp.sum(1).unsqueeze(-1)  # [B, T, 1]
            y = (qp @ kv) / (normaliser + 1e-8)  # [B, T, d]
        x = v + self.proj_drop(self.proj(y.to(v.dtype)))
        return x + self.mlp(self.norm2(x))


class TokenAttention(nn.Module):
    """Single-head softmax attention that narrows [B, T, dim] to [B, T, token_dim], values as residual."""

    def __init__(self, dim: int, token_dim: int):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * token_dim, bias=False)
        self.proj = nn.Linear(token_dim, token_dim)
        # the original scales by the input width, not token_dim; kept so published weights match
        self.scale = dim**-0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # each [B, T, d]
        y = F.scaled_dot_product_attention(q, k, v, scale=self.scale)  # [B, T, d]
        return v + self.proj(y)


class TokenTransformer(nn.Module):
    """Transformer token layer: [B, T, dim] -> [B, T, token_dim], MLP ratio 1."""

    def __init__(self, dim: int, token_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = TokenAttention(dim, token_dim)
        self.norm2 = nn.LayerNorm(token_dim)
        self.mlp = Mlp(token_dim, token_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TokensToToken(nn.Module):
    """Images [B, 3, H, W] -> tokens [B, H/16 * W/16, embed_dim] in raster order."""

    def __init__(self, embed_dim: int, token_layer: str, token_dim: int = TOKEN_DIM):
        super().__init__()
        layer = TokenPerformer if token_layer == "performer" else TokenTransformer
        self.soft_split0 = nn.Unfold(kernel_size=7, stride=4, padding=2)
        self.soft_split1 = nn.Unfold(kernel_size=3, stride=2, padding=1)
        self.soft_split2 = nn.Unfold(kernel_size=3, stride=2, padding=1)
        self.attention1 = layer(3 * 7 * 7, token_dim)
        self.attention2 = layer(token_dim * 3 * 3, token_dim)
        self.project = nn.Linear(token_dim * 3 * 3, embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        x = self.attention1(self.soft_split0(images).transpose(1, 2))  # [B, H/4 * W/4, 64]
        x = x.transpose(1, 2).unflatten(2, (h // 4, w // 4))  # [B, 64, H/4, W/4]
        x = self.attention2(self.soft_split1(x).transpose(1, 2))  # [B, H/8 * W/8, 64]
        x = x.transpose(1, 2).unflatten(2, (h // 8, w // 8))  # [B, 64, H/8, W/8]
        return self.project(self.soft_split2(x).transpose(1, 2))  # [B, H/16 * W/16, D]


class T2TViTBackbone(TokenBackbone):
    """T2T-ViT whose 14 x 14 tokens (at 224 px) are average-pooled to 7 x 7 for the SSL heads.

    ``forward`` returns the CLS token and the patch tokens after the final LayerNorm, the latter
    pooled with a 3 x 3 window, stride 2, padding 1 (padding not counted), so the grid side is
    ceil(image_size / 32). The sinusoidal position embedding is fixed, as in the original;
    ``add_pos_embed=False`` leaves it out (and the token dropout with it when
    ``pos_drop_without_pos_embed`` is false, as in the original). The ViT blocks use timm's attention scale
    head_dim ** -0.5, as the original does when it trains from scratch.
    """

    pos_embed: torch.Tensor  # [1, 1 + N, D] fixed sinusoid (a buffer)

    def __init__(
        self,
        variant: str,
        image_size: int = 224,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        pos_drop_without_pos_embed: bool = True,
    ):
        super().__init__()
        if variant not in T2T_VIT_VARIANTS:
            raise ValueError(f"unknown T2T-ViT variant {variant!r}; valid ones: {', '.join(T2T_VIT_VARIANTS)}")
        if image_size % TOKEN_STRIDE:
            raise ValueError(f"T2T-ViT needs an image size divisible by {TOKEN_STRIDE}, got {image_size}")
        embed_dim, depth, num_heads, mlp_ratio, token_layer = T2T_VIT_VARIANTS[variant]
        self.image_size = image_size
        self.token_side = image_size // TOKEN_STRIDE
        self.embed_dim = embed_dim
        self.grid_size = math.ceil(self.token_side / 2)
        self.has_cls_token = True

        self.tokens_to_token = TokensToToken(embed_dim, token_layer)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # a buffer, not a parameter: fixed in the original, yet part of its checkpoints
        table = sinusoid_position_table(self.token_side**2 + 1, embed_dim)
        self.register_buffer("pos_embed", table[None])  # [1, 1 + N, D]
        self.pos_drop = nn.Dropout(drop_rate)
        self.pos_drop_without_pos_embed = pos_drop_without_pos_embed
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=False,
                proj_drop=drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=rate,
                norm_layer=nn.LayerNorm,
            )
            # drop-path rate rising linearly with depth; plain floats, so the model also builds on 'meta'
            for rate in (drop_path_rate * i / max(depth - 1, 1) for i in range(depth))
        )
        self.norm = nn.LayerNorm(embed_dim)

        trunc_normal_(self.cls_token, std=0.02)
        self.apply(_init_linear)

    def forward(self, images: torch.Tensor, add_pos_embed: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """images [B, 3, S, S] -> (cls [B, D], pooled patch tokens [B, G*G, D])."""
        if images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"expected {self.image_size} px images, got {tuple(images.shape[-2:])}")
        x = self.tokens_to_token(images)  # [B, N, D]
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)  # [B, 1 + N, D]
        if add_pos_embed:
            x = x + self.pos_embed
        if add_pos_embed or self.pos_drop_without_pos_embed:  # the original drops only embedded positions
            x = self.pos_drop(x)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        patches = x[:, 1:].transpose(1, 2).unflatten(2, (self.token_side, self.token_side))  # [B, D, S/16, S/16]
        patches = F.avg_pool2d(patches, kernel_size=3, stride=2, padding=1, count_include_pad=False)  # [B, D, G, G]
        return x[:, 0], patches.flatten(2).transpose(1, 2)

    def position_embeddings(self) -> None:
        """None: T2T-ViT's sinusoid is fixed, not learned, so there is nothing learned to inspect."""
        return None

    @staticmethod
    def remap_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Weights named as in the official T2T-ViT release -> this module's names, head dropped.

        Only the Performer token layers differ: their MLP is an ``nn.Sequential`` there
        (``mlp.0``, ``mlp.2``) and timm's ``Mlp`` here (``mlp.fc1``, ``mlp.fc2``).
        Published checkpoints were evaluated with an attention scale of embed_dim ** -0.5 in the
        ViT blocks (the official loader sets it), which this module does not reproduce.
        """
        out = {}
        for name, value in state_dict.items():
            if name.startswith("head."):
                continue
            if name.startswith("tokens_to_token.attention"):
                name = name.replace(".mlp.0.", ".mlp.fc1.").replace(".mlp.2.", ".mlp.fc2.")
            out[name] = value
        return out


def _init_linear(module: nn.Module) -> None:
    """Truncated-normal linear weights and zero biases, as the original initialises."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
