"""Small spiking transformers of the five published families, written from their official code.

Each family keeps the official module structure, attribute names (so official state-dict keys
load), op order and neuron settings, with fewer channels, tokens and blocks:

=====================  ======================================================================
family                 official file (repository @ commit read, see docs/transformer-ir.md)
=====================  ======================================================================
spikformer_cifar       ZK-Zhou/spikformer cifar10/model.py: Linear + BN1d on tokens, q@k^T, @v
spikformer_imagenet    ZK-Zhou/spikformer imagenet/model.py: Conv1d k=1, k^T@v then q@(k^T v)
spikingformer          zhouchenlin2096/Spikingformer imagenet/model.py: pre-activation, membrane
                       shortcuts
sdt_v1                 BICLab/Spike-Driven-Transformer module/ms_conv.py, module/sps.py,
                       model/spikeformer.py: Hadamard masks k*v, token sum, q*kv
sdt_v2                 BICLab/Spike-Driven-Transformer-V2 classification/models.py: conv stages
                       (SepConv, depthwise), RepConv q/k/v, k^T@v then q@(k^T v)
qkformer               zhouchenlin2096/QKFormer cifar10/model.py: token Q-K attention (channel
                       sum, mask) and SSA in the last stage
spikingresformer       xyshi2000/SpikingResformer models/spikingresformer.py: DSSA, real x
                       spike matmuls with firing-rate scales, GWFFN
=====================  ======================================================================

The official files import the legacy ``spikingjelly.clock_driven`` API (gone since
SpikingJelly 0.0.0.0.14) and ``timm``. This file imports timm exactly as they do (tests install
the stand-ins of ``tests/stubs/timm_helpers.py`` first) and replaces the legacy neuron with
:func:`MultiStepLIFNode`, a SpikingJelly 2.0 ``neuron.LIFNode(step_mode='m')`` of the same
arithmetic; switching to the legacy import path is replacing that one function by the import.

``MODELS[name]`` is a :class:`ZooTransformer`: ``.build()`` (seeded, eval mode; BatchNorm running
statistics taken from the data and randomised, BN biases shifted so each neuron layer fires at
a target rate, 15 % unless the entry says otherwise, see :func:`calibrate`), ``.input_shape``, ``.timesteps``, ``.inputs(n, seed)`` (static
images, repeated over T by the model itself as in the official forward) and
``.torch_outputs(model, x)`` ((n, T, classes): the head output per step; the official forward
returns their mean over T, SpikingResformer's the steps themselves).
:func:`spikingformer_8_512` builds the full-size ImageNet Spikingformer (not run in tests).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import numpy as np
import torch
from torch import nn

from spikingjelly.activation_based import functional as sj_functional
from spikingjelly.activation_based import layer, neuron
from timm.models import create_model
from timm.models.layers import DropPath, to_2tuple, trunc_normal_
from timm.models.registry import register_model
from timm.models.vision_transformer import _cfg


def MultiStepLIFNode(tau: float = 2.0, v_threshold: float = 1.0, detach_reset: bool = True,
                     backend: str = "cupy") -> neuron.LIFNode:
    """Replaces legacy ``spikingjelly.clock_driven.neuron.MultiStepLIFNode`` (0.0.0.0.12).

    Same arithmetic (decay_input=True, v_reset=0: ``v += (x - v) / tau``, spike at
    ``v >= v_threshold``, hard reset to 0) as SpikingJelly 2.0 ``neuron.LIFNode`` in multi-step
    mode. ``backend='cupy'`` (every official call) needs a GPU; the torch backend computes the same.
    """
    del backend
    return neuron.LIFNode(tau=tau, decay_input=True, v_threshold=v_threshold, v_reset=0.0,
                          detach_reset=detach_reset, step_mode="m")


# ============================================================================================
# Spikformer, CIFAR variant (ZK-Zhou/spikformer cifar10/model.py): tokens (T, B, N, C),
# Linear + BatchNorm1d on the transposed tokens, attn = (q @ k^T) * 0.125, x = attn @ v.
# ============================================================================================
class SpikformerMLP(nn.Module):
    def __init__(self, in_features, hidden_features=None, out_features=None, drop=0.0):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1_linear = nn.Linear(in_features, hidden_features)
        self.fc1_bn = nn.BatchNorm1d(hidden_features)
        self.fc1_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.fc2_linear = nn.Linear(hidden_features, out_features)
        self.fc2_bn = nn.BatchNorm1d(out_features)
        self.fc2_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.c_hidden = hidden_features
        self.c_output = out_features

    def forward(self, x):
        T, B, N, C = x.shape
        x = self.fc1_linear(x.flatten(0, 1))
        x = self.fc1_bn(x.transpose(-1, -2)).transpose(-1, -2).reshape(T, B, N, self.c_hidden).contiguous()
        x = self.fc1_lif(x)
        x = self.fc2_linear(x.flatten(0, 1))
        x = self.fc2_bn(x.transpose(-1, -2)).transpose(-1, -2).reshape(T, B, N, C).contiguous()
        return self.fc2_lif(x)


class SpikformerSSA(nn.Module):
    def __init__(self, dim, num_heads=8, qkv_bias=False, qk_scale=None, attn_drop=0.0, proj_drop=0.0, sr_ratio=1):
        super().__init__()
        assert dim % num_heads == 0, f"dim {dim} should be divided by num_heads {num_heads}."
        self.dim = dim
        self.num_heads = num_heads
        self.scale = 0.125
        for name in ("q", "k", "v"):
            setattr(self, f"{name}_linear", nn.Linear(dim, dim))
            setattr(self, f"{name}_bn", nn.BatchNorm1d(dim))
            setattr(self, f"{name}_lif", MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy"))
        self.attn_lif = MultiStepLIFNode(tau=2.0, v_threshold=0.5, detach_reset=True, backend="cupy")
        self.proj_linear = nn.Linear(dim, dim)
        self.proj_bn = nn.BatchNorm1d(dim)
        self.proj_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")

    def _heads(self, x_for_qkv, name, T, B, N, C):
        """Linear -> BN1d on (TB, C, N) -> LIF, then split heads: (T, B, h, N, C/h)."""
        out = getattr(self, f"{name}_linear")(x_for_qkv)
        out = getattr(self, f"{name}_bn")(out.transpose(-1, -2)).transpose(-1, -2).reshape(T, B, N, C).contiguous()
        out = getattr(self, f"{name}_lif")(out)
        return out.reshape(T, B, N, self.num_heads, C // self.num_heads).permute(0, 1, 3, 2, 4).contiguous()

    def forward(self, x):
        T, B, N, C = x.shape
        x_for_qkv = x.flatten(0, 1)
        q = self._heads(x_for_qkv, "q", T, B, N, C)
        k = self._heads(x_for_qkv, "k", T, B, N, C)
        v = self._heads(x_for_qkv, "v", T, B, N, C)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        x = attn @ v
        x = x.transpose(2, 3).reshape(T, B, N, C).contiguous()
        x = self.attn_lif(x)
        x = x.flatten(0, 1)
        return self.proj_lif(self.proj_bn(self.proj_linear(x).transpose(-1, -2)).transpose(-1, -2).reshape(T, B, N, C))


class SpikformerBlock(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, qk_scale=None, drop=0.0, attn_drop=0.0,
                 drop_path=0.0, norm_layer=nn.LayerNorm, sr_ratio=1):
        super().__init__()
        self.norm1 = norm_layer(dim)  # built but never called in the official code (its parameters count)
        self.attn = SpikformerSSA(dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale,
                                  attn_drop=attn_drop, proj_drop=drop, sr_ratio=sr_ratio)
        self.norm2 = norm_layer(dim)
        self.mlp = SpikformerMLP(in_features=dim, hidden_features=int(dim * mlp_ratio), drop=drop)

    def forward(self, x):
        x = x + self.attn(x)  # spike add: the stream holds integers 0..2
        x = x + self.mlp(x)
        return x


class SpikformerSPS(nn.Module):
    """CIFAR tokenizer: four conv-BN-LIF stages, MaxPool on spikes after the last two, rpe + x_feat."""

    def __init__(self, img_size_h=128, img_size_w=128, patch_size=4, in_channels=2, embed_dims=256):
        super().__init__()
        self.image_size = [img_size_h, img_size_w]
        patch_size = to_2tuple(patch_size)
        self.patch_size = patch_size
        self.C = in_channels
        self.H, self.W = self.image_size[0] // patch_size[0], self.image_size[1] // patch_size[1]
        self.num_patches = self.H * self.W
        chans = [in_channels, embed_dims // 8, embed_dims // 4, embed_dims // 2, embed_dims]
        for i, suffix in enumerate(["", "1", "2", "3"]):
            setattr(self, f"proj_conv{suffix}", nn.Conv2d(chans[i], chans[i + 1], 3, 1, 1, bias=False))
            setattr(self, f"proj_bn{suffix}", nn.BatchNorm2d(chans[i + 1]))
            setattr(self, f"proj_lif{suffix}", MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy"))
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=False)
        self.maxpool3 = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=False)
        self.rpe_conv = nn.Conv2d(embed_dims, embed_dims, kernel_size=3, stride=1, padding=1, bias=False)
        self.rpe_bn = nn.BatchNorm2d(embed_dims)
        self.rpe_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")

    def forward(self, x):
        T, B, C, H, W = x.shape
        x = self.proj_conv(x.flatten(0, 1))
        x = self.proj_bn(x).reshape(T, B, -1, H, W).contiguous()
        x = self.proj_lif(x).flatten(0, 1).contiguous()
        x = self.proj_conv1(x)
        x = self.proj_bn1(x).reshape(T, B, -1, H, W).contiguous()
        x = self.proj_lif1(x).flatten(0, 1).contiguous()
        x = self.proj_conv2(x)
        x = self.proj_bn2(x).reshape(T, B, -1, H, W).contiguous()
        x = self.proj_lif2(x).flatten(0, 1).contiguous()
        x = self.maxpool2(x)
        x = self.proj_conv3(x)
        x = self.proj_bn3(x).reshape(T, B, -1, H // 2, W // 2).contiguous()
        x = self.proj_lif3(x).flatten(0, 1).contiguous()
        x = self.maxpool3(x)
        x_feat = x.reshape(T, B, -1, H // 4, W // 4).contiguous()
        x = self.rpe_conv(x)
        x = self.rpe_bn(x).reshape(T, B, -1, H // 4, W // 4).contiguous()
        x = self.rpe_lif(x)
        x = x + x_feat
        return x.flatten(-2).transpose(-1, -2)  # (T, B, N, C)


class Spikformer(nn.Module):
    def __init__(self, img_size_h=128, img_size_w=128, patch_size=16, in_channels=2, num_classes=11,
                 embed_dims=256, num_heads=4, mlp_ratios=4, qkv_bias=False, qk_scale=None, drop_rate=0.0,
                 attn_drop_rate=0.0, drop_path_rate=0.0, norm_layer=nn.LayerNorm, depths=2, sr_ratios=1, T=4):
        super().__init__()
        self.T = T
        self.num_classes = num_classes
        self.depths = depths
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depths)]
        self.patch_embed = SpikformerSPS(img_size_h, img_size_w, patch_size, in_channels, embed_dims)
        self.block = nn.ModuleList([SpikformerBlock(
            dim=embed_dims, num_heads=num_heads, mlp_ratio=mlp_ratios, qkv_bias=qkv_bias, qk_scale=qk_scale,
            drop=drop_rate, attn_drop=attn_drop_rate, drop_path=dpr[j], norm_layer=norm_layer,
            sr_ratio=sr_ratios) for j in range(depths)])
        self.head = nn.Linear(embed_dims, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(_init_linear_layernorm)

    def forward_features(self, x):
        x = self.patch_embed(x)
        for blk in self.block:
            x = blk(x)
        return x.mean(2)  # mean over the N tokens: (T, B, C)

    def forward(self, x):
        x = (x.unsqueeze(0)).repeat(self.T, 1, 1, 1, 1)
        x = self.forward_features(x)
        return self.head(x.mean(0))

    def forward_steps(self, x):
        """(T, B, classes): the head per step; ``forward`` is their mean (the head is linear)."""
        return self.head(self.forward_features((x.unsqueeze(0)).repeat(self.T, 1, 1, 1, 1)))


def _init_linear_layernorm(m):
    """Official ``_init_weights`` of Spikformer, Spikingformer and QKFormer."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0)
    elif isinstance(m, nn.LayerNorm):
        nn.init.constant_(m.bias, 0)
        nn.init.constant_(m.weight, 1.0)


@register_model
def spikformer(pretrained=False, **kwargs):
    model = Spikformer(**kwargs)
    model.default_cfg = _cfg()
    return model


# ============================================================================================
# Spikformer, ImageNet variant (ZK-Zhou/spikformer imagenet/model.py): (T, B, C, H, W) stream,
# Conv1d k=1 (no bias) + BN1d on (TB, C, N), x = k^T @ v (d x d) then (q @ x) * 0.125.
# ============================================================================================
class SpikformerConvMLP(nn.Module):
    def __init__(self, in_features, hidden_features=None, out_features=None, drop=0.0):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1_conv = nn.Conv2d(in_features, hidden_features, kernel_size=1, stride=1)
        self.fc1_bn = nn.BatchNorm2d(hidden_features)
        self.fc1_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.fc2_conv = nn.Conv2d(hidden_features, out_features, kernel_size=1, stride=1)
        self.fc2_bn = nn.BatchNorm2d(out_features)
        self.fc2_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.c_hidden = hidden_features
        self.c_output = out_features

    def forward(self, x):
        T, B, C, H, W = x.shape
        x = self.fc1_conv(x.flatten(0, 1))
        x = self.fc1_bn(x).reshape(T, B, self.c_hidden, H, W).contiguous()
        x = self.fc1_lif(x)
        x = self.fc2_conv(x.flatten(0, 1))
        x = self.fc2_bn(x).reshape(T, B, C, H, W).contiguous()
        return self.fc2_lif(x)


class ConvQKV(nn.Module):
    """q/k/v branches shared by the Conv1d-token attentions (Spikformer ImageNet, Spikingformer,
    QKFormer SSA): Conv1d k=1 (no bias) -> BN1d on (TB, C, N) -> LIF, heads (T, B, h, N, C/h)."""

    def _heads(self, x_for_qkv, name, T, B, C, N):
        out = getattr(self, f"{name}_conv")(x_for_qkv)
        out = getattr(self, f"{name}_bn")(out).reshape(T, B, C, N).contiguous()
        out = getattr(self, f"{name}_lif")(out)
        return out.transpose(-1, -2).reshape(T, B, N, self.num_heads, C // self.num_heads) \
            .permute(0, 1, 3, 2, 4).contiguous()

    def _add_qkv(self, dim):
        for name in ("q", "k", "v"):
            setattr(self, f"{name}_conv", nn.Conv1d(dim, dim, kernel_size=1, stride=1, bias=False))
            setattr(self, f"{name}_bn", nn.BatchNorm1d(dim))
            setattr(self, f"{name}_lif", MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy"))

    def _attend(self, x, T, B, C, N):
        """k^T @ v (d x d, counts of coincidences), then (q @ that) * 0.125, back to (T, B, C, N)."""
        x_for_qkv = x.flatten(0, 1)
        q = self._heads(x_for_qkv, "q", T, B, C, N)
        k = self._heads(x_for_qkv, "k", T, B, C, N)
        v = self._heads(x_for_qkv, "v", T, B, C, N)
        x = k.transpose(-2, -1) @ v
        x = (q @ x) * self.scale
        return x.transpose(3, 4).reshape(T, B, C, N).contiguous(), v


class SpikformerConvSSA(ConvQKV):
    def __init__(self, dim, num_heads=8, qkv_bias=False, qk_scale=None, attn_drop=0.0, proj_drop=0.0, sr_ratio=1):
        super().__init__()
        assert dim % num_heads == 0, f"dim {dim} should be divided by num_heads {num_heads}."
        self.dim = dim
        self.num_heads = num_heads
        self.scale = 0.125
        self._add_qkv(dim)
        self.attn_lif = MultiStepLIFNode(tau=2.0, v_threshold=0.5, detach_reset=True, backend="cupy")
        self.proj_conv = nn.Conv1d(dim, dim, kernel_size=1, stride=1)
        self.proj_bn = nn.BatchNorm1d(dim)
        self.proj_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")

    def forward(self, x, res_attn):
        T, B, C, H, W = x.shape
        x = x.flatten(3)
        T, B, C, N = x.shape
        x, v = self._attend(x, T, B, C, N)
        x = self.attn_lif(x)
        x = x.flatten(0, 1)
        x = self.proj_lif(self.proj_bn(self.proj_conv(x)).reshape(T, B, C, H, W))
        return x, v


class SpikformerConvBlock(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, qk_scale=None, drop=0.0, attn_drop=0.0,
                 drop_path=0.0, norm_layer=nn.LayerNorm, sr_ratio=1):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = SpikformerConvSSA(dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale,
                                      attn_drop=attn_drop, proj_drop=drop, sr_ratio=sr_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = SpikformerConvMLP(in_features=dim, hidden_features=int(dim * mlp_ratio), drop=drop)

    def forward(self, x, res_attn):
        x_attn, attn = self.attn(x, res_attn)
        x = x + x_attn
        x = x + self.mlp(x)
        return x, attn


class StagedTokenizer(nn.Module):
    """The SPS layout of Spikformer ImageNet and Spikingformer: four conv-BN stages, MaxPool
    (kernel 3, stride 2, padding 1) after each, channels C/8, C/4, C/2, C, C."""

    def _init_geometry(self, img_size_h, img_size_w, patch_size, in_channels):
        self.image_size = [img_size_h, img_size_w]
        patch_size = to_2tuple(patch_size)
        self.patch_size = patch_size
        self.C = in_channels
        self.H, self.W = self.image_size[0] // patch_size[0], self.image_size[1] // patch_size[1]
        self.num_patches = self.H * self.W


def _maxpool():
    return nn.MaxPool2d(kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=False)


def _conv3x3(c_in, c_out):
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=1, padding=1, bias=False)


class SpikformerConvSPS(StagedTokenizer):
    def __init__(self, img_size_h=128, img_size_w=128, patch_size=4, in_channels=2, embed_dims=256):
        super().__init__()
        self._init_geometry(img_size_h, img_size_w, patch_size, in_channels)
        chans = [in_channels, embed_dims // 8, embed_dims // 4, embed_dims // 2, embed_dims]
        for i, suffix in enumerate(["", "1", "2", "3"]):
            setattr(self, f"proj_conv{suffix}", _conv3x3(chans[i], chans[i + 1]))
            setattr(self, f"proj_bn{suffix}", nn.BatchNorm2d(chans[i + 1]))
            setattr(self, f"proj_lif{suffix}", MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy"))
            setattr(self, f"maxpool{suffix}", _maxpool())
        self.rpe_conv = _conv3x3(embed_dims, embed_dims)
        self.rpe_bn = nn.BatchNorm2d(embed_dims)
        self.rpe_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")

    def forward(self, x):
        T, B, C, H, W = x.shape
        for i, suffix in enumerate(["", "1", "2", "3"]):
            x = getattr(self, f"proj_conv{suffix}")(x if i else x.flatten(0, 1))
            x = getattr(self, f"proj_bn{suffix}")(x).reshape(T, B, -1, H >> i, W >> i).contiguous()
            x = getattr(self, f"proj_lif{suffix}")(x).flatten(0, 1).contiguous()
            x = getattr(self, f"maxpool{suffix}")(x)  # MaxPool on spikes
        x_feat = x.reshape(T, B, -1, H // 16, W // 16).contiguous()
        x = self.rpe_conv(x)
        x = self.rpe_bn(x).reshape(T, B, -1, H // 16, W // 16).contiguous()
        x = self.rpe_lif(x)
        x = x + x_feat
        H, W = H // self.patch_size[0], W // self.patch_size[1]
        return x, (H, W)


class SpikformerImageNet(nn.Module):
    def __init__(self, img_size_h=128, img_size_w=128, patch_size=16, in_channels=2, num_classes=11,
                 embed_dims=256, num_heads=4, mlp_ratios=4, qkv_bias=False, qk_scale=None, drop_rate=0.0,
                 attn_drop_rate=0.0, drop_path_rate=0.0, norm_layer=nn.LayerNorm, depths=2, sr_ratios=1):
        super().__init__()
        self.num_classes = num_classes
        self.depths = depths
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depths)]
        self.patch_embed = SpikformerConvSPS(img_size_h, img_size_w, patch_size, in_channels, embed_dims)
        self.block = nn.ModuleList([SpikformerConvBlock(
            dim=embed_dims, num_heads=num_heads, mlp_ratio=mlp_ratios, qkv_bias=qkv_bias, qk_scale=qk_scale,
            drop=drop_rate, attn_drop=attn_drop_rate, drop_path=dpr[j], norm_layer=norm_layer,
            sr_ratio=sr_ratios) for j in range(depths)])
        self.head = nn.Linear(embed_dims, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(_init_linear_layernorm)

    def forward_features(self, x):
        x, (H, W) = self.patch_embed(x)
        attn = None
        for blk in self.block:
            x, attn = blk(x, attn)
        return x.flatten(3).mean(3)

    def forward(self, x):
        T = 4  # hard-coded in the official forward
        x = (x.unsqueeze(0)).repeat(T, 1, 1, 1, 1)
        x = self.forward_features(x)
        return self.head(x.mean(0))

    def forward_steps(self, x):
        return self.head(self.forward_features((x.unsqueeze(0)).repeat(4, 1, 1, 1, 1)))


@register_model
def spikformer_imagenet(pretrained=False, **kwargs):
    model = SpikformerImageNet(**kwargs)
    model.default_cfg = _cfg()
    return model


# ============================================================================================
# Spikingformer (zhouchenlin2096/Spikingformer imagenet/model.py): LIF before every conv
# (pre-activation), so blocks add BN outputs: a real membrane-shortcut stream.
# ============================================================================================
class SpikingformerMLP(nn.Module):
    def __init__(self, in_features, hidden_features=None, out_features=None, drop=0.0):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.mlp1_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.mlp1_conv = nn.Conv2d(in_features, hidden_features, kernel_size=1, stride=1)
        self.mlp1_bn = nn.BatchNorm2d(hidden_features)
        self.mlp2_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.mlp2_conv = nn.Conv2d(hidden_features, out_features, kernel_size=1, stride=1)
        self.mlp2_bn = nn.BatchNorm2d(out_features)
        self.c_hidden = hidden_features
        self.c_output = out_features

    def forward(self, x):
        T, B, C, H, W = x.shape
        x = self.mlp1_lif(x)
        x = self.mlp1_conv(x.flatten(0, 1))
        x = self.mlp1_bn(x).reshape(T, B, self.c_hidden, H, W).contiguous()
        x = self.mlp2_lif(x)
        x = self.mlp2_conv(x.flatten(0, 1))
        return self.mlp2_bn(x).reshape(T, B, C, H, W).contiguous()


class SpikingSelfAttention(ConvQKV):
    def __init__(self, dim, num_heads=8, qkv_bias=False, qk_scale=None, attn_drop=0.0, proj_drop=0.0, sr_ratio=1):
        super().__init__()
        assert dim % num_heads == 0, f"dim {dim} should be divided by num_heads {num_heads}."
        self.dim = dim
        self.num_heads = num_heads
        self.scale = 0.125
        self.proj_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self._add_qkv(dim)
        self.attn_lif = MultiStepLIFNode(tau=2.0, v_threshold=0.5, detach_reset=True, backend="cupy")
        self.proj_conv = nn.Conv1d(dim, dim, kernel_size=1, stride=1)
        self.proj_bn = nn.BatchNorm1d(dim)

    def forward(self, x):
        T, B, C, H, W = x.shape
        x = self.proj_lif(x)
        x = x.flatten(3)
        T, B, C, N = x.shape
        x, _ = self._attend(x, T, B, C, N)
        x = self.attn_lif(x)
        x = x.flatten(0, 1)
        return self.proj_bn(self.proj_conv(x)).reshape(T, B, C, H, W)


class SpikingTransformer(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, qk_scale=None, drop=0.0, attn_drop=0.0,
                 drop_path=0.0, norm_layer=nn.LayerNorm, sr_ratio=1):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = SpikingSelfAttention(dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale,
                                         attn_drop=attn_drop, proj_drop=drop, sr_ratio=sr_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = SpikingformerMLP(in_features=dim, hidden_features=int(dim * mlp_ratio), drop=drop)

    def forward(self, x):
        x = x + self.attn(x)  # membrane shortcut: real BN outputs add up
        x = x + self.mlp(x)
        return x


class SpikingTokenizer(StagedTokenizer):
    def __init__(self, img_size_h=128, img_size_w=128, patch_size=4, in_channels=2, embed_dims=256):
        super().__init__()
        self._init_geometry(img_size_h, img_size_w, patch_size, in_channels)
        self.proj_conv = _conv3x3(in_channels, embed_dims // 8)
        self.proj_bn = nn.BatchNorm2d(embed_dims // 8)
        chans = [embed_dims // 8, embed_dims // 4, embed_dims // 2, embed_dims, embed_dims]
        for i in range(1, 5):
            setattr(self, f"proj{i}_lif", MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy"))
            setattr(self, f"maxpool{i}", _maxpool())
            setattr(self, f"proj{i}_conv", _conv3x3(chans[i - 1], chans[i]))
            setattr(self, f"proj{i}_bn", nn.BatchNorm2d(chans[i]))

    def forward(self, x):
        T, B, C, H, W = x.shape
        x = self.proj_conv(x.flatten(0, 1))
        x = self.proj_bn(x).reshape(T, B, -1, H, W).contiguous()
        for i in range(1, 5):
            x = getattr(self, f"proj{i}_lif")(x).flatten(0, 1).contiguous()
            x = getattr(self, f"maxpool{i}")(x)  # MaxPool on spikes
            x = getattr(self, f"proj{i}_conv")(x)
            x = getattr(self, f"proj{i}_bn")(x).reshape(T, B, -1, H >> i, W >> i).contiguous()
        H, W = H // self.patch_size[0], W // self.patch_size[1]
        return x, (H, W)


class vit_snn(nn.Module):  # noqa: N801 -- the official class name (checkpoints are saved from it)
    def __init__(self, img_size_h=128, img_size_w=128, patch_size=16, in_channels=2, num_classes=11,
                 embed_dims=256, num_heads=4, mlp_ratios=4, qkv_bias=False, qk_scale=None, drop_rate=0.0,
                 attn_drop_rate=0.0, drop_path_rate=0.0, norm_layer=nn.LayerNorm, depths=2, sr_ratios=1, T=4,
                 pretrained_cfg=None):
        super().__init__()
        self.num_classes = num_classes
        self.depths = depths
        self.T = T
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depths)]
        self.patch_embed = SpikingTokenizer(img_size_h, img_size_w, patch_size, in_channels, embed_dims)
        self.block = nn.ModuleList([SpikingTransformer(
            dim=embed_dims, num_heads=num_heads, mlp_ratio=mlp_ratios, qkv_bias=qkv_bias, qk_scale=qk_scale,
            drop=drop_rate, attn_drop=attn_drop_rate, drop_path=dpr[j], norm_layer=norm_layer,
            sr_ratio=sr_ratios) for j in range(depths)])
        self.head = nn.Linear(embed_dims, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(_init_linear_layernorm)

    def forward_features(self, x):
        x, (H, W) = self.patch_embed(x)
        for blk in self.block:
            x = blk(x)
        return x.flatten(3).mean(3)  # token mean of the real stream

    def forward(self, x):
        x = (x.unsqueeze(0)).repeat(self.T, 1, 1, 1, 1)
        x = self.forward_features(x)
        return self.head(x.mean(0))

    def forward_steps(self, x):
        return self.head(self.forward_features((x.unsqueeze(0)).repeat(self.T, 1, 1, 1, 1)))


@register_model
def Spikingformer(pretrained=False, **kwargs):  # noqa: N802 -- the official registered name
    model = vit_snn(**kwargs)
    model.default_cfg = _cfg()
    return model


def spikingformer_8_512() -> nn.Module:
    """Spikingformer-8-512 at 3x224x224 with the official arguments (imagenet/model.py __main__):
    29,705,768 parameters, the count in imagenet/energy_consumption_logs/...-8-512_log.txt."""
    return create_model("Spikingformer", img_size_h=224, img_size_w=224, patch_size=16, embed_dims=512,
                        num_heads=8, mlp_ratios=4, in_channels=3, num_classes=1000, qkv_bias=False,
                        norm_layer=partial(nn.LayerNorm, eps=1e-6), depths=8, sr_ratios=1, T=4)


# ============================================================================================
# Spike-Driven Transformer v1 (BICLab/Spike-Driven-Transformer module/ms_conv.py, sps.py,
# model/spikeformer.py): SDSA with Hadamard masks, membrane shortcuts, MaxPool on real values.
# ============================================================================================
class MS_MLP_Conv(nn.Module):  # noqa: N801 -- official class names
    def __init__(self, in_features, hidden_features=None, out_features=None, drop=0.0, spike_mode="lif", layer=0):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.res = in_features == hidden_features
        self.fc1_conv = nn.Conv2d(in_features, hidden_features, kernel_size=1, stride=1)
        self.fc1_bn = nn.BatchNorm2d(hidden_features)
        self.fc1_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.fc2_conv = nn.Conv2d(hidden_features, out_features, kernel_size=1, stride=1)
        self.fc2_bn = nn.BatchNorm2d(out_features)
        self.fc2_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.c_hidden = hidden_features
        self.c_output = out_features
        self.layer = layer

    def forward(self, x):
        T, B, C, H, W = x.shape
        identity = x
        x = self.fc1_lif(x)
        x = self.fc1_conv(x.flatten(0, 1))
        x = self.fc1_bn(x).reshape(T, B, self.c_hidden, H, W).contiguous()
        if self.res:
            x = identity + x
            identity = x
        x = self.fc2_lif(x)
        x = self.fc2_conv(x.flatten(0, 1))
        x = self.fc2_bn(x).reshape(T, B, C, H, W).contiguous()
        return x + identity


class MS_SSA_Conv(nn.Module):  # noqa: N801
    def __init__(self, dim, num_heads=8, qkv_bias=False, qk_scale=None, attn_drop=0.0, proj_drop=0.0, sr_ratio=1,
                 mode="direct_xor", spike_mode="lif", dvs=False, layer=0):
        super().__init__()
        assert dim % num_heads == 0, f"dim {dim} should be divided by num_heads {num_heads}."
        assert not dvs, "the zoo builds the static-image variant (dvs=False: no Erode pooling)"
        self.dim = dim
        self.dvs = dvs
        self.num_heads = num_heads
        self.scale = 0.125
        for name in ("q", "k", "v"):
            setattr(self, f"{name}_conv", nn.Conv2d(dim, dim, kernel_size=1, stride=1, bias=False))
            setattr(self, f"{name}_bn", nn.BatchNorm2d(dim))
            setattr(self, f"{name}_lif", MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy"))
        self.attn_lif = MultiStepLIFNode(tau=2.0, v_threshold=0.5, detach_reset=True, backend="cupy")  # unused
        self.talking_heads = nn.Conv1d(num_heads, num_heads, kernel_size=1, stride=1, bias=False)  # unused
        self.talking_heads_lif = MultiStepLIFNode(tau=2.0, v_threshold=0.5, detach_reset=True, backend="cupy")
        self.proj_conv = nn.Conv2d(dim, dim, kernel_size=1, stride=1)
        self.proj_bn = nn.BatchNorm2d(dim)
        self.shortcut_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.mode = mode
        self.layer = layer

    def _heads(self, x_for_qkv, name, T, B, C, H, W):
        out = getattr(self, f"{name}_conv")(x_for_qkv)
        out = getattr(self, f"{name}_bn")(out).reshape(T, B, C, H, W).contiguous()
        out = getattr(self, f"{name}_lif")(out)
        return out.flatten(3).transpose(-1, -2).reshape(T, B, H * W, self.num_heads, C // self.num_heads) \
            .permute(0, 1, 3, 2, 4).contiguous()

    def forward(self, x):
        T, B, C, H, W = x.shape
        identity = x
        x = self.shortcut_lif(x)
        x_for_qkv = x.flatten(0, 1)
        q = self._heads(x_for_qkv, "q", T, B, C, H, W)
        k = self._heads(x_for_qkv, "k", T, B, C, H, W)
        v = self._heads(x_for_qkv, "v", T, B, C, H, W)  # (T, B, h, N, C/h)
        kv = k.mul(v)  # Hadamard mask (spike AND)
        kv = kv.sum(dim=-2, keepdim=True)  # sum over the N tokens: integers 0..N
        kv = self.talking_heads_lif(kv)
        x = q.mul(kv)  # mask q by the per-channel spikes of kv
        x = x.transpose(3, 4).reshape(T, B, C, H, W).contiguous()
        x = self.proj_bn(self.proj_conv(x.flatten(0, 1))).reshape(T, B, C, H, W).contiguous()
        x = x + identity
        return x, v


class MS_Block_Conv(nn.Module):  # noqa: N801
    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, qk_scale=None, drop=0.0, attn_drop=0.0,
                 drop_path=0.0, norm_layer=nn.LayerNorm, sr_ratio=1, attn_mode="direct_xor", spike_mode="lif",
                 dvs=False, layer=0):
        super().__init__()
        self.attn = MS_SSA_Conv(dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop,
                                proj_drop=drop, sr_ratio=sr_ratio, mode=attn_mode, spike_mode=spike_mode, dvs=dvs,
                                layer=layer)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.mlp = MS_MLP_Conv(in_features=dim, hidden_features=int(dim * mlp_ratio), drop=drop,
                               spike_mode=spike_mode, layer=layer)

    def forward(self, x):
        x_attn, attn = self.attn(x)
        x = self.mlp(x_attn)
        return x, attn


class MS_SPS(nn.Module):  # noqa: N801
    def __init__(self, img_size_h=128, img_size_w=128, patch_size=4, in_channels=2, embed_dims=256,
                 pooling_stat="1111", spike_mode="lif"):
        super().__init__()
        self.image_size = [img_size_h, img_size_w]
        patch_size = to_2tuple(patch_size)
        self.patch_size = patch_size
        self.pooling_stat = pooling_stat
        self.C = in_channels
        self.H, self.W = self.image_size[0] // patch_size[0], self.image_size[1] // patch_size[1]
        self.num_patches = self.H * self.W
        chans = [in_channels, embed_dims // 8, embed_dims // 4, embed_dims // 2, embed_dims]
        for i, suffix in enumerate(["", "1", "2", "3"]):
            setattr(self, f"proj_conv{suffix}", _conv3x3(chans[i], chans[i + 1]))
            setattr(self, f"proj_bn{suffix}", nn.BatchNorm2d(chans[i + 1]))
            setattr(self, f"proj_lif{suffix}", MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy"))
            setattr(self, f"maxpool{suffix}", _maxpool())
        self.rpe_conv = _conv3x3(embed_dims, embed_dims)
        self.rpe_bn = nn.BatchNorm2d(embed_dims)
        self.rpe_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")  # unused

    def forward(self, x):
        T, B, _, H, W = x.shape
        ratio = 1
        x = x.flatten(0, 1)
        for i, suffix in enumerate(["", "1", "2"]):
            x = getattr(self, f"proj_conv{suffix}")(x)
            x = getattr(self, f"proj_bn{suffix}")(x).reshape(T, B, -1, H // ratio, W // ratio).contiguous()
            x = getattr(self, f"proj_lif{suffix}")(x)
            x = x.flatten(0, 1).contiguous()
            if self.pooling_stat[i] == "1":
                x = getattr(self, f"maxpool{suffix}")(x)  # MaxPool on spikes
                ratio *= 2
        x = self.proj_conv3(x)
        x = self.proj_bn3(x)
        if self.pooling_stat[3] == "1":
            x = self.maxpool3(x)  # MaxPool on real values (BN output)
            ratio *= 2
        x_feat = x
        x = self.proj_lif3(x.reshape(T, B, -1, H // ratio, W // ratio).contiguous())
        x = x.flatten(0, 1).contiguous()
        x = self.rpe_conv(x)
        x = self.rpe_bn(x)
        x = (x + x_feat).reshape(T, B, -1, H // ratio, W // ratio).contiguous()  # membrane shortcut
        H, W = H // self.patch_size[0], W // self.patch_size[1]
        return x, (H, W)


class SpikeDrivenTransformer(nn.Module):
    def __init__(self, img_size_h=128, img_size_w=128, patch_size=16, in_channels=2, num_classes=11, embed_dims=512,
                 num_heads=8, mlp_ratios=4, qkv_bias=False, qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0,
                 drop_path_rate=0.0, norm_layer=nn.LayerNorm, depths=2, sr_ratios=1, T=4, pooling_stat="1111",
                 attn_mode="direct_xor", spike_mode="lif", TET=False):
        super().__init__()
        self.num_classes = num_classes
        self.depths = depths
        self.T = T
        self.TET = TET
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depths)]
        self.patch_embed = MS_SPS(img_size_h, img_size_w, patch_size, in_channels, embed_dims, pooling_stat,
                                  spike_mode)
        self.block = nn.ModuleList([MS_Block_Conv(
            dim=embed_dims, num_heads=num_heads, mlp_ratio=mlp_ratios, qkv_bias=qkv_bias, qk_scale=qk_scale,
            drop=drop_rate, attn_drop=attn_drop_rate, drop_path=dpr[j], norm_layer=norm_layer,
            sr_ratio=sr_ratios, attn_mode=attn_mode, spike_mode=spike_mode, layer=j) for j in range(depths)])
        self.head_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.head = nn.Linear(embed_dims, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    def _init_weights(self, m):
        if isinstance(m, nn.Conv2d):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def forward_features(self, x):
        x, _ = self.patch_embed(x)
        for blk in self.block:
            x, _ = blk(x)
        return x.flatten(3).mean(3)

    def forward_steps(self, x):
        """(T, B, classes): token mean -> head LIF -> Linear per step (the TET output)."""
        x = (x.unsqueeze(0)).repeat(self.T, 1, 1, 1, 1) if len(x.shape) < 5 else x.transpose(0, 1).contiguous()
        return self.head(self.head_lif(self.forward_features(x)))

    def forward(self, x):
        x = self.forward_steps(x)
        return x if self.TET else x.mean(0)


@register_model
def sdt(**kwargs):
    model = SpikeDrivenTransformer(**kwargs)
    model.default_cfg = _cfg()
    return model


# ============================================================================================
# Spike-Driven Transformer v2 / Meta-SpikeFormer (BICLab/Spike-Driven-Transformer-V2
# classification/models.py): conv stages (SepConv + 3x3 convs), then spike x spike attention
# k^T @ v, q @ (k^T v) * 0.125 with RepConv projections; membrane shortcuts throughout.
# ============================================================================================
class BNAndPadLayer(nn.Module):
    """BatchNorm, then pad by ``pad_pixels`` with the value BN gives a zero input (RepConv)."""

    def __init__(self, pad_pixels, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, eps, momentum, affine, track_running_stats)
        self.pad_pixels = pad_pixels

    def forward(self, input):
        output = self.bn(input)
        if self.pad_pixels > 0:
            if self.bn.affine:
                pad_values = self.bn.bias.detach() - self.bn.running_mean * self.bn.weight.detach() / torch.sqrt(
                    self.bn.running_var + self.bn.eps)
            else:
                pad_values = -self.bn.running_mean / torch.sqrt(self.bn.running_var + self.bn.eps)
            output = nn.functional.pad(output, [self.pad_pixels] * 4)
            pad_values = pad_values.view(1, -1, 1, 1)
            p = self.pad_pixels
            output[:, :, 0:p, :] = pad_values
            output[:, :, -p:, :] = pad_values
            output[:, :, :, 0:p] = pad_values
            output[:, :, :, -p:] = pad_values
        return output


class RepConv(nn.Module):
    """conv 1x1 -> BN padded by 1 -> depthwise 3x3 (no padding) -> conv 1x1 -> BN."""

    def __init__(self, in_channel, out_channel, bias=False):
        super().__init__()
        conv1x1 = nn.Conv2d(in_channel, in_channel, 1, 1, 0, bias=False, groups=1)
        bn = BNAndPadLayer(pad_pixels=1, num_features=in_channel)
        conv3x3 = nn.Sequential(
            nn.Conv2d(in_channel, in_channel, 3, 1, 0, groups=in_channel, bias=False),
            nn.Conv2d(in_channel, out_channel, 1, 1, 0, groups=1, bias=False),
            nn.BatchNorm2d(out_channel))
        self.body = nn.Sequential(conv1x1, bn, conv3x3)

    def forward(self, x):
        return self.body(x)


class SepConv(nn.Module):
    """Inverted separable conv (MobileNetV2 style) with LIFs before the pointwise and depthwise convs."""

    def __init__(self, dim, expansion_ratio=2, act2_layer=nn.Identity, bias=False, kernel_size=7, padding=3):
        super().__init__()
        med_channels = int(expansion_ratio * dim)
        self.lif1 = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.pwconv1 = nn.Conv2d(dim, med_channels, kernel_size=1, stride=1, bias=bias)
        self.bn1 = nn.BatchNorm2d(med_channels)
        self.lif2 = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.dwconv = nn.Conv2d(med_channels, med_channels, kernel_size=kernel_size, padding=padding,
                                groups=med_channels, bias=bias)  # depthwise
        self.pwconv2 = nn.Conv2d(med_channels, dim, kernel_size=1, stride=1, bias=bias)
        self.bn2 = nn.BatchNorm2d(dim)

    def forward(self, x):
        T, B, C, H, W = x.shape
        x = self.lif1(x)
        x = self.bn1(self.pwconv1(x.flatten(0, 1))).reshape(T, B, -1, H, W)
        x = self.lif2(x)
        x = self.dwconv(x.flatten(0, 1))
        return self.bn2(self.pwconv2(x)).reshape(T, B, -1, H, W)


class MS_ConvBlock(nn.Module):  # noqa: N801
    def __init__(self, dim, mlp_ratio=4.0):
        super().__init__()
        self.Conv = SepConv(dim=dim)
        self.lif1 = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.conv1 = nn.Conv2d(dim, dim * mlp_ratio, kernel_size=3, padding=1, groups=1, bias=False)
        self.bn1 = nn.BatchNorm2d(dim * mlp_ratio)
        self.lif2 = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.conv2 = nn.Conv2d(dim * mlp_ratio, dim, kernel_size=3, padding=1, groups=1, bias=False)
        self.bn2 = nn.BatchNorm2d(dim)

    def forward(self, x):
        T, B, C, H, W = x.shape
        x = self.Conv(x) + x  # membrane shortcut
        x_feat = x
        x = self.bn1(self.conv1(self.lif1(x).flatten(0, 1))).reshape(T, B, 4 * C, H, W)  # 4: as official
        x = self.bn2(self.conv2(self.lif2(x).flatten(0, 1))).reshape(T, B, C, H, W)
        return x_feat + x


class MS_MLP(nn.Module):  # noqa: N801
    def __init__(self, in_features, hidden_features=None, out_features=None, drop=0.0, layer=0):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1_conv = nn.Conv1d(in_features, hidden_features, kernel_size=1, stride=1)
        self.fc1_bn = nn.BatchNorm1d(hidden_features)
        self.fc1_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.fc2_conv = nn.Conv1d(hidden_features, out_features, kernel_size=1, stride=1)
        self.fc2_bn = nn.BatchNorm1d(out_features)
        self.fc2_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.c_hidden = hidden_features
        self.c_output = out_features

    def forward(self, x):
        T, B, C, H, W = x.shape
        N = H * W
        x = x.flatten(3)
        x = self.fc1_lif(x)
        x = self.fc1_conv(x.flatten(0, 1))
        x = self.fc1_bn(x).reshape(T, B, self.c_hidden, N).contiguous()
        x = self.fc2_lif(x)
        x = self.fc2_conv(x.flatten(0, 1))
        return self.fc2_bn(x).reshape(T, B, C, H, W).contiguous()


class MS_Attention_RepConv_qkv_id(nn.Module):  # noqa: N801
    def __init__(self, dim, num_heads=8, qkv_bias=False, qk_scale=None, attn_drop=0.0, proj_drop=0.0, sr_ratio=1):
        super().__init__()
        assert dim % num_heads == 0, f"dim {dim} should be divided by num_heads {num_heads}."
        self.dim = dim
        self.num_heads = num_heads
        self.scale = 0.125
        self.head_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.q_conv = nn.Sequential(RepConv(dim, dim, bias=False), nn.BatchNorm2d(dim))
        self.k_conv = nn.Sequential(RepConv(dim, dim, bias=False), nn.BatchNorm2d(dim))
        self.v_conv = nn.Sequential(RepConv(dim, dim, bias=False), nn.BatchNorm2d(dim))
        self.q_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.k_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.v_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.attn_lif = MultiStepLIFNode(tau=2.0, v_threshold=0.5, detach_reset=True, backend="cupy")
        self.proj_conv = nn.Sequential(RepConv(dim, dim, bias=False), nn.BatchNorm2d(dim))

    def _heads(self, x, T, B, C, N):
        return x.flatten(3).transpose(-1, -2).reshape(T, B, N, self.num_heads, C // self.num_heads) \
            .permute(0, 1, 3, 2, 4).contiguous()

    def forward(self, x):
        T, B, C, H, W = x.shape
        N = H * W
        x = self.head_lif(x)
        q = self.q_conv(x.flatten(0, 1)).reshape(T, B, C, H, W)  # all three projections first,
        k = self.k_conv(x.flatten(0, 1)).reshape(T, B, C, H, W)  # then the three LIFs (official order)
        v = self.v_conv(x.flatten(0, 1)).reshape(T, B, C, H, W)
        q = self._heads(self.q_lif(q), T, B, C, N)
        k = self._heads(self.k_lif(k), T, B, C, N)
        v = self._heads(self.v_lif(v), T, B, C, N)
        x = k.transpose(-2, -1) @ v
        x = (q @ x) * self.scale
        x = x.transpose(3, 4).reshape(T, B, C, N).contiguous()
        x = self.attn_lif(x).reshape(T, B, C, H, W)
        x = x.reshape(T, B, C, H, W)
        x = x.flatten(0, 1)
        return self.proj_conv(x).reshape(T, B, C, H, W)


class MS_Block(nn.Module):  # noqa: N801
    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, qk_scale=None, drop=0.0, attn_drop=0.0,
                 drop_path=0.0, norm_layer=nn.LayerNorm, sr_ratio=1):
        super().__init__()
        self.attn = MS_Attention_RepConv_qkv_id(dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale,
                                                attn_drop=attn_drop, proj_drop=drop, sr_ratio=sr_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.mlp = MS_MLP(in_features=dim, hidden_features=int(dim * mlp_ratio), drop=drop)

    def forward(self, x):
        x = x + self.attn(x)  # membrane shortcuts
        x = x + self.mlp(x)
        return x


class MS_DownSampling(nn.Module):  # noqa: N801
    def __init__(self, in_channels=2, embed_dims=256, kernel_size=3, stride=2, padding=1, first_layer=True):
        super().__init__()
        self.encode_conv = nn.Conv2d(in_channels, embed_dims, kernel_size=kernel_size, stride=stride,
                                     padding=padding)
        self.encode_bn = nn.BatchNorm2d(embed_dims)
        if not first_layer:
            self.encode_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")

    def forward(self, x):
        T, B, _, _, _ = x.shape
        if hasattr(self, "encode_lif"):
            x = self.encode_lif(x)
        x = self.encode_conv(x.flatten(0, 1))
        _, _, H, W = x.shape
        return self.encode_bn(x).reshape(T, B, -1, H, W).contiguous()


class Spiking_vit_MetaFormer(nn.Module):  # noqa: N801
    """The official constructor hard-codes 6 + 2 attention blocks and ``self.T = 1``
    (``main_finetune.py`` sets ``model.T = args.time_steps``); here both are arguments."""

    def __init__(self, img_size_h=128, img_size_w=128, patch_size=16, in_channels=2, num_classes=11,
                 embed_dim=(64, 128, 256, 360), num_heads=8, mlp_ratios=4, qkv_bias=False, qk_scale=None,
                 drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0, norm_layer=nn.LayerNorm, depths=8,
                 sr_ratios=1, kd=False, blocks=(6, 2), T=1):
        super().__init__()
        self.num_classes = num_classes
        self.depths = depths
        self.T = T
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depths)]
        block = partial(MS_Block, num_heads=num_heads, mlp_ratio=mlp_ratios, qkv_bias=qkv_bias, qk_scale=qk_scale,
                        drop=drop_rate, attn_drop=attn_drop_rate, norm_layer=norm_layer, sr_ratio=sr_ratios)
        self.downsample1_1 = MS_DownSampling(in_channels, embed_dim[0] // 2, 7, 2, 3, first_layer=True)
        self.ConvBlock1_1 = nn.ModuleList([MS_ConvBlock(dim=embed_dim[0] // 2, mlp_ratio=mlp_ratios)])
        self.downsample1_2 = MS_DownSampling(embed_dim[0] // 2, embed_dim[0], 3, 2, 1, first_layer=False)
        self.ConvBlock1_2 = nn.ModuleList([MS_ConvBlock(dim=embed_dim[0], mlp_ratio=mlp_ratios)])
        self.downsample2 = MS_DownSampling(embed_dim[0], embed_dim[1], 3, 2, 1, first_layer=False)
        self.ConvBlock2_1 = nn.ModuleList([MS_ConvBlock(dim=embed_dim[1], mlp_ratio=mlp_ratios)])
        self.ConvBlock2_2 = nn.ModuleList([MS_ConvBlock(dim=embed_dim[1], mlp_ratio=mlp_ratios)])
        self.downsample3 = MS_DownSampling(embed_dim[1], embed_dim[2], 3, 2, 1, first_layer=False)
        self.block3 = nn.ModuleList([block(dim=embed_dim[2], drop_path=dpr[j]) for j in range(blocks[0])])
        self.downsample4 = MS_DownSampling(embed_dim[2], embed_dim[3], 3, 1, 1, first_layer=False)
        self.block4 = nn.ModuleList([block(dim=embed_dim[3], drop_path=dpr[j]) for j in range(blocks[1])])
        self.lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.head = nn.Linear(embed_dim[3], num_classes) if num_classes > 0 else nn.Identity()
        self.kd = kd
        if self.kd:
            self.head_kd = nn.Linear(embed_dim[3], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(_init_linear_layernorm)

    def forward_features(self, x):
        x = self.downsample1_1(x)
        for blk in self.ConvBlock1_1:
            x = blk(x)
        x = self.downsample1_2(x)
        for blk in self.ConvBlock1_2:
            x = blk(x)
        x = self.downsample2(x)
        for blk in self.ConvBlock2_1:
            x = blk(x)
        for blk in self.ConvBlock2_2:
            x = blk(x)
        x = self.downsample3(x)
        for blk in self.block3:
            x = blk(x)
        x = self.downsample4(x)
        for blk in self.block4:
            x = blk(x)
        return x

    def forward_steps(self, x):
        """(T, B, classes): token mean -> LIF -> head per step (``forward`` averages them)."""
        x = self.forward_features((x.unsqueeze(0)).repeat(self.T, 1, 1, 1, 1))
        x_lif = self.lif(x.flatten(3).mean(3))
        x = self.head(x_lif)
        return (x + self.head_kd(x_lif)) / 2 if self.kd else x

    def forward(self, x):
        assert not (self.kd and self.training), "the zoo runs the eval path"
        return self.forward_steps(x).mean(0)


@register_model
def metaspikformer_tiny(**kwargs):
    """The official layout (metaspikformer_8_512 arguments) with small widths and block counts."""
    return Spiking_vit_MetaFormer(patch_size=16, num_heads=8, mlp_ratios=4, qkv_bias=False,
                                  norm_layer=partial(nn.LayerNorm, eps=1e-6), depths=8, sr_ratios=1, **kwargs)


# ============================================================================================
# QKFormer (zhouchenlin2096/QKFormer cifar10/model.py): token Q-K attention in stages 1-2
# (q summed over a head's channels -> LIF -> mask k), SSA in stage 3, spike-add residuals.
# ============================================================================================
class Token_QK_Attention(nn.Module):  # noqa: N801
    def __init__(self, dim, num_heads=8, qkv_bias=False, qk_scale=None, attn_drop=0.0, proj_drop=0.0, sr_ratio=1):
        super().__init__()
        assert dim % num_heads == 0, f"dim {dim} should be divided by num_heads {num_heads}."
        self.dim = dim
        self.num_heads = num_heads
        for name in ("q", "k"):
            setattr(self, f"{name}_conv", nn.Conv1d(dim, dim, kernel_size=1, stride=1, bias=False))
            setattr(self, f"{name}_bn", nn.BatchNorm1d(dim))
            setattr(self, f"{name}_lif", MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy"))
        self.attn_lif = MultiStepLIFNode(tau=2.0, v_threshold=0.5, detach_reset=True, backend="cupy")
        self.proj_conv = nn.Conv1d(dim, dim, kernel_size=1, stride=1)
        self.proj_bn = nn.BatchNorm1d(dim)
        self.proj_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")

    def forward(self, x):
        T, B, C, H, W = x.shape
        x = x.flatten(3)
        T, B, C, N = x.shape
        x_for_qkv = x.flatten(0, 1)
        q_conv_out = self.q_lif(self.q_bn(self.q_conv(x_for_qkv)).reshape(T, B, C, N))
        q = q_conv_out.unsqueeze(2).reshape(T, B, self.num_heads, C // self.num_heads, N)
        k_conv_out = self.k_lif(self.k_bn(self.k_conv(x_for_qkv)).reshape(T, B, C, N))
        k = k_conv_out.unsqueeze(2).reshape(T, B, self.num_heads, C // self.num_heads, N)
        q = torch.sum(q, dim=3, keepdim=True)  # per token, spikes of a head's channels: 0..C/h
        attn = self.attn_lif(q)
        x = torch.mul(attn, k)  # token mask
        x = x.flatten(2, 3)
        x = self.proj_bn(self.proj_conv(x.flatten(0, 1))).reshape(T, B, C, H, W)
        return self.proj_lif(x)


class QKSpikingSelfAttention(ConvQKV):
    """QKFormer ``Spiking_Self_Attention`` (stage 3): the Spikformer ImageNet product order."""

    def __init__(self, dim, num_heads=8, qkv_bias=False, qk_scale=None, attn_drop=0.0, proj_drop=0.0, sr_ratio=1):
        super().__init__()
        assert dim % num_heads == 0, f"dim {dim} should be divided by num_heads {num_heads}."
        self.dim = dim
        self.num_heads = num_heads
        self.scale = 0.125
        self._add_qkv(dim)
        self.attn_lif = MultiStepLIFNode(tau=2.0, v_threshold=0.5, detach_reset=True, backend="cupy")
        self.proj_conv = nn.Conv1d(dim, dim, kernel_size=1, stride=1)
        self.proj_bn = nn.BatchNorm1d(dim)
        self.proj_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.qkv_mp = nn.MaxPool1d(4)  # built, never called in the official forward

    def forward(self, x):
        T, B, C, H, W = x.shape
        x = x.flatten(3)
        T, B, C, N = x.shape
        x, _ = self._attend(x, T, B, C, N)
        x = self.attn_lif(x)
        x = x.flatten(0, 1)
        return self.proj_lif(self.proj_bn(self.proj_conv(x))).reshape(T, B, C, W, H)  # (W, H) as official


class QKMLP(nn.Module):
    def __init__(self, in_features, hidden_features=None, out_features=None, drop=0.0):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.mlp1_conv = nn.Conv2d(in_features, hidden_features, kernel_size=1, stride=1)
        self.mlp1_bn = nn.BatchNorm2d(hidden_features)
        self.mlp1_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.mlp2_conv = nn.Conv2d(hidden_features, out_features, kernel_size=1, stride=1)
        self.mlp2_bn = nn.BatchNorm2d(out_features)
        self.mlp2_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.c_hidden = hidden_features
        self.c_output = out_features

    def forward(self, x):
        T, B, C, H, W = x.shape
        x = self.mlp1_lif(self.mlp1_bn(self.mlp1_conv(x.flatten(0, 1))).reshape(T, B, self.c_hidden, H, W))
        return self.mlp2_lif(self.mlp2_bn(self.mlp2_conv(x.flatten(0, 1))).reshape(T, B, C, H, W))


class TokenSpikingTransformer(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0, **kwargs):
        super().__init__()
        self.tssa = Token_QK_Attention(dim, num_heads)
        self.mlp = QKMLP(in_features=dim, hidden_features=int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.tssa(x)  # spike adds
        x = x + self.mlp(x)
        return x


class QKSpikingTransformer(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0, **kwargs):
        super().__init__()
        self.ssa = QKSpikingSelfAttention(dim, num_heads)
        self.mlp = QKMLP(in_features=dim, hidden_features=int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.ssa(x)
        x = x + self.mlp(x)
        return x


class PatchEmbedInit(nn.Module):
    def __init__(self, img_size_h=128, img_size_w=128, patch_size=4, in_channels=2, embed_dims=256):
        super().__init__()
        self.image_size = [img_size_h, img_size_w]
        self.patch_size = to_2tuple(patch_size)
        self.C = in_channels
        self.proj_conv = _conv3x3(in_channels, embed_dims // 2)
        self.proj_bn = nn.BatchNorm2d(embed_dims // 2)
        self.proj_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.proj1_conv = _conv3x3(embed_dims // 2, embed_dims)
        self.proj1_bn = nn.BatchNorm2d(embed_dims)
        self.proj1_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.proj_res_conv = nn.Conv2d(embed_dims // 2, embed_dims, kernel_size=1, stride=1, padding=0, bias=False)
        self.proj_res_bn = nn.BatchNorm2d(embed_dims)
        self.proj_res_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")

    def forward(self, x):
        T, B, C, H, W = x.shape
        x = self.proj_lif(self.proj_bn(self.proj_conv(x.flatten(0, 1))).reshape(T, B, -1, H, W)).flatten(0, 1)
        x_feat = x
        x = self.proj1_lif(self.proj1_bn(self.proj1_conv(x)).reshape(T, B, -1, H, W))
        x_feat = self.proj_res_bn(self.proj_res_conv(x_feat)).reshape(T, B, -1, H, W).contiguous()
        x_feat = self.proj_res_lif(x_feat)
        return x + x_feat  # spike add


class PatchEmbeddingStage(nn.Module):
    def __init__(self, img_size_h=128, img_size_w=128, patch_size=4, in_channels=2, embed_dims=256):
        super().__init__()
        self.image_size = [img_size_h, img_size_w]
        self.patch_size = to_2tuple(patch_size)
        self.proj3_conv = _conv3x3(embed_dims // 2, embed_dims)
        self.proj3_bn = nn.BatchNorm2d(embed_dims)
        self.proj3_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.proj4_conv = _conv3x3(embed_dims, embed_dims)
        self.proj4_bn = nn.BatchNorm2d(embed_dims)
        self.proj4_maxpool = _maxpool()
        self.proj4_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
        self.proj_res_conv = nn.Conv2d(embed_dims // 2, embed_dims, kernel_size=1, stride=2, padding=0, bias=False)
        self.proj_res_bn = nn.BatchNorm2d(embed_dims)
        self.proj_res_lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")

    def forward(self, x):
        T, B, C, H, W = x.shape
        x = x.flatten(0, 1).contiguous()  # spike counts 0..2 of the previous stage
        x_feat = x
        x = self.proj3_lif(self.proj3_bn(self.proj3_conv(x)).reshape(T, B, -1, H, W).contiguous())
        x = self.proj4_bn(self.proj4_conv(x.flatten(0, 1).contiguous()))
        x = self.proj4_maxpool(x).reshape(T, B, -1, H // 2, W // 2).contiguous()  # MaxPool on real values
        x = self.proj4_lif(x)
        x_feat = self.proj_res_bn(self.proj_res_conv(x_feat)).reshape(T, B, -1, H // 2, W // 2).contiguous()
        x_feat = self.proj_res_lif(x_feat)
        return x + x_feat


class spiking_transformer(nn.Module):  # noqa: N801 -- official class name
    def __init__(self, img_size_h=128, img_size_w=128, patch_size=16, in_channels=2, num_classes=11,
                 embed_dims=256, num_heads=8, mlp_ratios=4, depths=3, T=4, norm_layer=nn.LayerNorm, **kwargs):
        super().__init__()
        self.num_classes = num_classes
        self.depths = depths
        self.T = T
        num_heads = [8, 8, 8]  # hard-coded in the official constructor
        geometry = dict(img_size_h=img_size_h, img_size_w=img_size_w, patch_size=patch_size, in_channels=in_channels)
        self.patch_embed1 = PatchEmbedInit(**geometry, embed_dims=embed_dims // 4)
        self.stage1 = nn.ModuleList([TokenSpikingTransformer(embed_dims // 4, num_heads[0], mlp_ratios)])
        self.patch_embed2 = PatchEmbeddingStage(**geometry, embed_dims=embed_dims // 2)
        self.stage2 = nn.ModuleList([TokenSpikingTransformer(embed_dims // 2, num_heads[1], mlp_ratios)])
        self.patch_embed3 = PatchEmbeddingStage(**geometry, embed_dims=embed_dims)
        self.stage3 = nn.ModuleList([QKSpikingTransformer(embed_dims, num_heads[2], mlp_ratios)
                                     for _ in range(depths - 2)])
        self.head = nn.Linear(embed_dims, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(_init_linear_layernorm)

    def forward_features(self, x):
        x = self.patch_embed1(x)
        for blk in self.stage1:
            x = blk(x)
        x = self.patch_embed2(x)
        for blk in self.stage2:
            x = blk(x)
        x = self.patch_embed3(x)
        for blk in self.stage3:
            x = blk(x)
        return x.flatten(3).mean(3)

    def forward(self, x):
        x = (x.unsqueeze(0)).repeat(self.T, 1, 1, 1, 1)
        x = self.forward_features(x)
        return self.head(x.mean(0))

    def forward_steps(self, x):
        return self.head(self.forward_features((x.unsqueeze(0)).repeat(self.T, 1, 1, 1, 1)))


@register_model
def QKFormer(pretrained=False, **kwargs):  # noqa: N802
    model = spiking_transformer(**kwargs)
    model.default_cfg = _cfg()
    return model


# ============================================================================================
# SpikingResformer (xyshi2000/SpikingResformer models/spikingresformer.py, submodules/layers.py):
# already SpikingJelly activation_based (multi-step layer.* wrappers); DSSA multiplies real
# projections with spikes, scaled by firing-rate buffers; GWFFN grouped 3x3 convs.
# ============================================================================================
class LIF(neuron.LIFNode):
    """Official ``layers.LIF`` with backend='torch' (official: 'cupy'; surrogate only matters in training)."""

    def __init__(self):
        super().__init__(tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0, detach_reset=True,
                         step_mode="m", store_v_seq=False)


class BN(nn.Module):
    def __init__(self, num_features):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True)

    def forward(self, x):
        if x.dim() != 5:
            raise ValueError(f"expected x with shape [T, N, C, H, W], but got x with shape {x.shape}!")
        return sj_functional.seq_to_ann_forward(x, self.bn)


class SpikingMatmul(nn.Module):
    """``torch.matmul``; ``spike`` marks which operand is spikes ('l', 'r', 'both') for SOP counting."""

    def __init__(self, spike: str):
        super().__init__()
        assert spike in ("l", "r", "both")
        self.spike = spike

    def forward(self, left, right):
        return torch.matmul(left, right)


class Conv3x3(layer.Conv2d):
    def __init__(self, in_channels, out_channels, stride=1, dilation=1, groups=1, bias=False):
        super().__init__(in_channels, out_channels, kernel_size=3, stride=stride, padding=dilation, dilation=dilation,
                         groups=groups, bias=bias, padding_mode="zeros", step_mode="m")


class Conv1x1(layer.Conv2d):
    def __init__(self, in_channels, out_channels, stride=1, bias=False):
        super().__init__(in_channels, out_channels, kernel_size=1, stride=stride, padding=0, dilation=1, groups=1,
                         bias=bias, padding_mode="zeros", step_mode="m")


class Linear(layer.Linear):
    def __init__(self, in_features, out_features, bias=False):
        super().__init__(in_features, out_features, bias=bias, step_mode="m")


class GWFFN(nn.Module):
    def __init__(self, in_channels, num_conv=1, ratio=4, group_size=64, activation=LIF):
        super().__init__()
        inner_channels = in_channels * ratio
        self.up = nn.Sequential(activation(), Conv1x1(in_channels, inner_channels), BN(inner_channels))
        self.conv = nn.ModuleList([nn.Sequential(
            activation(), Conv3x3(inner_channels, inner_channels, groups=inner_channels // group_size),
            BN(inner_channels)) for _ in range(num_conv)])
        self.down = nn.Sequential(activation(), Conv1x1(inner_channels, in_channels), BN(in_channels))

    def forward(self, x):
        x_feat_out = x.clone()
        x = self.up(x)
        x_feat_in = x.clone()
        for m in self.conv:
            x = m(x)
        x = x + x_feat_in  # membrane shortcuts
        x = self.down(x)
        return x + x_feat_out


class DSSA(nn.Module):
    def __init__(self, dim, num_heads, lenth, patch_size, activation=LIF):
        super().__init__()
        assert dim % num_heads == 0, f"dim {dim} should be divided by num_heads {num_heads}."
        self.dim = dim
        self.num_heads = num_heads
        self.lenth = lenth
        self.register_buffer("firing_rate_x", torch.zeros(1, 1, num_heads, 1, 1))
        self.register_buffer("firing_rate_attn", torch.zeros(1, 1, num_heads, 1, 1))
        self.init_firing_rate_x = False
        self.init_firing_rate_attn = False
        self.momentum = 0.999
        self.activation_in = activation()
        self.W = layer.Conv2d(dim, dim * 2, patch_size, patch_size, bias=False, step_mode="m")
        self.norm = BN(dim * 2)
        self.matmul1 = SpikingMatmul("r")
        self.matmul2 = SpikingMatmul("r")
        self.activation_attn = activation()
        self.activation_out = activation()
        self.Wproj = Conv1x1(dim, dim)
        self.norm_proj = BN(dim)

    def _track(self, name, value):
        """Training only: the running mean (momentum 0.999) of a firing rate, as the official code."""
        if not getattr(self, f"init_{name}") and torch.all(getattr(self, name) == 0):
            setattr(self, name, value)
        setattr(self, f"init_{name}", True)
        setattr(self, name, getattr(self, name) * self.momentum + value * (1 - self.momentum))

    def forward(self, x):
        T, B, C, H, W = x.shape
        x_feat = x.clone()
        x = self.activation_in(x)
        y = self.norm(self.W(x))
        y = y.reshape(T, B, self.num_heads, 2 * C // self.num_heads, -1)
        y1, y2 = y[:, :, :, :C // self.num_heads, :], y[:, :, :, C // self.num_heads:, :]
        x = x.reshape(T, B, self.num_heads, C // self.num_heads, -1)
        if self.training:
            self._track("firing_rate_x", x.detach().mean((0, 1, 3, 4), keepdim=True))
        scale1 = 1.0 / torch.sqrt(self.firing_rate_x * (self.dim // self.num_heads))
        attn = self.matmul1(y1.transpose(-1, -2), x)  # real x spikes: (h, L, d) @ (h, d, HW)
        attn = attn * scale1
        attn = self.activation_attn(attn)
        if self.training:
            self._track("firing_rate_attn", attn.detach().mean((0, 1, 3, 4), keepdim=True))
        scale2 = 1.0 / torch.sqrt(self.firing_rate_attn * self.lenth)
        out = self.matmul2(y2, attn)  # real x spikes: (h, d, L) @ (h, L, HW)
        out = out * scale2
        out = out.reshape(T, B, C, H, W)
        out = self.activation_out(out)
        out = self.norm_proj(self.Wproj(out))
        return out + x_feat


class DownsampleLayer(nn.Module):
    def __init__(self, in_channels, out_channels, stride=2, activation=LIF):
        super().__init__()
        self.conv = Conv3x3(in_channels, out_channels, stride=stride)
        self.norm = BN(out_channels)
        self.activation = activation()

    def forward(self, x):
        return self.norm(self.conv(self.activation(x)))


class SpikingResformer(nn.Module):
    def __init__(self, layers, planes, num_heads, patch_sizes, img_size=224, T=4, in_channels=3, num_classes=1000,
                 prologue=None, group_size=64, activation=LIF, **kwargs):
        super().__init__()
        self.T = T
        self.skip = ["prologue.0", "classifier"]  # layers the official SOP count leaves out
        assert len(planes) == len(layers) == len(num_heads) == len(patch_sizes)
        if prologue is None:
            self.prologue = nn.Sequential(
                layer.Conv2d(in_channels, planes[0], 7, 2, 3, bias=False, step_mode="m"),
                BN(planes[0]),
                layer.MaxPool2d(kernel_size=3, stride=2, padding=1, step_mode="m"))  # MaxPool on real values
            img_size = img_size // 4
        else:
            self.prologue = prologue
        self.layers = nn.Sequential()
        for idx in range(len(planes)):
            sub_layers = nn.Sequential()
            if idx != 0:
                sub_layers.append(DownsampleLayer(planes[idx - 1], planes[idx], stride=2, activation=activation))
                img_size = img_size // 2
            for name in layers[idx]:
                if name == "DSSA":
                    sub_layers.append(DSSA(planes[idx], num_heads[idx], (img_size // patch_sizes[idx]) ** 2,
                                           patch_sizes[idx], activation=activation))
                elif name == "GWFFN":
                    sub_layers.append(GWFFN(planes[idx], group_size=group_size, activation=activation))
                else:
                    raise ValueError(name)
            self.layers.append(sub_layers)
        self.avgpool = layer.AdaptiveAvgPool2d((1, 1), step_mode="m")
        self.classifier = Linear(planes[-1], num_classes)
        self.init_weight()

    def init_weight(self):
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        if x.dim() != 5:
            x = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        else:
            x = x.transpose(0, 1)  # [B, T, C, H, W] -> [T, B, C, H, W]
        x = self.prologue(x)
        x = self.layers(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 2)
        return self.classifier(x)  # (T, B, classes): the official training loop averages over T

    forward_steps = forward


@register_model
def spikingresformer_tiny(**kwargs):
    """The ImageNet layout (prologue conv 7x7/2 + BN + MaxPool) with two stages of DSSA + GWFFN."""
    return SpikingResformer([["DSSA", "GWFFN"], ["DSSA", "GWFFN"]], kwargs.pop("planes", [16, 32]),
                            kwargs.pop("num_heads", [1, 2]), kwargs.pop("patch_sizes", [4, 2]), **kwargs)


# ============================================================================================
# The zoo: seeded builds that fire moderately, inputs and per-step eager outputs.
# ============================================================================================
def neuron_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every spiking neuron module of ``model``, by qualified name."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, neuron.BaseNode)]


def _batchnorms(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def firing_rates(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Mean spike rate of every neuron layer that runs in ``model(x)``."""
    rates: dict[str, float] = {}
    hooks = [m.register_forward_hook(lambda mod, args, out, name=name: rates.__setitem__(name, out.mean().item()))
             for name, m in neuron_layers(model)]
    try:
        sj_functional.reset_net(model)
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
        sj_functional.reset_net(model)
    return rates


@dataclass
class _BNRandomisation:
    """Per-channel draws that make a BatchNorm differ from its data: running mean shifted by
    ``mean_shift`` standard deviations, running variance scaled by ``var_scale``."""
    mean_shift: torch.Tensor
    var_scale: torch.Tensor

    @classmethod
    def draw(cls, bn: nn.Module, gen: torch.Generator) -> "_BNRandomisation":
        n = bn.num_features
        with torch.no_grad():
            bn.weight.copy_(torch.rand(n, generator=gen) + 0.5)
            bn.bias.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
        return cls(torch.rand(n, generator=gen) * 0.4 - 0.2, torch.rand(n, generator=gen) + 0.5)

    def fit(self, bn: nn.Module, x: torch.Tensor) -> None:
        """Running statistics from the channel statistics of ``x`` (N, C, ...), randomised."""
        dims = [d for d in range(x.dim()) if d != 1]
        var, mean = torch.var_mean(x, dim=dims)
        bn.running_mean.copy_(mean + self.mean_shift * var.sqrt())
        bn.running_var.copy_(var * self.var_scale + bn.eps)  # eps: a silent channel stays finite


def _crossing(rates_at: Callable[[torch.Tensor], torch.Tensor], target: float, lo: float, hi: float,
              points: int = 9, rounds: int = 4) -> float:
    """The ``d`` in [lo, hi] where the increasing firing rate ``rates_at(d)`` crosses ``target``:
    a grid of ``points`` offsets evaluated at once, narrowed ``rounds`` times."""
    for _ in range(rounds):
        grid = torch.linspace(lo, hi, points)
        rates = torch.cummax(rates_at(grid), dim=0).values
        i = min(max(int(torch.searchsorted(rates, torch.tensor([target]))), 1), points - 1)
        lo, hi = grid[i - 1].item(), grid[i].item()
    return 0.5 * (lo + hi)


def _columns(current: torch.Tensor, most: int = 1024) -> torch.Tensor:
    """(T, n) with at most ``most`` of the neurons of ``current`` (T, ...), evenly spread: the
    neurons are independent, so their rate estimates the layer's."""
    flat = current.reshape(current.shape[0], -1)
    if flat.shape[1] <= most:
        return flat
    return flat[:, torch.linspace(0, flat.shape[1] - 1, most).long()]


def _rates(node: nn.Module, currents: torch.Tensor) -> torch.Tensor:
    """Firing rate of ``node`` for each of the inputs stacked on axis 1 of ``currents`` (T, K, ...)."""
    sj_functional.reset_net(node)
    spikes = node.forward(currents)  # forward: no hooks (this runs inside one)
    sj_functional.reset_net(node)
    return spikes.transpose(0, 1).flatten(1).mean(1)


def _by_suffix(options: dict, name: str, default):
    """The value of the longest key that ``name`` ends with."""
    keys = sorted((k for k in options if name.endswith(k)), key=len)
    return options[keys[-1]] if keys else default


def calibrate(model: nn.Module, x: torch.Tensor, gen: torch.Generator, target: float = 0.15,
              targets: dict[str, float | None] | None = None, gains: dict[str, str] | None = None,
              passes: int = 3) -> None:
    """Randomise every BatchNorm, then make neuron layers fire near ``target`` on ``x``.

    Each pass runs ``model(x)`` with hooks, in call order: a BatchNorm takes running statistics
    from its actual input (randomised by fixed draws), so currents stay O(1) whatever the rates
    upstream; a neuron is driven by the BatchNorm whose output its input is a view of, else by
    the last BatchNorm that ran before it (BN -> transpose, MaxPool or a residual add -> neuron:
    a bias shift reaches its input unchanged), unless an earlier neuron drives that BatchNorm
    (attention neurons after q/k/v products: they follow their operands' rates). The offset
    that gives ``target`` on the neuron's actual input is added to the BN bias and, in place, to
    the input, so later neurons (and residual streams that alias the input) see the corrected
    values; further passes absorb what copies of a stream made before the neuron missed.

    ``targets`` overrides the rate per neuron-name suffix (the longest match; ``None``: not
    driven). ``gains`` maps a neuron-name suffix to a firing-rate buffer of its parent module
    that scales its input by ``buffer ** -0.5`` (SpikingResformer's DSSA): the buffer is set so
    the neuron hits ``target``.
    """
    targets, gains = targets or {}, gains or {}
    modules = dict(model.named_modules())
    bns = _batchnorms(model)
    bn_by_name = dict(bns)
    draws = {name: _BNRandomisation.draw(bn, gen) for name, bn in bns}
    drives: dict[str, str] = {}  # BN name -> the neuron it drives (fixed in the first pass)

    def bn_pre_hook(bn, args, name):
        draws[name].fit(bn, args[0])
        last_bn.append(name)

    def bn_hook(bn, args, out, name):
        outputs[out.untyped_storage().data_ptr()] = (name, out)  # kept alive: no address reuse

    def neuron_pre_hook(node, args, name):
        current = args[0]
        goal = _by_suffix(targets, name, target)
        buffer = _by_suffix(gains, name, None)
        sample = _columns(current)
        stacked, along_k = sample.unsqueeze(1), (1, -1, 1)
        if buffer is not None:  # input * g  <=>  buffer / g**2
            log_g = _crossing(lambda lg: _rates(node, stacked * 2.0 ** lg.view(along_k)), goal, -8.0, 8.0)
            getattr(modules[name.rpartition(".")[0]], buffer).div_(4.0 ** log_g)
            current.mul_(2.0 ** log_g)
            return None
        viewed = outputs.get(current.untyped_storage().data_ptr())
        driver = viewed[0] if viewed else (last_bn[-1] if last_bn else None)
        if driver is None or goal is None or drives.setdefault(driver, name) != name:
            return None
        span = current.abs().max().item() + 2.0
        delta = _crossing(lambda d: _rates(node, stacked + d.view(along_k)), goal, -span, span)
        bn_by_name[driver].bias.add_(delta)
        current.add_(delta)  # in place: views of the same stream (a block's identity) shift too
        return None

    for _ in range(passes):
        last_bn: list[str] = []
        outputs: dict[int, tuple[str, torch.Tensor]] = {}
        hooks = [bn.register_forward_pre_hook(partial(bn_pre_hook, name=name)) for name, bn in bns]
        hooks += [bn.register_forward_hook(partial(bn_hook, name=name)) for name, bn in bns]
        hooks += [m.register_forward_pre_hook(partial(neuron_pre_hook, name=name)) for name, m in neuron_layers(model)]
        try:
            sj_functional.reset_net(model)
            with torch.no_grad():
                model(x)
        finally:
            for h in hooks:
                h.remove()
            sj_functional.reset_net(model)


@dataclass
class ZooTransformer:
    name: str
    #: registered model name (``create_model``) and the small arguments
    model_name: str
    kwargs: dict
    input_shape: tuple
    timesteps: int
    official: str
    description: str = ""
    #: :func:`calibrate` options: firing-rate targets per neuron-name suffix (default 15 %) ...
    rate_targets: dict = field(default_factory=dict)
    #: ... and neurons whose input scale is a firing-rate buffer
    rate_gains: dict = field(default_factory=dict)

    def build(self) -> nn.Module:
        """Seeded model in eval mode, BatchNorms randomised and calibrated (:func:`calibrate`)."""
        torch.manual_seed(0)
        model = create_model(self.model_name, **self.kwargs)
        calib = torch.from_numpy(self.inputs(4, seed=1000))
        if self.rate_gains:  # one training-mode pass sets the firing-rate buffers, as training does
            model.train()
            with torch.no_grad():
                model(calib)
            sj_functional.reset_net(model)
        model.eval()
        calibrate(model, calib, torch.Generator().manual_seed(1), targets=self.rate_targets, gains=self.rate_gains)
        return model

    def inputs(self, n: int, seed: int = 0) -> np.ndarray:
        """(n, C, H, W) static images in [0, 1); the models repeat them over T themselves."""
        return np.random.default_rng(seed).random((n,) + self.input_shape).astype(np.float32)

    def torch_outputs(self, model: nn.Module, x: np.ndarray) -> np.ndarray:
        """(n, T, classes) per-step eager outputs, in the model's own dtype."""
        dtype = next(model.parameters()).dtype
        sj_functional.reset_net(model)
        with torch.no_grad():
            out = model.forward_steps(torch.from_numpy(x).to(dtype))
        sj_functional.reset_net(model)
        return out.transpose(0, 1).double().numpy()


#: q/k/v rates for the spike x spike products: with 16 tokens and 8 channels per head,
#: (q k^T v) * 0.125 reaches the attention threshold 0.5 only when q, k, v fire often.
#: QKFormer's token attention sums 4 q channels per head with threshold 0.5: sparse q.
_DENSE_QKV = {"q_lif": 0.3, "k_lif": 0.3, "v_lif": 0.3}
MODELS: dict[str, ZooTransformer] = {m.name: m for m in [
    ZooTransformer("spikformer_cifar", "spikformer",
                   dict(img_size_h=16, img_size_w=16, patch_size=4, in_channels=3, num_classes=10, embed_dims=32,
                        num_heads=4, mlp_ratios=4, depths=2, T=4),
                   (3, 16, 16), 4, "ZK-Zhou/spikformer cifar10/model.py",
                   "Linear + BN1d tokens, attn = q @ k^T * 0.125, attn @ v, spike adds, MaxPool on spikes",
                   _DENSE_QKV),
    ZooTransformer("spikformer_imagenet", "spikformer_imagenet",
                   dict(img_size_h=64, img_size_w=64, patch_size=16, in_channels=3, num_classes=10, embed_dims=32,
                        num_heads=4, mlp_ratios=4, depths=2),
                   (3, 64, 64), 4, "ZK-Zhou/spikformer imagenet/model.py",
                   "Conv1d k=1 + BN1d, k^T @ v then q @ (k^T v) * 0.125, four MaxPools on spikes",
                   _DENSE_QKV),
    ZooTransformer("spikingformer", "Spikingformer",
                   dict(img_size_h=64, img_size_w=64, patch_size=16, in_channels=3, num_classes=10, embed_dims=32,
                        num_heads=4, mlp_ratios=4, depths=2, T=4),
                   (3, 64, 64), 4, "zhouchenlin2096/Spikingformer imagenet/model.py",
                   "pre-activation LIFs, membrane shortcuts (real stream), head on the real token mean",
                   _DENSE_QKV),
    ZooTransformer("sdt_v1", "sdt",
                   dict(img_size_h=64, img_size_w=64, patch_size=16, in_channels=3, num_classes=10, embed_dims=32,
                        num_heads=4, mlp_ratios=4, depths=2, T=4, pooling_stat="1111"),
                   (3, 64, 64), 4, "BICLab/Spike-Driven-Transformer module/ms_conv.py",
                   "SDSA: k*v mask, token sum, talking-heads LIF (0.5), q*kv; MaxPool on real values"),
    ZooTransformer("sdt_v2", "metaspikformer_tiny",
                   dict(img_size_h=64, img_size_w=64, in_channels=3, num_classes=10, embed_dim=(8, 16, 64, 64),
                        blocks=(1, 1), T=4),
                   (3, 64, 64), 4, "BICLab/Spike-Driven-Transformer-V2 classification/models.py",
                   "conv stages (SepConv, depthwise), RepConv q/k/v, k^T @ v then q @ (k^T v) * 0.125",
                   _DENSE_QKV),
    ZooTransformer("qkformer", "QKFormer",
                   dict(img_size_h=16, img_size_w=16, patch_size=4, in_channels=3, num_classes=10, embed_dims=64,
                        mlp_ratios=4, depths=3, T=4),
                   (3, 16, 16), 4, "zhouchenlin2096/QKFormer cifar10/model.py",
                   "token Q-K attention (channel sum -> LIF -> mask), SSA stage, MaxPool on real values",
                   {**_DENSE_QKV, "tssa.q_lif": 0.08}),
    ZooTransformer("spikingresformer", "spikingresformer_tiny",
                   dict(img_size=64, T=4, in_channels=3, num_classes=10, group_size=8),
                   (3, 64, 64), 4, "xyshi2000/SpikingResformer models/spikingresformer.py",
                   "DSSA real x spike matmuls with firing-rate scales, GWFFN grouped conv, real MaxPool",
                   rate_gains={"activation_attn": "firing_rate_x", "activation_out": "firing_rate_attn"}),
]}
