"""Checkpoints written by mmengine load with ``torch.load(weights_only=True)``.

Besides weights, every mmengine checkpoint holds the message hub (``HistoryBuffer`` objects, whose
statistics methods pickle as ``getattr(HistoryBuffer, 'mean')``) and numpy arrays (RNG states).
torch >= 2.6 refuses those by default, so MMDetection's ``tools/test.py`` fails with "Weights only
load failed" on them. Importing the plug-in allowlists exactly these types; ``getattr`` is
replaced by one that looks up HistoryBuffer's statistics methods and nothing else, so
weights-only loading stays as safe as it was.
"""
import pickle

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

HISTORY_STATISTICS = ('min', 'max', 'current', 'mean')  # registered by HistoryBuffer.__init__


def _history_buffer_getattr(obj, name: str):
    if obj is HistoryBuffer and (name in HISTORY_STATISTICS
                                 or name in HistoryBuffer._statistics_methods):
        return getattr(obj, name)
    raise pickle.UnpicklingError(f'weights-only load: getattr({obj!r}, {name!r}) is not allowed; '
                                 'only HistoryBuffer statistics methods are')


def register_safe_globals() -> None:
    """The globals of an mmengine checkpoint, for torch's weights-only unpickler."""
    numeric = '?' + np.typecodes['AllInteger'] + np.typecodes['AllFloat']  # no object dtype
    dtypes = {type(np.dtype(code)) for code in numeric}
    torch.serialization.add_safe_globals([
        HistoryBuffer, np.ndarray, np.dtype, *sorted(dtypes, key=lambda t: t.__name__),
        np._core.multiarray._reconstruct, np._core.multiarray.scalar,
        (_history_buffer_getattr, 'builtins.getattr')])
