"""Calibration data for post-training pruning: batches, the model's blocks, and the
inputs of the first block, captured once.

A batch is a tensor (``model(batch)``), a tuple or list (``model(*batch)``) or a mapping
of keyword inputs (``model(**batch)``, as Hugging Face models take them, e.g. a
tokenizer's ``BatchEncoding``). Models whose forward takes ``use_cache`` are called with
``use_cache=False`` unless the batch says otherwise, so no key/value cache grows.

The *blocks* of a model are the children of the ``nn.ModuleList`` that holds most of the
layers to prune (``transformer.h`` of GPT-2, ``model.layers`` of Llama,
``encoder.layer`` of BERT). :func:`check_sequential` verifies on one batch that they run
in order, each once, each fed the previous one's output, which is what lets
:class:`BlockInputs` capture the first block's inputs once and then feed each block the
output of the pruned block before it.
"""
from __future__ import annotations

import inspect
from typing import Any, Iterable, Mapping

import torch
from torch import nn


class StopForward(Exception):
    """Raised by a hook to end a forward pass early once the wanted inputs are captured."""


def to_device(value: Any, device: torch.device | None) -> Any:
    """``value`` with every tensor inside it (tuples, lists, dicts) moved to ``device``."""
    if device is None:
        return value
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)) and not hasattr(value, '_fields'):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, Mapping):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def as_batches(calibration_data: Any, owner: str) -> list[Any]:
    """The calibration batches as a list (a generator can only be read once)."""
    if isinstance(calibration_data, (torch.Tensor, Mapping)) or not isinstance(calibration_data, Iterable):
        raise TypeError(f'{owner}: calibration_data must be an iterable of batches (tensors, tuples '
                        f'or dicts of keyword inputs); got {type(calibration_data).__name__}.')
    batches = list(calibration_data)
    if not batches:
        raise ValueError(f'{owner}: calibration_data is empty; give at least one batch.')
    for index, batch in enumerate(batches):
        if not isinstance(batch, (torch.Tensor, tuple, list, Mapping)):
            raise TypeError(f'{owner}: calibration_data[{index}] must be a tensor, a tuple of '
                            f'positional inputs or a dict of keyword inputs; got {type(batch).__name__}.')
    return batches


def _takes_use_cache(model: nn.Module) -> bool:
    try:
        return 'use_cache' in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def call_model(model: nn.Module, batch: Any, device: torch.device | None = None) -> Any:
    """Runs ``model`` on one batch in the batch's own calling convention."""
    batch = to_device(batch, device)
    extra = {'use_cache': False} if _takes_use_cache(model) else {}
    if isinstance(batch, Mapping):
        return model(**{**extra, **batch})
    if isinstance(batch, (tuple, list)):
        return model(*batch, **extra)
    return model(batch, **extra)


def call_until_stopped(model: nn.Module, batch: Any) -> None:
    """Runs ``model`` on ``batch``; a hook may end the pass early with :class:`StopForward`."""
    try:
        call_model(model, batch, input_device(model))
    except StopForward:
        pass


def input_device(model: nn.Module) -> torch.device | None:
    first = next(model.parameters(), None)
    return None if first is None else first.device


def find_blocks(model: nn.Module, targets: Iterable[str], blocks: Any, owner: str) -> list[str]:
    """Names of the model's blocks: given (a ModuleList's name or a list of names),
    found (the ModuleList whose children hold most targets), or none (``blocks=False``)."""
    modules = dict(model.named_modules())
    if blocks is False:
        return []
    if isinstance(blocks, str):
        container = modules.get(blocks)
        if not isinstance(container, (nn.ModuleList, nn.Sequential)):
            raise ValueError(f"{owner}: blocks='{blocks}' must name an nn.ModuleList or nn.Sequential "
                             'of the model.')
        return [f'{blocks}.{child}' for child, _ in container.named_children()]
    if blocks is not None:
        names = list(blocks)
        missing = [n for n in names if n not in modules]
        if missing or not names:
            raise ValueError(f"{owner}: blocks names no module '{missing[0] if missing else ''}'; "
                             'give module names of the model in execution order.')
        return names
    targets = list(targets)
    best: list[str] = []
    best_count = 0
    for name, module in modules.items():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        children = [f'{name}.{child}' for child, _ in module.named_children()]
        covered = sum(any(t.startswith(c + '.') for c in children) for t in targets)
        if covered > best_count:
            best, best_count = children, covered
    return best


def _first_tensor(args: tuple, kwargs: dict) -> torch.Tensor | None:
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    hidden = kwargs.get('hidden_states')
    return hidden if isinstance(hidden, torch.Tensor) else None


def block_output(output: Any) -> torch.Tensor:
    """The hidden state a block returns (the first element of a tuple output)."""
    while isinstance(output, (tuple, list)):
        output = output[0]
    if hasattr(output, 'last_hidden_state'):
        output = output.last_hidden_state
    return output


@torch.no_grad()
def check_sequential(model: nn.Module, blocks: list[nn.Module], batch: Any) -> str | None:
    """Why ``blocks`` cannot be processed one after another (None when they can)."""
    calls: list[tuple[int, torch.Tensor | None, Any]] = []
    handles = []
    for index, block in enumerate(blocks):
        def hook(module, args, kwargs, output, index=index):
            calls.append((index, _first_tensor(args, kwargs), block_output(output)))
        handles.append(block.register_forward_hook(hook, with_kwargs=True))
    try:
        call_model(model, batch, input_device(model))
    finally:
        for handle in handles:
            handle.remove()
    if [c[0] for c in calls] != list(range(len(blocks))):
        return 'they are not each called once, in order'
    for (_, _, previous), (index, hidden, _) in zip(calls, calls[1:]):
        if hidden is None or not isinstance(previous, torch.Tensor) or hidden.shape != previous.shape \
                or not torch.equal(hidden, previous):
            return f'block {index} is not fed the output of block {index - 1}'
    return None


@torch.no_grad()
def run_until_done(model: nn.Module, batches: list[Any], modules: list[nn.Module]) -> None:
    """Runs every batch through ``model`` for the hooks on ``modules``. When the first batch
    shows that each of them runs exactly once per batch, later batches stop as soon as the
    last of them has run: what follows (an LM head and its logits over the vocabulary) is
    neither needed nor computed."""
    calls: list[nn.Module] = []
    handles = [m.register_forward_hook(lambda module, args, output: calls.append(module)) for m in modules]
    try:
        call_model(model, batches[0], input_device(model))
    finally:
        for handle in handles:
            handle.remove()
    once = len(calls) == len(modules) and len({id(m) for m in calls}) == len(modules)
    handle = calls[-1].register_forward_hook(_raise_stop) if once else None
    try:
        for batch in batches[1:]:
            call_until_stopped(model, batch)
    finally:
        if handle is not None:
            handle.remove()


def _raise_stop(module: nn.Module, args: tuple, output: Any) -> None:
    raise StopForward


class BlockInputs:
    """The inputs of one block for every calibration batch: the hidden state, which
    changes from block to block, and the other arguments, which do not."""

    def __init__(self, store: torch.device | None):
        self.store = store
        self.hidden: list[torch.Tensor] = []
        self.rest: list[tuple[tuple, dict, bool]] = []  # (args, kwargs, hidden is positional)

    @torch.no_grad()
    def capture(self, model: nn.Module, first_block: nn.Module, batches: list[Any]) -> None:
        def grab(module, args, kwargs):
            positional = bool(args) and isinstance(args[0], torch.Tensor)
            hidden = args[0] if positional else kwargs['hidden_states']
            self.hidden.append(to_device(hidden.detach(), self.store))
            args = args[1:] if positional else args
            kwargs = {k: v for k, v in kwargs.items() if k != 'hidden_states'}
            self.rest.append((to_device(args, self.store), to_device(kwargs, self.store), positional))
            raise StopForward
        handle = first_block.register_forward_pre_hook(grab, with_kwargs=True)
        try:
            for batch in batches:
                call_until_stopped(model, batch)
        finally:
            handle.remove()

    @torch.no_grad()
    def run(self, block: nn.Module, device: torch.device | None, keep_outputs: bool) -> None:
        """Runs ``block`` on every captured input; with ``keep_outputs`` the outputs
        become the inputs of the next block."""
        outputs = []
        for hidden, (args, kwargs, positional) in zip(self.hidden, self.rest):
            hidden, args, kwargs = to_device(hidden, device), to_device(args, device), to_device(kwargs, device)
            if positional:
                output = block(hidden, *args, **kwargs)
            else:
                output = block(*args, hidden_states=hidden, **kwargs)
            if keep_outputs:
                outputs.append(to_device(block_output(output).detach(), self.store))
        if keep_outputs:
            self.hidden = outputs

    def nbytes(self) -> int:
        return sum(h.numel() * h.element_size() for h in self.hidden)

