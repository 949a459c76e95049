"""Fixtures shared by the spiking-transformer test modules."""
from __future__ import annotations

import sys
import warnings

import pytest
import torch


@pytest.fixture(scope="module")
def tzoo():
    """The zoo module with the timm stand-ins, on one torch thread (see zoo_export)."""
    from stubs import timm_helpers

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with timm_helpers.installed():
        import transformer_zoo
        yield transformer_zoo
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def zoo_export():
    """name -> (ZooTransformer, graph exported from its float64 build), each family exported once
    per module; the zoo imported with the timm stand-ins, on one torch thread (tiny models: a
    second thread only slows a loaded 2-core machine)."""
    from stubs import timm_helpers

    from snncompile.frontend import from_torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    sys.modules.pop("transformer_zoo", None)
    cache = {}
    with timm_helpers.installed():
        import transformer_zoo

        def get(name):
            if name not in cache:
                zm = transformer_zoo.MODELS[name]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    cache[name] = (zm, from_torch(zm.build().double(), zm.input_shape, zm.timesteps, name=name))
            return cache[name]
        yield get
    torch.set_num_threads(threads)
