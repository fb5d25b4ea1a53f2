"""AGP for Keras: any registered algorithm, sparsity raised on the cubic schedule."""
from __future__ import annotations

from typing import Any, Callable, Iterable

import keras

from ..config import ConfigSpec, validate_config_list
from ..registry import get_pruner, register_pruner
from ..schedules import check_agp_entry, nni_agp_sparsity
from prunus.layers.tf import masking
from .base import Pruner

_SCHEDULE_KEYS = ('initial_sparsity', 'start_epoch', 'end_epoch', 'frequency')


@register_pruner('agp', framework='tf')
class AGPPruner(Pruner):
    """Automated Gradual Pruning (Zhu & Gupta, 2017) as a Keras callback.

    Each config entry gives ``final_sparsity`` and optionally ``initial_sparsity`` (0),
    ``start_epoch`` (0), ``end_epoch`` (10) and ``frequency`` (1), on NNI 1.x's span
    ``((end_epoch - start_epoch - 1) // frequency) * frequency``; at the start of every
    epoch the masks of ``pruning_algorithm`` (any name in ``available_pruners('tf')``) are
    recomputed at the scheduled sparsity. Already-pruned weights score zero, so they stay
    pruned.

    Example::

        pruner = AGPPruner(model, [{'initial_sparsity': 0.0, 'final_sparsity': 0.8,
                                    'start_epoch': 0, 'end_epoch': 10, 'frequency': 1,
                                    'op_types': ['default']}], pruning_algorithm='level')
        model = pruner.compress()
        model.fit(x, y, epochs=12, callbacks=pruner.callbacks())

    ``optimizer`` is accepted for the legacy signature; Keras needs none (masks hold
    through any Keras optimizer). ``data``, ``statistics_batch_num`` and ``criterion`` go
    to the data-driven algorithms, ``dependency_aware`` to the algorithm.
    """

    config_spec = ConfigSpec(targets=('final_sparsity',), extra=_SCHEDULE_KEYS)

    def __init__(self, model: keras.Model, config_list: list[dict[str, Any]], optimizer=None,
                 pruning_algorithm: str = 'level', data: Iterable[Any] | None = None,
                 statistics_batch_num: int | None = None, criterion: Callable | None = None,
                 dependency_aware: bool = False):
        if pruning_algorithm == 'agp':
            raise ValueError("pruning_algorithm cannot be 'agp' itself.")
        algorithm = get_pruner(pruning_algorithm, 'tf')
        self.supported_types = algorithm.supported_types
        self.default_types = algorithm.default_types
        super().__init__(model, config_list)
        entries = validate_config_list(config_list, self.config_spec, type(self).__name__)
        for entry in entries:
            check_agp_entry(entry, entry.get('final_sparsity'), 10)
        inner_list = [self._inner_entry(e) for e in entries]
        kwargs: dict[str, Any] = {'dependency_aware': dependency_aware} if dependency_aware is not False else {}
        if hasattr(algorithm, 'batches'):
            kwargs.update(data=data, statistics_batch_num=statistics_batch_num)
            if pruning_algorithm == 'taylorfo':
                kwargs['criterion'] = criterion
        self.algorithm = algorithm(model, inner_list, **kwargs)
        self.optimizer = optimizer
        self.epoch = 0

    @staticmethod
    def _inner_entry(entry) -> dict[str, Any]:
        values = {k: v for k, v in entry.values.items() if k not in _SCHEDULE_KEYS}
        if not entry.exclude:
            values['sparsity'] = values.pop('final_sparsity')
        return values

    def target_sparsity(self, entry, epoch: int) -> float:
        """The scheduled sparsity of a config entry at ``epoch``."""
        start, end, frequency = entry.get('start_epoch', 0), entry.get('end_epoch', 10), entry.get('frequency', 1)
        # The mask changes only every `frequency` epochs: hold the last update's value.
        update = epoch if epoch < start else start + ((epoch - start) // frequency) * frequency
        return nni_agp_sparsity(update, start, end, frequency, entry.get('initial_sparsity', 0.0),
                                entry.get('final_sparsity'))

    def update_epoch(self, epoch: int) -> None:
        """Sets the epoch and recomputes the masks at the scheduled sparsity."""
        self.epoch = epoch
        self.algorithm.overrides = {e.index: self.target_sparsity(e, epoch)
                                    for e in self.entries if not e.exclude}
        self._masks = self.algorithm.calc_masks()
        self.algorithm._masks = self._masks
        masking.attach_masks(self.model, self._masks)

    def calc_masks(self):
        return self.algorithm.calc_masks()

    def compress(self) -> keras.Model:
        self.update_epoch(self.epoch)
        return self.model

    def callbacks(self) -> list[keras.callbacks.Callback]:
        return super().callbacks() + [AGPCallback(self)]


class AGPCallback(keras.callbacks.Callback):
    """Calls ``pruner.update_epoch(epoch)`` at the start of every ``fit`` epoch.

    Example::

        pruner = AGPPruner(model, [{'final_sparsity': 0.8, 'end_epoch': 5, 'op_types': ['Dense']}])
        model = pruner.compress()
        model.fit(x, y, epochs=6, callbacks=[AGPCallback(pruner)])
    """

    def __init__(self, pruner: AGPPruner):
        super().__init__()
        self.pruner = pruner

    def on_epoch_begin(self, epoch, logs=None):
        self.pruner.update_epoch(epoch)
