"""Masks stay identical across 2 CPU processes under DistributedDataParallel (gloo)."""
from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from prunus.compression.torch import Pruning, WeightPruningConfig, broadcast_masks, get_masks

from ._digits import Digits, make_model


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group('gloo', rank=rank, world_size=world)
    try:
        digits = Digits(seed=0)
        model = DistributedDataParallel(make_model(0))
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
        config = WeightPruningConfig([{'op_names': ['fc'], 'pattern': '2:4', 'target_sparsity': 0.5},
                                      {'op_names': ['conv2'], 'pattern': 'unstructured'}],
                                     pruning_type='snip_momentum', target_sparsity=0.8, start_step=0,
                                     end_step=8, pruning_frequency=2, pruning_scope='global')
        pruning = Pruning(config, model)
        pruning.on_train_begin()
        loss_fn = torch.nn.CrossEntropyLoss()
        for step, (x, y) in enumerate(digits.batches(epoch=rank)):  # each rank its own batches
            if step == 10:
                break
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            pruning.on_before_optimizer_step()
            optimizer.step()
            pruning.on_step_end()
        # Different masks on each rank become rank 0's.
        own = {'layer': {'weight': (torch.rand(8, 8, generator=torch.Generator().manual_seed(rank)) > 0.5).float()}}
        synced = broadcast_masks(own)['layer']['weight']
        torch.save({'masks': get_masks(model), 'synced': synced,
                    'weights': {n: p.detach() for n, p in model.named_parameters()}},
                   os.path.join(out_dir, f'rank{rank}.pt'))
    finally:
        dist.destroy_process_group()


def test_masks_identical_on_two_gloo_processes(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    first, second = (torch.load(tmp_path / f'rank{r}.pt') for r in (0, 1))
    assert sorted(first['masks']) == ['module.conv2', 'module.fc1', 'module.fc2']
    for name, masks in first['masks'].items():
        assert torch.equal(masks['weight'], second['masks'][name]['weight']), name
        assert 0 < float(masks['weight'].mean()) < 1
    assert torch.equal(first['synced'], second['synced'])
    for name, weight in first['weights'].items():
        assert torch.equal(weight, second['weights'][name]), name
