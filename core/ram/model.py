"""RAM inference network: Swin encoder → ``image_proj`` embeddings → query2label tagging head → logits.

``Tagger`` is the ``nn.Module`` (its state-dict keys are the official RAM names of the inference subset), with
``tag`` / ``embed`` helpers that take RGB images in [0, 1] of any size.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, InputError, PayloadError
from ..image import check_finite, checked_inputs
from ..shapes import count_blocks, dim, shape
from . import tags as tagmod
from .embeds import DapeEmbeds
from .swin import SwinConfig, SwinTransformer

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
HEAD_HEADS = 4  # q2l_config num_attention_heads: not visible in any tensor shape, 4 in every released RAM
BERT_EPS = 1e-12


@dataclass(frozen=True)
class RamConfig:
    swin: SwinConfig
    num_classes: int
    embed_dim: int  # image_proj output / label_embed width (512)
    head_hidden: int  # tagging-head hidden size (768)
    head_layers: int
    head_intermediate: int
    head_heads: int = HEAD_HEADS

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], image_size: int | None = None) -> RamConfig:
        swin = SwinConfig.from_state_dict(sd, "visual_encoder.", image_size)
        layers = count_blocks(sd, "tagging_head.encoder.layer.", "tagging-head layers")
        if not layers:
            raise ConfigError("no 'tagging_head.encoder.layer.<i>' keys: not a RAM tagging checkpoint")
        hidden, embed = shape(sd, "wordvec_proj.weight", 2, "RAM")
        if shape(sd, "image_proj.weight", 2, "RAM") != (embed, swin.out_dim):
            raise ConfigError(f"image_proj {tuple(sd['image_proj.weight'].shape)} does not match the Swin width "
                              f"{swin.out_dim} and label width {embed}")
        inter = dim(sd, "tagging_head.encoder.layer.0.intermediate.dense.weight", 0, "RAM")
        if hidden % HEAD_HEADS:
            raise ConfigError(f"tagging-head width {hidden} is not divisible by {HEAD_HEADS} heads")
        return cls(swin, dim(sd, "label_embed", 0, "RAM"), int(embed), int(hidden), layers, int(inter))


class _Linear(nn.Module):
    """Holds ``dense`` + ``LayerNorm`` under the BERT names (``...output.dense`` / ``...output.LayerNorm``)."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=BERT_EPS)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _CrossAttentionQKV(nn.Module):
    def __init__(self, hidden: int, kv_dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(kv_dim, hidden)
        self.value = nn.Linear(kv_dim, hidden)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        b, n, h = x.shape
        d = h // self.heads
        q = self.query(x).view(b, n, self.heads, d).transpose(1, 2)
        k = self.key(ctx).view(b, -1, self.heads, d).transpose(1, 2)
        v = self.value(ctx).view(b, -1, self.heads, d).transpose(1, 2)
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, h)


class _CrossAttention(nn.Module):
    def __init__(self, hidden: int, kv_dim: int, heads: int) -> None:
        super().__init__()
        self.self = _CrossAttentionQKV(hidden, kv_dim, heads)
        self.output = _Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, ctx), x)


class _Intermediate(nn.Module):
    def __init__(self, hidden: int, inter: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, inter)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class HeadLayer(nn.Module):
    """A BERT layer reduced to cross-attention + feed-forward (RAM deletes the self-attention)."""

    def __init__(self, hidden: int, kv_dim: int, inter: int, heads: int) -> None:
        super().__init__()
        self.crossattention = _CrossAttention(hidden, kv_dim, heads)
        self.intermediate = _Intermediate(hidden, inter)
        self.output = _Linear(inter, hidden)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        x = self.crossattention(x, ctx)
        return self.output(self.intermediate(x), x)


class _Encoder(nn.Module):
    def __init__(self, cfg: RamConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(
            HeadLayer(cfg.head_hidden, cfg.embed_dim, cfg.head_intermediate, cfg.head_heads)
            for _ in range(cfg.head_layers))


class TaggingHead(nn.Module):
    def __init__(self, cfg: RamConfig) -> None:
        super().__init__()
        self.encoder = _Encoder(cfg)

    def forward(self, queries: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        x = queries
        for layer in self.encoder.layer:
            x = layer(x, ctx)
        return x


def preprocess(images: torch.Tensor, size: int = 384, antialias: bool = True) -> torch.Tensor:
    """RGB ``[B,3,H,W]`` in [0,1] → normalised ``[B,3,size,size]`` float32 (bilinear stretch, ImageNet mean/std).

    ``antialias=True`` equals torchvision >= 0.17's tensor ``Resize`` (and the reference fixtures);
    ``antialias=False`` equals torchvision 0.15 (SeeSR's pin), which aliases when a side shrinks.
    Grayscale (1 channel) is repeated to RGB and an alpha channel is dropped.
    """
    if not isinstance(images, torch.Tensor):
        raise PayloadError(f"expected an image tensor [B,3,H,W], got {type(images).__name__}")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[1] not in (1, 2, 3, 4):
        raise InputError(f"expected RGB images [B,3,H,W] in [0,1], got shape {tuple(images.shape)}")
    if images.shape[0] == 0 or images.shape[-1] < 1 or images.shape[-2] < 1:
        raise InputError(f"empty image batch {tuple(images.shape)}")
    x = images[:, :3] if images.shape[1] >= 3 else images[:, :1].expand(-1, 3, -1, -1)
    x = x.float()
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias)
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class Tagger(nn.Module):
    """RAM tagger (optionally with DAPE merged). ``tagger(pixels)`` → ``(logits [B,C], embeds [B,145,512])``."""

    def __init__(self, cfg: RamConfig, tag_names: Sequence[str] | None = None,
                 thresholds: torch.Tensor | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.label_embed = nn.Parameter(torch.zeros(cfg.num_classes, cfg.embed_dim))
        self.visual_encoder = SwinTransformer(cfg.swin)
        self.image_proj = nn.Linear(cfg.swin.out_dim, cfg.embed_dim)
        self.tagging_head = TaggingHead(cfg)
        self.wordvec_proj = nn.Linear(cfg.embed_dim, cfg.head_hidden)
        self.fc = nn.Linear(cfg.head_hidden, 1)
        self.tag_names = tuple(tag_names) if tag_names is not None else tagmod.tag_list()
        thr = thresholds if thresholds is not None else tagmod.thresholds()
        if len(self.tag_names) != cfg.num_classes or thr.shape != (cfg.num_classes,):
            raise InputError(f"the model has {cfg.num_classes} classes but {len(self.tag_names)} tags and "
                             f"{tuple(thr.shape)} thresholds were given")
        self.register_buffer("class_thresholds", thr.float().to("cpu"), persistent=False)
        self.antialias = True
        self.dape_merged = False

    @property
    def image_size(self) -> int:
        return self.cfg.swin.image_size

    def _dtype_device(self) -> tuple[torch.dtype, torch.device]:
        p = self.label_embed
        return p.dtype, p.device

    def image_embeds(self, pixels: torch.Tensor) -> torch.Tensor:
        dtype, device = self._dtype_device()
        return self.image_proj(self.visual_encoder(pixels.to(device=device, dtype=dtype)))

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.image_size
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, s, s):
            raise InputError(f"Tagger expects preprocessed pixels [B,3,{s},{s}] (use preprocess()), "
                             f"got {tuple(pixels.shape)}")
        embeds = self.image_embeds(pixels)
        queries = F.relu(self.wordvec_proj(self.label_embed)).unsqueeze(0).expand(embeds.shape[0], -1, -1)
        logits = self.fc(self.tagging_head(queries, embeds)).squeeze(-1)
        return logits, embeds

    def _pixels(self, images: torch.Tensor, antialias: bool | None) -> torch.Tensor:
        return preprocess(images, self.image_size, self.antialias if antialias is None else bool(antialias))

    @torch.inference_mode()
    def predict(self, images: torch.Tensor, antialias: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """RGB [B,3,H,W] in [0,1] → (probabilities [B,C] float32, embeds [B,145,512]).
        ``antialias`` (default ``self.antialias``, True) is the resize flag of ``preprocess``."""
        pixels = self._pixels(images, antialias)
        logits, embeds = self(pixels)
        return torch.sigmoid(logits.float()), embeds

    def tags_from_probs(self, probs: torch.Tensor, threshold: float | None = None,
                        exclude: str | Iterable[str] | None = (), max_tags: int | None = None) -> list[str]:
        chosen = tagmod.select(probs, self.class_thresholds, self.tag_names, threshold, exclude, max_tags)
        return [tagmod.join(idx, self.tag_names) for idx in chosen]

    def tag(self, images: torch.Tensor, threshold: float | None = None, exclude: str | Iterable[str] | None = (),
            max_tags: int | None = None, antialias: bool | None = None) -> list[str]:
        """One ", "-joined tag string per image (tags in tag-list order)."""
        probs, _ = self.predict(images, antialias)
        return self.tags_from_probs(probs, threshold, exclude, max_tags)

    def embed(self, images: torch.Tensor, antialias: bool | None = None) -> torch.Tensor:
        """RGB [B,3,H,W] in [0,1] → image embeddings [B,145,512] (SeeSR's soft prompt when DAPE is merged)."""
        with torch.inference_mode():
            return self.image_embeds(self._pixels(images, antialias))

    def run(self, images: torch.Tensor, threshold: float | None = None, exclude: str | Iterable[str] | None = (),
            max_tags: int | None = None, antialias: bool | None = None) -> DapeEmbeds:
        """Tags and embeddings in one pass, as a ``DapeEmbeds`` payload (embeds float32 on CPU)."""
        check_finite(images, "image to tag")
        probs, embeds = self.predict(images, antialias)
        return DapeEmbeds(embeds.float().cpu(), tuple(self.tags_from_probs(probs, threshold, exclude, max_tags)))


def tag_images(tagger: Tagger, images: torch.Tensor, threshold: float | None = None,
               exclude: str | Iterable[str] | None = (), max_tags: int | None = None, antialias: bool | None = None,
               chunk: int = 4, progress=None) -> DapeEmbeds:
    """Tags and embeddings of every image of ``images`` ``[B,3,H,W]``, ``chunk`` images per network call;
    ``progress(done, B)`` after each chunk. The one batching rule for every front end."""
    if images.ndim != 4 or images.shape[0] == 0:
        raise InputError(f"tagging needs an image batch [B,3,H,W] with B >= 1; got {tuple(images.shape)}")
    check_finite(images, "image to tag")
    n = images.shape[0]
    chunk = max(1, int(chunk))
    tags: list[str] = []
    embeds: list[torch.Tensor] = []
    with checked_inputs():  # tagger.run does not check each chunk again
        for start in range(0, n, chunk):
            part = tagger.run(images[start:start + chunk], threshold=threshold, exclude=exclude, max_tags=max_tags,
                              antialias=antialias)
            tags += part.tags
            embeds.append(part.embeds)
            if progress is not None:
                progress(min(start + chunk, n), n)
    return DapeEmbeds(torch.cat(embeds), tuple(tags))
