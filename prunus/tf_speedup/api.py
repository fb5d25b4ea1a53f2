"""``speedup``: masks in, a smaller Keras model out; the user's model is never modified."""
from __future__ import annotations

from collections import Counter
from typing import Any, Mapping

import keras
import numpy as np

from prunus.layers.tf.masking import masked_variables, load_masks
from .analysis import Analysis, require_graph
from prunus.layers.tf.handlers import HANDLERS, LayerHandler
from .rebuild import Rebuilder


def _as_masks(masks: Any) -> Mapping[str, Mapping[str, np.ndarray]]:
    if isinstance(masks, str):
        return load_masks(masks)
    if hasattr(masks, 'get_masks'):
        return masks.get_masks()
    if isinstance(masks, Mapping):
        return masks
    raise TypeError(f'masks must be a mask dict, a mask file path or a pruner; '
                    f'got {type(masks).__name__}.')


def _masked_copy(model: keras.Model, masks) -> keras.Model:
    """A clone of ``model`` with the masks multiplied into its weights."""
    require_graph(model)
    work = keras.models.clone_model(model)
    work.set_weights(model.get_weights())
    for _, _, variable, mask in masked_variables(work, masks):
        variable.assign(variable.numpy() * mask)
    return work


def _summary(analysis: Analysis, before: keras.Model, after: keras.Model) -> dict[str, Any]:
    rows, unremoved = [], Counter()
    roots = {}
    for i, reason in analysis.blocked.items():
        roots.setdefault(analysis.find(i), reason)
    counted = set()
    for plan in analysis.plans.values():
        if plan.role != 'mixing':
            continue
        keep = analysis.kept(plan.out_ids)
        rows.append({'layer': plan.layer.name, 'type': type(plan.layer).__name__,
                     'channels_before': int(len(keep)), 'channels_after': int(keep.sum())})
        for i in _pruned(plan, keep):
            counted.add(analysis.find(i))
            unremoved[roots.get(analysis.find(i), 'kept')] += 1
    for plan in analysis.plans.values():
        # A tied layer's own pruned channels (a zero BatchNorm scale, a masked depthwise
        # filter) count once, unless a pruned producer of the same group counted already.
        if plan.role == 'tied' and plan.out_ids is not None:
            for i in _pruned(plan, analysis.kept(plan.out_ids)):
                if analysis.find(i) not in counted:
                    counted.add(analysis.find(i))
                    unremoved[roots.get(analysis.find(i), 'kept')] += 1
    return {'layers': rows, 'params_before': before.count_params(),
            'params_after': after.count_params(), 'pruned_but_kept': dict(unremoved)}


def _pruned(plan, keep: np.ndarray) -> list[int]:
    """Ids of the layer's output channels its (masked) weights make constant but are kept."""
    weights = {v.name: v.numpy() for v in getattr(plan.layer, 'weights', ())}
    pruned = plan.handler.dead_out(plan.layer, weights)
    if pruned is None or len(pruned) != len(keep):
        return []
    return plan.out_ids[pruned & keep].tolist()


def speedup(model: keras.Model, masks: Any, custom_handlers: Mapping[str, LayerHandler] | None = None,
            return_summary: bool = False):
    """Returns a new Keras model with the masked channels physically removed.

    Args:
        model: a Functional or Sequential model (nested models inside are rebuilt too).
        masks: ``{layer_name: {'weight': array, 'bias': array}}``, a mask file written by
            ``export_model``/``save_masks``, or a pruner.
        custom_handlers: extra or replacement handlers by Keras class name.
        return_summary: also return a dict with per-layer channels before/after, params
            before/after and, per reason, how many pruned channels had to be kept.

    Raises:
        SpeedupError: a layer could not be analysed or rebuilt (the error names it); the
            given model is unchanged in every case.

    Example::

        small = speedup(model, pruner.get_masks())
        small.save('small.keras')
    """
    handlers = {**HANDLERS, **(custom_handlers or {})}
    work = _masked_copy(model, _as_masks(masks))
    analysis = Analysis(handlers)
    analysis.run(work)
    small = Rebuilder(analysis).build(work)
    if return_summary:
        return small, _summary(analysis, model, small)
    return small
