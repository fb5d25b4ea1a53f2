"""Masks stay identical across 2 CPU processes under DistributedDataParallel (gloo).

DDP averages gradients, so gradient- and weight-based scores agree across ranks without
any help. Each scenario here therefore gives the ranks different scores on purpose (local
gradients under ``no_sync()``, activation statistics of each rank's own batches), and runs
twice: once as shipped, once with prunus' score averaging and mask broadcast replaced by
the identity. The control run must produce different masks on the two ranks (so this test
can fail), the real run identical ones.
"""
from __future__ import annotations

import contextlib
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from prunus.compression.torch import AGPPruner, Pruning, WeightPruningConfig, average_scores, get_masks
from prunus.compression.torch import agp, pruning_group

from prunus.testing.digits import Digits, make_model

SYNC_FUNCTIONS = [(module, name) for module in (agp, pruning_group)
                  for name in ('average_scores', 'broadcast_masks')]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _without_sync():
    """prunus' cross-rank synchronisation replaced by the identity (the control run)."""
    saved = [(module, name, getattr(module, name)) for module, name in SYNC_FUNCTIONS]
    try:
        for module, name in SYNC_FUNCTIONS:
            setattr(module, name, lambda value, *args, **kwargs: value)
        yield
    finally:
        for module, name, function in saved:
            setattr(module, name, function)


def _training_api_masks(rank: int, digits: Digits) -> dict:
    """snip_momentum on gradients that DDP does not average (accumulation under no_sync)."""
    model = DistributedDataParallel(make_model(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    config = WeightPruningConfig([{'op_names': ['fc'], 'pattern': '2:4', 'target_sparsity': 0.5},
                                  {'op_names': ['conv2'], 'pattern': 'unstructured'}],
                                 pruning_type='snip_momentum', target_sparsity=0.8, start_step=0,
                                 end_step=6, pruning_frequency=2, pruning_scope='global')
    pruning = Pruning(config, model)
    pruning.on_train_begin()
    loss_fn = torch.nn.CrossEntropyLoss()
    for step, (x, y) in enumerate(digits.batches(epoch=rank)):  # each rank its own batches
        if step == 8:
            break
        optimizer.zero_grad()
        with model.no_sync():
            loss_fn(model(x), y).backward()
        pruning.on_before_optimizer_step()
        optimizer.step()
        pruning.on_step_end()
    return get_masks(model)


def _agp_mean_activation(rank: int, digits: Digits) -> tuple[dict, dict]:
    """AGP + mean activation: statistics come from each rank's own batches."""
    model = DistributedDataParallel(make_model(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    config = [{'final_sparsity': 0.5, 'start_epoch': 0, 'end_epoch': 3, 'op_types': ['Conv2d']}]
    pruner = AGPPruner(model, config, optimizer, pruning_algorithm='mean_activation')
    pruner.compress()
    loss_fn = torch.nn.CrossEntropyLoss()
    for epoch in range(1, 3):
        for step, (x, y) in enumerate(digits.batches(epoch=10 * epoch + rank)):
            if step == 4:
                break
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()
        pruner.update_epoch(epoch)
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    return get_masks(model), weights


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group('gloo', rank=rank, world_size=world)
    try:
        digits = Digits(seed=0)
        result = {'mean': average_scores({'s': torch.tensor([float(rank), 4.0 * rank])})['s']}
        for label, context in (('control', _without_sync), ('synced', contextlib.nullcontext)):
            with context():
                result[label, 'api'] = _training_api_masks(rank, digits)
                result[label, 'agp'], result[label, 'weights'] = _agp_mean_activation(rank, digits)
        torch.save(result, os.path.join(out_dir, f'rank{rank}.pt'))
    finally:
        dist.destroy_process_group()


def _same(first: dict, second: dict) -> bool:
    return sorted(first) == sorted(second) and all(
        torch.equal(first[n]['weight'], second[n]['weight']) for n in first)


@pytest.fixture(scope='module')
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp('ddp')
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return [torch.load(out / f'rank{r}.pt') for r in (0, 1)]


def test_average_scores_is_the_mean_over_ranks(ranks):
    for result in ranks:
        assert torch.equal(result['mean'], torch.tensor([0.5, 2.0]))


@pytest.mark.parametrize('scenario', ['api', 'agp'])
def test_masks_identical_across_ranks_only_with_the_sync(ranks, scenario):
    first, second = ranks
    assert not _same(first['control', scenario], second['control', scenario])  # the test can fail
    synced = first['synced', scenario]
    assert _same(synced, second['synced', scenario])
    assert all(0 < float(m['weight'].mean()) < 1 for m in synced.values())
    if scenario == 'api':
        assert sorted(synced) == ['module.conv2', 'module.fc1', 'module.fc2']


def test_weights_stay_identical_under_ddp_with_synced_masks(ranks):
    first, second = ranks
    for name, weight in first['synced', 'weights'].items():
        assert torch.equal(weight, second['synced', 'weights'][name]), name
