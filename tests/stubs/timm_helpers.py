"""Tiny stand-ins for the five ``timm`` helpers the official spiking-transformer files import.

timm needs torchvision, which cannot be installed next to the pinned torch, yet Spikformer,
Spikingformer, SDT and QKFormer import ``to_2tuple``, ``trunc_normal_``, ``DropPath``
(``timm.models.layers``), ``register_model`` (``timm.models.registry``), ``_cfg``
(``timm.models.vision_transformer``) and ``create_model`` (``timm.models``).
:func:`installed` puts these modules into ``sys.modules`` for the duration of a test
fixture, so model code written in the official style imports unchanged.
"""
from __future__ import annotations

import collections.abc
import contextlib
import sys
import types
from itertools import repeat
from typing import Callable, Iterator

import pytest
import torch
from torch import nn

#: name -> model constructor, filled by :func:`register_model` (timm keeps the same registry).
MODEL_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def to_2tuple(x):
    """``(x, x)`` for a scalar; an iterable (not a string) is returned as a tuple."""
    if isinstance(x, collections.abc.Iterable) and not isinstance(x, str):
        return tuple(x)
    return tuple(repeat(x, 2))


def trunc_normal_(tensor: torch.Tensor, mean: float = 0.0, std: float = 1.0,
                  a: float = -2.0, b: float = 2.0) -> torch.Tensor:
    """timm's truncated normal init; the cut-offs ``a, b`` are absolute values, as in torch's."""
    return nn.init.trunc_normal_(tensor, mean=mean, std=std, a=a, b=b)


class DropPath(nn.Module):
    """Stochastic depth per sample: identity in eval mode (the only mode the zoo runs)."""

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True):
        super().__init__()
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep if self.scale_by_keep else x * mask


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Record ``fn`` under its name for :func:`create_model`; returns ``fn`` unchanged."""
    MODEL_REGISTRY[fn.__name__] = fn
    return fn


def create_model(model_name: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build a registered model by name (no checkpoint download: ``pretrained`` must be False)."""
    if pretrained:
        raise ValueError(f"timm stub: cannot download pretrained weights for {model_name!r}")
    if model_name not in MODEL_REGISTRY:
        raise KeyError(f"timm stub: unknown model {model_name!r} (registered: {sorted(MODEL_REGISTRY)})")
    return MODEL_REGISTRY[model_name](**kwargs)


def _cfg(url: str = "", **kwargs) -> dict:
    """The default pretrained config dict timm attaches as ``model.default_cfg``."""
    return {"url": url, "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": None,
            "crop_pct": 0.9, "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406),
            "std": (0.229, 0.224, 0.225), "first_conv": "patch_embed.proj", "classifier": "head",
            **kwargs}


def _modules() -> dict[str, types.ModuleType]:
    """The module tree ``timm``, ``timm.models`` and the three submodules the official files use."""
    def module(name: str, **attrs) -> types.ModuleType:
        mod = types.ModuleType(name, f"stub of {name} (tests/stubs/timm_helpers.py)")
        mod.__dict__.update(attrs)
        return mod

    layers = module("timm.models.layers", to_2tuple=to_2tuple, trunc_normal_=trunc_normal_, DropPath=DropPath)
    registry = module("timm.models.registry", register_model=register_model)
    vit = module("timm.models.vision_transformer", _cfg=_cfg)
    models = module("timm.models", create_model=create_model, layers=layers, registry=registry,
                    vision_transformer=vit)
    models.__path__ = []  # a package, so "from timm.models.layers import ..." resolves
    timm = module("timm", models=models, create_model=create_model)
    timm.__path__ = []
    return {m.__name__: m for m in (timm, models, layers, registry, vit)}


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """Put the stub ``timm`` modules into ``sys.modules``; restore what was there on exit."""
    with pytest.MonkeyPatch.context() as mp:
        for name, mod in _modules().items():
            mp.setitem(sys.modules, name, mod)
        yield
