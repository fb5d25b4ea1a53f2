"""``common.Model`` and ``common.DataLoader`` of LPOT / Intel Neural Compressor launchers.

Their launchers took the model wrapped (``prune.model = common.Model(model)``) and gave a
wrapper back; here the wrapper holds the user's own module, unchanged, as ``.model``, and
passes calls and attribute reads through to it, so code written against either the wrapper
or the module keeps working::

    from prunus.compression.torch import Pruning, common
    prune = Pruning('conf.yaml')
    prune.model = common.Model(model)
    pruned = prune()          # a common.Model; pruned.model is `model`, masked
"""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn


class Model:
    """The user's ``torch.nn.Module`` as LPOT's launchers expected it.

    Args:
        root: the model (a ``torch.nn.Module``).
        **kwargs: accepted for LPOT compatibility (framework hints); unused by PyTorch.
    """

    def __init__(self, root: nn.Module, **kwargs: Any):
        if isinstance(root, Model):
            root = root.model
        if not isinstance(root, nn.Module):
            raise TypeError(f'common.Model needs a torch.nn.Module; got {type(root).__name__}.')
        self.__dict__.update(_model=root, kwargs=kwargs)

    @property
    def model(self) -> nn.Module:
        return self._model

    root = model

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._model(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__['_model'], name)

    def save(self, root: str | os.PathLike) -> str:
        """Writes the (masked) weights to ``root/best_model.pt``; returns the file's path."""
        os.makedirs(root, exist_ok=True)
        path = os.path.join(root, 'best_model.pt')
        torch.save(self._model.state_dict(), path)
        return path

    def __repr__(self) -> str:
        return f'common.Model({type(self._model).__name__})'


def DataLoader(dataset: Any, batch_size: int = 1, **kwargs: Any) -> torch.utils.data.DataLoader:
    """LPOT's ``common.DataLoader(dataset, batch_size)``: a ``torch.utils.data.DataLoader``."""
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, **kwargs)

