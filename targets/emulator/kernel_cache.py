"""Whether numba must compile the event kernel now (a minute of silence otherwise).

Kept out of ``event_kernel.py`` on purpose: numba's cache is keyed by that file's
timestamp, so any edit there makes every checkout compile the kernel again.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

NOTE = ("note: numba is compiling the emulator's event kernel (about a minute, once; it is cached "
        "afterwards; `python -m snncompile.targets.emulator` compiles it ahead of time)")


def cold_cache_note(messages_dtype) -> Optional[str]:
    """:data:`NOTE` when ``run_samples`` for messages of ``messages_dtype`` is neither compiled
    in this process nor in numba's cache; None when warm or when the cache cannot be read
    (it is numba's internal index)."""
    from . import event_kernel as K

    if K.run_samples.signatures:
        return None
    try:
        index = K.run_samples._cache._cache_file._load_index()
        wanted = f"(Array({np.dtype(messages_dtype).name}, "
        if any(str(key[0]).startswith(wanted) for key in index):
            return None
    except Exception:
        return None
    return NOTE
