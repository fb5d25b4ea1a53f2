"""Post-training pruning through the Intel Neural Compressor style API.

INC ran SparseGPT from a :class:`~prunus.compression.WeightPruningConfig` whose entries
say ``pruning_type='sparse_gpt'``, handing ``prepare_pruning`` a dataloader; the model is
pruned at once, with no training loop. prunus reads the same config (``target_sparsity``,
``pattern`` ``'1x1'`` or ``'N:M'``, ``op_names`` / ``excluded_op_names`` regexes,
``pruning_op_types``) and accepts ``'wanda'`` as a second type::

    config = WeightPruningConfig([{'pruning_type': 'sparse_gpt', 'op_names': ['.*'],
                                   'excluded_op_names': ['lm_head']}],
                                 target_sparsity=0.5, pattern='1x1')
    pruning = prepare_pruning(model, config, dataloader=loader)
    pruning.model            # pruned, masks attached

For an N:M pattern the sparsity is N/M whatever ``target_sparsity`` says (INC's rule).
INC's third type without retraining, ``'retrain_free'`` (Kwon et al., 2022), is not a
calibration-data type: as in INC it runs in the training API (``Pruning`` or
``prepare_pruning(model, config, optimizer)`` in a loop that computes gradients), where it
scores channels by Fisher information and keeps the pruned layers' weights fixed; see
:mod:`prunus.compression.torch.fisher_masks`.
Dataloader batches are dicts of keyword inputs, tensors, or ``(inputs, labels)`` tuples,
of which only the inputs are fed to the model. The last entry that selects a layer wins.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

from torch import nn

from ..patterns import NMPattern, parse_pattern
from ..pruning_config import POST_TRAINING_TYPES, WeightPruningConfig
from .layer_inputs import is_hf_conv1d
from prunus.layers.torch.masking import Masks, get_masks
from .post_training import PostTrainingPruner, SparseGPTPruner, WandaPruner

PRUNERS: dict[str, type[PostTrainingPruner]] = {'sparse_gpt': SparseGPTPruner, 'wanda': WandaPruner}


def is_post_training(config: WeightPruningConfig) -> bool:
    """Whether the config's entries are post-training types (raises when they mix)."""
    types = [entry['pruning_type'] for entry in config.resolved()]
    post = [t in POST_TRAINING_TYPES for t in types]
    if any(post) and not all(post):
        raise ValueError('pruning configs mix post-training types (' + ', '.join(POST_TRAINING_TYPES) +
                         f') with training types; got {types}. Prune them in two passes.')
    return all(post)


def _type_matches(module: nn.Module, wanted: list[str]) -> bool:
    name = type(module).__name__
    return any(name == w or name.startswith(w) for w in wanted)


def _select(model: nn.Module, pruner: type[PostTrainingPruner], settings: dict[str, Any],
            where: str) -> list[str]:
    prunable = [(n, m) for n, m in model.named_modules()
                if isinstance(m, pruner.supported_types) or is_hf_conv1d(m)]
    names = [n for n, m in prunable if _type_matches(m, settings['pruning_op_types'])]
    if settings['op_names']:
        names = [n for n in names if any(re.search(p, n) for p in settings['op_names'])]
    names = [n for n in names if not any(re.search(p, n) for p in settings['excluded_op_names'])]
    if not names:
        raise ValueError(f'{where} selects no layer; check its op_names, excluded_op_names and '
                         'pruning_op_types.')
    return names


def _entry(settings: dict[str, Any], names: list[str], where: str) -> dict[str, Any]:
    pattern = parse_pattern(settings['pattern'])
    if pattern.name != 'unstructured' and not isinstance(pattern, NMPattern):
        raise ValueError(f"{where}['pattern'] is {settings['pattern']!r}; '{settings['pruning_type']}' "
                         "prunes '1x1' (unstructured) or 'N:M' patterns.")
    sparsity = pattern.n / pattern.m if isinstance(pattern, NMPattern) else settings['target_sparsity']
    return {'sparsity': sparsity, 'op_names': names, 'pattern': pattern.name}


class _Inputs:
    """Re-iterable view of a dataloader that drops the labels of ``(inputs, labels)``."""

    def __init__(self, dataloader: Iterable):
        self.dataloader = dataloader

    def __iter__(self):
        for batch in self.dataloader:
            if isinstance(batch, (tuple, list)) and not isinstance(batch, Mapping) and batch:
                yield batch[0]
            else:
                yield batch


class PostTrainingPruning:
    """The result of post-training pruning through the INC style API.

    Attributes:
        model: the pruned model (masks attached as buffers).
        pruner: the prunus pruner that did it.
    """

    def __init__(self, config: WeightPruningConfig, model: nn.Module, dataloader: Iterable,
                 device: Any = None, progress: bool = True):
        if not isinstance(model, nn.Module):
            raise TypeError(f'prepare_pruning needs a torch.nn.Module as model; got {type(model).__name__}.')
        if dataloader is None:
            raise ValueError("pruning_type 'sparse_gpt'/'wanda' prunes from calibration data; pass "
                             'dataloader= to prepare_pruning.')
        settings = config.resolved()
        kinds = {s['pruning_type'] for s in settings}
        if len(kinds) > 1:
            raise ValueError(f'pruning configs ask for several post-training types {sorted(kinds)}; '
                             'prune with one type per call.')
        pruner_cls = PRUNERS[kinds.pop()]
        owner: dict[str, int] = {}
        for index, entry in enumerate(settings):
            owner.update({n: index for n in _select(model, pruner_cls, entry, f'pruners[{index}]')})
        config_list = []
        for index, entry in enumerate(settings):
            names = [n for n, i in owner.items() if i == index]
            if names:
                config_list.append(_entry(entry, names, f'pruners[{index}]'))
        self.pruner = pruner_cls(model, config_list, _Inputs(dataloader), device=device, progress=progress)
        self.model = self.pruner.compress()

    def get_masks(self) -> Masks:
        return get_masks(self.model)

    def on_train_begin(self) -> None:
        """Nothing to do: the model was pruned when this object was made (kept so a loop
        written for the training API runs unchanged)."""


def post_training_prune(model: nn.Module, config: WeightPruningConfig, dataloader: Iterable,
                        device: Any = None, progress: bool = True) -> PostTrainingPruning:
    """Prunes ``model`` now with the post-training type its config names."""
    return PostTrainingPruning(config, model, dataloader, device=device, progress=progress)

