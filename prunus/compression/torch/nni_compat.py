"""NNI's positional argument orders, in one thin layer over the keyword-only core pruners.

The core classes take ``(model, config_list)`` positionally and everything else by
keyword. NNI changed its orders between releases, so the classes exported from
:mod:`prunus.compression.torch` are these subclasses, which turn positional arguments into
keywords by the order of the release the call was written for, recognised from the type
of an argument (the only place prunus looks at what was passed positionally):

=================================  ==============================================================
class                              orders (chosen by)
=================================  ==============================================================
L1/L2 filter, FPGM                 1.x: optimizer, dependency_aware, dummy_input (an Optimizer
                                   third); 2.x: dependency_aware, dummy_input
APoZ / mean activation             1.x: optimizer, activation, statistics_batch_num (a str
                                   fourth); 2.x: optimizer, trainer, criterion, activation,
                                   sparsifying_training_batches, dependency_aware, dummy_input
Taylor FO                          1.x: optimizer, statistics_batch_num (an int fourth);
                                   2.x: optimizer, trainer, criterion,
                                   sparsifying_training_batches, dependency_aware, dummy_input,
                                   global_sort
AGP                                1.x: optimizer, pruning_algorithm (a str fourth); 2.x:
                                   optimizer, trainer, criterion, num_iterations,
                                   epochs_per_iteration, pruning_algorithm
=================================  ==============================================================
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from ..registry import register_pruner
from . import agp, data_pruners, pruners

Orders = dict[str, tuple[str, ...]]


def keywords(owner: str, args: Sequence[Any], kwargs: dict[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    """``kwargs`` plus the positional ``args`` named by ``order``, as Python would bind them."""
    if len(args) > len(order):
        raise TypeError(f'{owner} takes at most {len(order) + 2} positional arguments (model, config_list, '
                        f"{', '.join(order)}); got {len(args) + 2}.")
    bound = dict(kwargs)
    for name, value in zip(order, args):
        if name in bound:
            raise TypeError(f"{owner} got multiple values for argument '{name}'.")
        bound[name] = value
    return bound


def nni_signature(core: type, orders: Orders, choose: Callable[[Sequence[Any]], str]) -> type:
    """A subclass of ``core`` accepting NNI's positional orders (``choose`` picks one)."""
    def __init__(self, model, config_list, *args, **kwargs):
        order = orders[choose(args)]
        core.__init__(self, model, config_list, **keywords(type(self).__name__, args, kwargs, order))
    namespace = {'__init__': __init__, '__doc__': core.__doc__, '__module__': core.__module__,
                 'nni_orders': orders}
    compat = type(core.__name__, (core,), namespace)
    # The registry hands out the class users import, so get_pruner('l1') takes NNI's orders too.
    return register_pruner(core.registry_name, framework='torch')(compat) if core.registry_name else compat


def _third_is_optimizer(args: Sequence[Any]) -> str:
    return '1.x' if args and isinstance(args[0], torch.optim.Optimizer) else '2.x'


def _fourth_is(kind: type) -> Callable[[Sequence[Any]], str]:
    def choose(args: Sequence[Any]) -> str:
        return '1.x' if len(args) > 1 and isinstance(args[1], kind) and not isinstance(args[1], bool) else '2.x'
    return choose


_FILTER = {'1.x': ('optimizer', 'dependency_aware', 'dummy_input'), '2.x': ('dependency_aware', 'dummy_input')}
_ACTIVATION = {'1.x': ('optimizer', 'activation', 'statistics_batch_num'),
               '2.x': ('optimizer', 'trainer', 'criterion', 'activation', 'sparsifying_training_batches',
                       'dependency_aware', 'dummy_input')}
_TAYLOR = {'1.x': ('optimizer', 'statistics_batch_num'),
           '2.x': ('optimizer', 'trainer', 'criterion', 'sparsifying_training_batches', 'dependency_aware',
                   'dummy_input', 'global_sort')}
_AGP = {'1.x': ('optimizer', 'pruning_algorithm'),
        '2.x': ('optimizer', 'trainer', 'criterion', 'num_iterations', 'epochs_per_iteration', 'pruning_algorithm')}

L1FilterPruner = nni_signature(pruners.L1FilterPruner, _FILTER, _third_is_optimizer)
L2FilterPruner = nni_signature(pruners.L2FilterPruner, _FILTER, _third_is_optimizer)
FPGMPruner = nni_signature(pruners.FPGMPruner, _FILTER, _third_is_optimizer)
ActivationAPoZRankFilterPruner = nni_signature(data_pruners.ActivationAPoZRankFilterPruner, _ACTIVATION,
                                               _fourth_is(str))
ActivationMeanRankFilterPruner = nni_signature(data_pruners.ActivationMeanRankFilterPruner, _ACTIVATION,
                                               _fourth_is(str))
TaylorFOWeightFilterPruner = nni_signature(data_pruners.TaylorFOWeightFilterPruner, _TAYLOR, _fourth_is(int))
AGPPruner = nni_signature(agp.AGPPruner, _AGP, _fourth_is(str))
