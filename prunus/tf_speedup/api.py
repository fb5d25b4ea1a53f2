"""``speedup``: masks in, a smaller Keras model out; the user's model is never modified."""
from __future__ import annotations

import os
from collections import Counter
from typing import Any, Mapping

import keras
import numpy as np

from prunus.compression.errors import SpeedupError
from prunus.compression.mask_rules import not_masks
from prunus.layers.tf.constants import DECAY
from prunus.layers.tf.masking import masked_variables, load_masks
from .analysis import Analysis, require_graph
from prunus.layers.tf.handlers import HANDLERS, LayerHandler, layer_weights
from .inputs import check_custom_handlers, check_example_inputs
from .rebuild import Rebuilder, from_config
from .train_constants import offset_decay, train_mode_constants
from .verify import check_result, synthetic_inputs


def _as_masks(masks: Any) -> tuple[Mapping[str, Mapping[str, np.ndarray]], str]:
    """The mask dict and how errors name its source."""
    if isinstance(masks, (str, os.PathLike)):
        return load_masks(os.fspath(masks)), f"mask file '{os.fspath(masks)}'"
    if hasattr(masks, 'get_masks'):
        return masks.get_masks(), f'{type(masks).__name__}.get_masks()'
    if isinstance(masks, Mapping):
        return masks, 'masks'
    raise not_masks(masks)


def _masked_copy(model: keras.Model, masks, source: str) -> keras.Model:
    """A clone of ``model`` with the masks multiplied into its weights (every mask is
    checked against ``model`` first)."""
    require_graph(model)
    masked_variables(model, masks, source)
    try:
        work = keras.models.clone_model(model, clone_function=lambda layer: from_config(layer, layer.get_config()))
        work.set_weights(model.get_weights())
    except Exception as exc:
        raise SpeedupError(f"speedup cannot copy '{model.name}' to work on: {type(exc).__name__}: "
                           f'{str(exc).splitlines()[0][:200] if str(exc) else ""}; the model is unchanged.') from exc
    for _, _, variable, mask in masked_variables(work, masks, source):
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
    heads = {}
    for plan in analysis.plans.values():
        if plan.role == 'inner' and 'num_heads' in plan.layer.get_config():
            new = _layer_named(after, plan.layer.name)
            old_n, new_n = plan.layer.get_config()['num_heads'], new.get_config()['num_heads']
            if old_n != new_n:
                heads[plan.name] = (old_n, new_n)
    return {'layers': rows, 'params_before': before.count_params(),
            'params_after': after.count_params(), 'pruned_but_kept': dict(unremoved),
            'heads': heads}


def _layer_named(model: keras.Model, name: str):
    for layer in model.layers:
        if layer.name == name:
            return layer
        if isinstance(layer, keras.Model):
            found = _layer_named(layer, name)
            if found is not None:
                return found
    return None


def _pruned(plan, keep: np.ndarray) -> list[int]:
    """Ids of the layer's output channels its (masked) weights make constant but are kept."""
    weights = layer_weights(plan.layer)
    pruned = plan.handler.dead_out(plan.layer, weights)
    if pruned is None or len(pruned) != len(keep):
        return []
    return plan.out_ids[pruned & keep].tolist()


def speedup(model: keras.Model, masks: Any, custom_handlers: Mapping[str, LayerHandler] | None = None,
            return_summary: bool = False, *, example_inputs: Any = None, check: bool = True,
            tolerance: float = 1e-4):
    """Returns a new Keras model with the masked channels physically removed.

    Args:
        model: a Functional or Sequential model (nested models inside are rebuilt too).
        masks: ``{layer_name: {'weight': array, 'bias': array}}``, a mask file written by
            ``export_model``/``save_masks``, or a pruner.
        custom_handlers: extra or replacement handlers by Keras class name.
        return_summary: also return a dict with per-layer channels before/after, params
            before/after and, per reason, how many pruned channels had to be kept.
        example_inputs: inputs to check the result on (default: random ones built from
            the model's input specs, integer inputs 0/1).
        check: run the masked and the sped-up model and compare (the default), as the
            PyTorch speedup does; a difference above ``tolerance`` of the output scale,
            or a NaN, raises SpeedupError instead of returning a wrong model.

    Raises:
        SpeedupError: a layer could not be analysed or rebuilt (the error names it); the
            given model is unchanged in every case.

    Example::

        small = speedup(model, pruner.get_masks())
        small.save('small.keras')
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not tolerance >= 0:
        raise ValueError(f'speedup: tolerance must be a number >= 0; got {tolerance!r}.')
    require_graph(model)
    handlers = {**HANDLERS, **check_custom_handlers(custom_handlers)}
    inputs = None
    if check:
        inputs = synthetic_inputs(model) if example_inputs is None else check_example_inputs(model, example_inputs)
    work = _masked_copy(model, *_as_masks(masks))
    analysis = Analysis(handlers)
    analysis.run(work)
    mixing = {key for key, plan in analysis.plans.items() if plan.role == 'mixing'}
    train = train_mode_constants(work, mixing)
    small = Rebuilder(analysis, train, offset_decay(work, DECAY)).build(work)
    if check:
        check_result(work, small, inputs, tolerance, synthetic=example_inputs is None)
    if return_summary:
        return small, _summary(analysis, model, small)
    return small
