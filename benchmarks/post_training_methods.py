"""The pruning methods of the post-training benchmark, each as ``prune(model, calibration,
targets, pattern, block_class)``: prunus's magnitude, Wanda and SparseGPT, and the peers'
(llmcompressor's ``oneshot`` with its Wanda and SparseGPT modifiers; torchao's
``WandaSparsifier``). Each method's packages are imported (:data:`IMPORTS`) before its
pruning call is timed, so no method's time includes importing its library."""
from __future__ import annotations

import importlib
import re

import torch


def _entry(targets):
    return [{'sparsity': 0.5, 'op_names': list(targets)}]


def prunus_magnitude(model, calibration, targets, pattern, block_class):
    from prunus.compression.torch import LevelPruner, Pruning, WeightPruningConfig
    if pattern == 'unstructured':
        LevelPruner(model, _entry(targets)).compress()
        return
    # N:M magnitude is the training API's pattern at its final step.
    names = ['^' + re.escape(t) + '$' for t in targets]
    config = WeightPruningConfig([{'op_names': names}], pruning_type='magnitude', pattern=pattern,
                                 target_sparsity=0.5, start_step=0, end_step=0, pruning_op_types=['Linear'])
    pruning = Pruning(config, model)
    pruning.on_train_begin()
    pruning.on_step_end()


def prunus_wanda(model, calibration, targets, pattern, block_class):
    from prunus.compression.torch import WandaPruner
    WandaPruner(model, _entry(targets), calibration, pattern=pattern, progress=False).compress()


def prunus_sparsegpt(model, calibration, targets, pattern, block_class):
    from prunus.compression.torch import SparseGPTPruner
    SparseGPTPruner(model, _entry(targets), calibration, pattern=pattern, progress=False).compress()


def prunus_wanda_one_pass(model, calibration, targets, pattern, block_class):
    """Wanda from one pass of the dense model (as torchao does), no block propagation."""
    from prunus.compression.torch import WandaPruner
    WandaPruner(model, _entry(targets), calibration, pattern=pattern, progress=False, blocks=False).compress()


def _llmcompressor(modifier_name, model, calibration, targets, pattern, block_class):
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.obcq import SparseGPTModifier
    from llmcompressor.modifiers.pruning import WandaPruningModifier
    columns = {key: [b[key][0].tolist() for b in calibration] for key in calibration[0]}
    modifier = {'wanda': WandaPruningModifier, 'sparsegpt': SparseGPTModifier}[modifier_name]
    structure = '0:0' if pattern == 'unstructured' else pattern
    recipe = modifier(sparsity=0.5, mask_structure=structure,
                      targets=['re:^(' + '|'.join(re.escape(t) for t in targets) + ')$'])
    oneshot(model=model, dataset=Dataset.from_dict(columns), recipe=[recipe],
            num_calibration_samples=len(calibration), max_seq_length=calibration[0]['input_ids'].shape[1],
            sequential_targets=[block_class])


def llmc_wanda(model, calibration, targets, pattern, block_class):
    _llmcompressor('wanda', model, calibration, targets, pattern, block_class)


def llmc_sparsegpt(model, calibration, targets, pattern, block_class):
    _llmcompressor('sparsegpt', model, calibration, targets, pattern, block_class)


@torch.no_grad()
def torchao_wanda(model, calibration, targets, pattern, block_class):
    from torchao.sparsity import WandaSparsifier
    sparsifier = WandaSparsifier(sparsity_level=0.5, semi_structured_block_size=None if pattern == 'unstructured' else 4)
    sparsifier.prepare(model, [{'tensor_fqn': f'{t}.weight'} for t in targets])
    for batch in calibration:
        model(**batch)
    sparsifier.step()
    sparsifier.squash_mask()


METHODS = {
    'magnitude': ('prunus', prunus_magnitude),
    'wanda': ('prunus', prunus_wanda),
    'wanda-one-pass': ('prunus', prunus_wanda_one_pass),
    'sparsegpt': ('prunus', prunus_sparsegpt),
    'llmcompressor-wanda': ('peer', llmc_wanda),
    'llmcompressor-sparsegpt': ('peer', llmc_sparsegpt),
    'torchao-wanda': ('peer', torchao_wanda),
}

#: The modules each method imports, loaded before timing (``warm_imports``).
IMPORTS = {
    'prunus': ['prunus.compression.torch'],
    'llmcompressor': ['datasets', 'llmcompressor', 'llmcompressor.modifiers.obcq', 'llmcompressor.modifiers.pruning'],
    'torchao': ['torchao.sparsity'],
}


def warm_imports(method: str) -> None:
    """Imports the libraries ``method`` uses, so its timed call does not."""
    library = method.split('-')[0] if METHODS[method][0] == 'peer' else 'prunus'
    for name in IMPORTS[library]:
        importlib.import_module(name)
