"""The Cross-view Module g = e . m . s of CvM (cvm_method_notes.md §1.2-1.4, lineage UniMatch -> MVSplat).

- ``SpatialEncoder`` s(.): a shallow residual CNN with InstanceNorm (UniMatch's ``CNNEncoder``) giving
  stride-8 "geometric" features. Its strided convolutions use even kernels (6x6 stem, 4x4 downsampling,
  2x2 average-pool shortcuts) so that feature pixel j is centred on input pixel 8j + 3.5, exactly the
  DESIGN §4 resize convention; ``geometry.resize_intrinsics`` therefore gives the exact K of the grid.
- ``MultiViewTransformer`` m(.): M blocks of self-view then cross-view attention inside
  ``splits x splits`` windows, shifted by half a window on odd blocks (Swin / GMFlow), 1 head by
  default, FFN on concat[x, message] (GMFlow's ``TransformerLayer``). Every view attends to all
  other views given.
- ``plane_sweep`` e(.): the correlation volume over D inverse-depth-uniform candidates, averaged over
  the source views, computed by ``mtl3d_perception.ops.cost_volume``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtl3d_perception import geometry
from mtl3d_perception.model.config import ModelConfig
from mtl3d_perception.ops import cost_volume

STRIDE = 8


class _ResBlock(nn.Module):
    """conv-IN-ReLU x2 with a shortcut; stride 2 uses a 4x4 conv and an avg-pool shortcut (pixel-centre aligned)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        if stride == 1:
            self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        else:
            self.conv1 = nn.Conv2d(cin, cout, 4, 2, 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.norm1 = nn.InstanceNorm2d(cout)
        self.norm2 = nn.InstanceNorm2d(cout)
        self.pool = stride == 2
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1), nn.InstanceNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        if self.shortcut is not None:
            x = self.shortcut(F.avg_pool2d(x, 2) if self.pool else x)
        return F.relu(x + y)


class SpatialEncoder(nn.Module):
    """s(.): image normalised with ImageNet statistics ``[B,3,H,W]`` -> ``[B, C, H/8, W/8]``."""

    def __init__(self, stages: tuple[int, int, int], out_channels: int):
        super().__init__()
        c1, c2, c3 = stages
        self.stem = nn.Sequential(nn.Conv2d(3, c1, 6, 2, 2), nn.InstanceNorm2d(c1), nn.ReLU(inplace=True))
        self.layer1 = _ResBlock(c1, c1, 1)  # stride 2
        self.layer2 = _ResBlock(c1, c2, 2)  # stride 4
        self.layer3 = _ResBlock(c2, c3, 2)  # stride 8
        self.proj = nn.Conv2d(c3, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.layer3(self.layer2(self.layer1(self.stem(x)))))


# --------------------------------------------------------------------------------------------------
# Multi-view transformer
# --------------------------------------------------------------------------------------------------


def _sine_position(h: int, w: int, channels: int) -> np.ndarray:
    """DETR/GMFlow 2-D sine position encoding ``[channels, h, w]`` (normalised coordinates), float32.

    numpy, like the window masks below: constants of the feature size, built without dozens of tiny
    torch ops (each one a thread synchronisation on a CPU).
    """
    npf = channels // 2
    y = np.broadcast_to(np.arange(1, h + 1, dtype=np.float32)[:, None] / h * 2 * np.pi, (h, w))
    x = np.broadcast_to(np.arange(1, w + 1, dtype=np.float32)[None, :] / w * 2 * np.pi, (h, w))
    dim_t = 10000 ** (2 * (np.arange(npf, dtype=np.float32) // 2) / npf)
    pos = []
    for coord in (y, x):
        p = coord[..., None] / dim_t  # [h, w, npf]
        pos.append(np.stack([np.sin(p[..., 0::2]), np.cos(p[..., 1::2])], -1).reshape(h, w, -1))
    pe = np.concatenate(pos, -1).transpose(2, 0, 1)  # [2*npf, h, w]
    out = np.zeros((channels, h, w), np.float32)
    out[: pe.shape[0]] = pe
    return out


def _window_partition(x: torch.Tensor, splits: int) -> torch.Tensor:
    """``[N, hp, wp, C]`` -> ``[N, splits*splits, wh*ww, C]``."""
    N, hp, wp, C = x.shape
    wh, ww = hp // splits, wp // splits
    x = x.view(N, splits, wh, splits, ww, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(N, splits * splits, wh * ww, C)


def _window_merge(x: torch.Tensor, splits: int, hp: int, wp: int) -> torch.Tensor:
    N, _, _, C = x.shape
    wh, ww = hp // splits, wp // splits
    x = x.view(N, splits, splits, wh, ww, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(N, hp, wp, C)


def _window_mask(hp: int, wp: int, splits: int, shift: bool, h: int, w: int) -> np.ndarray | None:
    """Boolean ``[nW, n, n]`` (True = may attend) for (shifted) windows with padded keys masked out.

    The map is ``hp x wp`` of which the top-left ``h x w`` is real. Shifted windows wrap around
    (``torch.roll``); tokens that were not neighbours before the roll must not attend to each other
    (Swin's mask). A token may always attend to itself, so no row is fully masked (padded queries are
    discarded afterwards).
    """
    if not shift and (h, w) == (hp, wp):
        return None
    wh, ww = hp // splits, wp // splits
    region = np.zeros((hp, wp), np.int64)
    if shift:
        sh, sw = wh // 2, ww // 2
        cnt = 0
        for ys in (slice(0, hp - wh), slice(hp - wh, hp - sh), slice(hp - sh, hp)):
            for xs in (slice(0, wp - ww), slice(wp - ww, wp - sw), slice(wp - sw, wp)):
                region[ys, xs] = cnt
                cnt += 1
    # ``region`` is laid out on the rolled map already (Swin's img_mask); the padding is where the
    # unrolled map has it, so it is rolled like the features.
    key_ok = np.zeros((hp, wp), bool)
    key_ok[:h, :w] = True
    if shift:
        key_ok = np.roll(key_ok, (-(wh // 2), -(ww // 2)), (0, 1))

    def windows(a):  # [hp, wp] -> [nW, n], the order of _window_partition
        return a.reshape(splits, wh, splits, ww).transpose(0, 2, 1, 3).reshape(splits * splits, wh * ww)

    region, key_ok = windows(region), windows(key_ok)
    allowed = (region[:, :, None] == region[:, None, :]) & key_ok[:, None, :]
    return allowed | np.eye(wh * ww, dtype=bool)[None]


def _build_constants(hp: int, wp: int, C: int, splits: int, h: int, w: int) -> tuple[torch.Tensor | None, ...]:
    """The transformer's constants for a feature size: the position encoding per window (GMFlow: every window
    sees the same coordinates) ``[C, hp, wp]`` and the two window masks (plain, shifted; None when nothing is
    masked), CPU tensors."""
    pe = torch.from_numpy(np.tile(_sine_position(hp // splits, wp // splits, C), (1, splits, splits)))
    masks = [_window_mask(hp, wp, splits, shift, h, w) for shift in (False, True)]
    return (pe, *(None if m is None else torch.from_numpy(m) for m in masks))


_cached_constants = functools.lru_cache(maxsize=8)(_build_constants)


def _constants(*size: int) -> tuple[torch.Tensor | None, ...]:
    """`_build_constants`, computed once per size in eager mode (callers never modify them); torch.compile
    traces the builder itself (it folds the constants into the graph, and warns about lru_cache)."""
    return _build_constants(*size) if torch.compiler.is_compiling() else _cached_constants(*size)


class _AttentionLayer(nn.Module):
    """GMFlow ``TransformerLayer``: attention message, merge + norm, optional FFN on concat[x, message]."""

    def __init__(self, dim: int, heads: int, ffn_expansion: int, ffn: bool):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.merge = nn.Linear(dim, dim, bias=False)
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = None
        if ffn:
            hidden = 2 * dim * ffn_expansion
            self.mlp = nn.Sequential(nn.Linear(2 * dim, hidden, bias=False), nn.GELU(), nn.Linear(hidden, dim, bias=False))
            self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: [N, nW, n, C] queries; kv: [N, nW, m, C] keys/values; mask: [nW, n, m] or None."""
        N, nW, n, C = x.shape
        m, h = kv.shape[2], self.heads
        # 4-D SDPA with windows and heads sharing one dim, [N, nW*h, n, C/h], so the mask broadcasts
        # as [1, nW*h, n, m] (inductor's SDPA pattern matcher rejects 5-D inputs with a 4-D mask).
        q = self.q_proj(x).view(N, nW, n, h, C // h).transpose(2, 3).reshape(N, nW * h, n, C // h)
        k = self.k_proj(kv).view(N, nW, m, h, C // h).transpose(2, 3).reshape(N, nW * h, m, C // h)
        v = self.v_proj(kv).view(N, nW, m, h, C // h).transpose(2, 3).reshape(N, nW * h, m, C // h)
        if mask is not None:
            mask = mask.repeat_interleave(h, 0)[None]
        msg = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        msg = msg.view(N, nW, h, n, C // h).transpose(2, 3).reshape(N, nW, n, C)
        msg = self.norm1(self.merge(msg))
        if self.mlp is not None:
            msg = self.norm2(self.mlp(torch.cat([x, msg], -1)))
        return x + msg


class MultiViewTransformer(nn.Module):
    """m(.): features of V views ``[B, V, C, h, w]`` -> cross-view features, same shape."""

    def __init__(self, dim: int, layers: int, heads: int, splits: int, ffn_expansion: int):
        super().__init__()
        self.splits = splits
        self.self_attn = nn.ModuleList(_AttentionLayer(dim, heads, ffn_expansion, ffn=False) for _ in range(layers))
        self.cross_attn = nn.ModuleList(_AttentionLayer(dim, heads, ffn_expansion, ffn=True) for _ in range(layers))

    def forward(self, x: torch.Tensor, neighbours: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` [B, V, C, h, w]; ``neighbours`` [B, V, k] long: the views each view cross-attends to
        (default: all the others; a single view attends to itself)."""
        B, V, C, h, w = x.shape
        s = self.splits
        hp, wp = -(-h // s) * s, -(-w // s) * s
        if (hp, wp) != (h, w):
            x = F.pad(x, [0, wp - w, 0, hp - h])
        pe, *masks = _constants(hp, wp, C, s, h, w)
        t = (x + pe.to(x.device, x.dtype)).permute(0, 1, 3, 4, 2).reshape(B * V, hp, wp, C)
        masks = [None if m is None else m.to(x.device) for m in masks]
        if neighbours is None:
            neighbours = all_others(B, V, x.device)
        batch = torch.arange(B, device=x.device)[:, None, None]
        for i, (self_layer, cross_layer) in enumerate(zip(self.self_attn, self.cross_attn)):
            shift = i % 2 == 1
            if shift:
                t = torch.roll(t, (-(hp // s // 2), -(wp // s // 2)), (1, 2))
            mask = masks[int(shift)]
            win = _window_partition(t, s)  # [B*V, nW, n, C]
            win = self_layer(win, win, mask)
            win_v = win.view(B, V, *win.shape[1:])  # [B, V, nW, n, C]
            kv = win_v[batch, neighbours]  # [B, V, k, nW, n, C]
            kv = kv.permute(0, 1, 3, 2, 4, 5).reshape(B * V, win.shape[1], -1, C)  # [B*V, nW, k*n, C]
            cmask = None if mask is None else mask.repeat(1, 1, neighbours.shape[-1])
            win = cross_layer(win, kv, cmask)
            t = _window_merge(win, s, hp, wp)
            if shift:
                t = torch.roll(t, (hp // s // 2, wp // s // 2), (1, 2))
        t = t.view(B, V, hp, wp, C).permute(0, 1, 4, 2, 3)
        return t[..., :h, :w].contiguous()


def all_others(B: int, V: int, device: torch.device) -> torch.Tensor:
    """``[B, V, max(V-1, 1)]`` indices of every other view (a single view's only neighbour is itself)."""
    if V == 1:
        return torch.zeros(B, 1, 1, dtype=torch.long, device=device)
    idx = [[j for j in range(V) if j != i] for i in range(V)]
    return torch.tensor(idx, device=device).expand(B, V, V - 1)


def nearest_views(T_i_j: torch.Tensor, k: int) -> torch.Tensor:
    """For each view, the ``k`` other views whose cameras are nearest (the paper's top-k neighbours).

    ``T_i_j`` [B, V, V, 4, 4] maps view j into view i, so ``|t|`` is the distance between camera centres.
    Returns [B, V, min(k, V-1)] view indices, nearest first; ``k == 0`` keeps every other view.
    """
    B, V = T_i_j.shape[:2]
    if k == 0 or k >= V - 1:
        return all_others(B, V, T_i_j.device)
    dist = T_i_j[..., :3, 3].norm(dim=-1)  # [B, V, V]
    dist = dist + torch.diag(torch.full((V,), float("inf"), device=dist.device, dtype=dist.dtype))
    return dist.topk(k, dim=-1, largest=False).indices


# --------------------------------------------------------------------------------------------------
# Cost volume
# --------------------------------------------------------------------------------------------------


def plane_sweep(
    ref: torch.Tensor,
    src: torch.Tensor,
    K: torch.Tensor,
    T_src_ref: torch.Tensor,
    image_wh: tuple[int, int],
    depth_range: tuple[float, float],
    num_depth: int,
    backend: str = "auto",
) -> torch.Tensor:
    """e(.): correlation volume ``[B, D, h, w]`` of ``ref`` [B,C,h,w] against ``src`` [B,S,C,h,w].

    ``K`` [B,3,3] is at input resolution ``image_wh`` = (W, H) and is resized to the feature grid here;
    ``T_src_ref`` is [B,S,4,4]. Candidates are uniform in inverse depth over ``depth_range``.
    """
    h, w = ref.shape[-2:]
    K_feat = geometry.resize_intrinsics(K.float(), image_wh, (w, h))
    depths = geometry.depth_candidates(depth_range[0], depth_range[1], num_depth, like=K_feat)
    depths = depths[None].expand(ref.shape[0], num_depth).contiguous()
    return cost_volume(ref, src, K_feat, T_src_ref.float(), depths, backend=backend)


class CrossViewModule(nn.Module):
    """g = e . m . s. ``spatial`` runs per frame (cacheable); ``match`` runs on a set of views."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.spatial = SpatialEncoder(config.cvm_stages, config.cvm_channels)
        self.transformer = MultiViewTransformer(
            config.cvm_channels, config.cvm_layers, config.cvm_heads, config.cvm_window_splits, config.cvm_ffn_expansion
        )

    @property
    def out_channels(self) -> int:
        """Channels of the cost volume plus cross-view features, as concatenated for fusion."""
        return self.config.num_depth + self.config.cvm_channels

    def match(
        self,
        spatial: torch.Tensor,
        K: torch.Tensor,
        T_src_ref: torch.Tensor,
        image_wh: tuple[int, int],
        all_views: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-view features and cost volume.

        Args:
            spatial: [B, V, C, h, w] s(.) features; view 0 is the reference, views 1.. its sources
                (V >= 2; single-view mode passes the reference twice).
            K: [B, 3, 3] (shared) or [B, V, 3, 3] intrinsics at input resolution ``image_wh``.
            T_src_ref: [B, V, V, 4, 4] with ``T[b, i, j] = T_view_i<-view_j`` when ``all_views``,
                else [B, V-1, 4, 4] (view j+1 <- view 0).
            all_views: compute the cost volume of every view against the others.

        Each view is matched (cross attention and cost volume) with its ``cvm_max_sources`` nearest
        other views by camera distance, the paper's top-k neighbours; 0 keeps every view.

        Returns:
            (F [B, V', C, h, w], cost [B, V', D, h, w]) with V' = V if all_views else 1.
        """
        B, V = spatial.shape[:2]
        cfg = self.config
        if K.dim() == 3:
            K = K[:, None].expand(B, V, 3, 3)
        if not all_views:
            k = cfg.cvm_max_sources
            if k and V - 1 > k:  # the reference is matched with its k nearest sources only
                idx = T_src_ref[..., :3, 3].norm(dim=-1).topk(k, dim=1, largest=False).indices  # [B, k]
                batch = torch.arange(B, device=idx.device)[:, None]
                spatial = torch.cat([spatial[:, :1], spatial[:, 1:][batch, idx]], 1)
                T_src_ref = T_src_ref[batch, idx]
            feats = self.transformer(spatial)  # [B, 1+S, C, h, w]
            cost = plane_sweep(
                feats[:, 0], feats[:, 1:], K[:, 0], T_src_ref, image_wh, cfg.depth_range, cfg.num_depth,
                cfg.cost_volume_backend,
            )
            return feats[:, :1], cost[:, None]
        neighbours = nearest_views(T_src_ref, cfg.cvm_max_sources)  # [B, V, k]
        feats = self.transformer(spatial, neighbours)  # [B, V, C, h, w]
        batch = torch.arange(B, device=feats.device)[:, None, None]
        view = torch.arange(V, device=feats.device)[None, :, None]
        src = feats[batch, neighbours]  # [B, V, k, C, h, w]
        T = T_src_ref[batch, neighbours, view]  # [B, V, k, 4, 4]: neighbour <- view
        cost = plane_sweep(
            feats.flatten(0, 1), src.flatten(0, 1), K.flatten(0, 1), T.flatten(0, 1), image_wh, cfg.depth_range,
            cfg.num_depth, cfg.cost_volume_backend,
        )
        return feats, cost.view(B, V, *cost.shape[1:])
