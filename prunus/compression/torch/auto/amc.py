"""AMC: a DDPG agent chooses each layer's preserve ratio under a FLOPs budget (He et al., 2018)."""
from __future__ import annotations

import math
import warnings
import os
from typing import Any, Mapping, Callable

import numpy as np
import torch
from torch import nn

from ...config import ConfigSpec
from ...history import SearchHistory
from ...registry import register_pruner
from ...rl import MovingAverage, normalize_columns, truncated_normal
from prunus.layers.torch import specs
from ..collect import split_batch
from ..flops import call_model
from .base import AutoPruner
from .ddpg import DDPGAgent

REWARDS = ('acc_reward', 'acc_flops_reward')


def first_input(val_loader: Any) -> Any:
    """One example from the first batch of ``val_loader`` (the dummy input for FLOPs)."""
    try:
        batches = iter(val_loader)
    except TypeError:
        raise TypeError(f'AMCPruner: val_loader must be an iterable of batches; got {type(val_loader).__name__}.') from None
    first = next(batches, None)
    if first is None:
        raise ValueError('AMCPruner: val_loader yields no batch; the evaluator and the FLOPs count need '
                         'at least one (an empty dataset, or drop_last with fewer samples than batch_size?).')
    inputs = split_batch(first)[0]
    return inputs[:1] if isinstance(inputs, torch.Tensor) else inputs


#: NNI's AMC arguments prunus accepts but does not use, with NNI's defaults: the per-layer
#: least-squares reconstruction of the next layer's weights (n_calibration_batches,
#: n_points_per_layer) is not done, and the others only named NNI's log folders or tuned
#: its own agent's bookkeeping.
IGNORED_DEFAULTS = {'suffix': None, 'model_type': 'mobilenet', 'dataset': 'cifar10', 'n_calibration_batches': 60,
                    'n_points_per_layer': 10, 'window_length': 1, 'max_episode_length': 1e9, 'debug': False,
                    'epsilon': 50000}


def _warn_ignored(owner: str, **given: Any) -> None:
    changed = [k for k, v in given.items() if v != IGNORED_DEFAULTS[k]]
    if changed:
        warnings.warn(f"{owner}: {', '.join(changed)} {'is' if len(changed) == 1 else 'are'} accepted for NNI "
                      'compatibility and ignored (prunus does not reconstruct weights by least squares; '
                      'the others only named NNI log folders or its agent bookkeeping).', UserWarning, stacklevel=3)


@register_pruner('amc', framework='torch')
class AMCPruner(AutoPruner):
    """AutoML for Model Compression: reinforcement learning of per-layer channel pruning.

    Layer by layer, a DDPG agent reads the layer's embedding (index, channels in/out,
    input size, stride, kernel, its FLOPs, FLOPs already removed and still to come, the
    previous action) and outputs a preserve ratio in ``[lbound, rbound]``. The ratio is
    capped so that the FLOPs budget stays reachable with every later layer at ``lbound``
    (the paper's constrained action space), and rounded to ``channel_round`` channels.
    After the last layer the allocation is placed onto the budget (``flops_ratio`` of the
    dense FLOPs, as the speedup will leave it), masks are chosen by ``base_algo`` (L1 by
    default), and ``evaluator(val_loader, model)`` gives the reward. The first ``warmup``
    episodes act randomly; afterwards exploration noise decays by ``delta_decay``.

    Only layers whose channels the speedup can remove are searched: layers that shrink
    alone, and each group of residual-tied convs as one step (its embedding is that of
    the group's first member, with the FLOPs of all members). The classifier (the model
    output) is left dense. An entry with ``'granularity': 'head'`` makes each attention
    it selects one step whose action is the fraction of heads kept (rounded to whole
    heads, not to ``channel_round``; see :mod:`.head_units`).

    Differences from the paper: channels are selected by ``base_algo`` without the
    least-squares weight reconstruction, so ``n_calibration_batches`` and
    ``n_points_per_layer`` are accepted for compatibility and unused; likewise
    ``suffix``, ``model_type``, ``dataset``, ``window_length``, ``max_episode_length``,
    ``epsilon`` and ``debug``. Episodes are sequential (each depends on the agent's last
    update), so AMC takes no executor. A rerun in the same ``output_dir`` replays the
    recorded episodes from the history instead of evaluating them again.

    Example::

        pruner = AMCPruner(model, [{'op_types': ['Conv2d', 'Linear']}], evaluator, val_loader,
                           flops_ratio=0.5, train_episode=100, warmup=20)
        model = pruner.compress()
    """

    config_spec = ConfigSpec(targets=(), extra=('granularity',))
    supported_types = specs.FILTERED
    default_types = specs.CONV + (nn.Linear,)

    def __init__(self, model: nn.Module, config_list: list[dict], evaluator: Callable, val_loader: Any,
                 suffix: str | None = None, model_type: str = 'mobilenet', dataset: str = 'cifar10',
                 flops_ratio: float = 0.5, lbound: float = 0.2, rbound: float = 1.0, reward: str = 'acc_reward',
                 n_calibration_batches: int = 60, n_points_per_layer: int = 10, channel_round: int = 8,
                 hidden1: int = 300, hidden2: int = 300, lr_c: float = 1e-3, lr_a: float = 1e-4,
                 warmup: int = 100, discount: float = 1.0, bsize: int = 64, rmsize: int = 100,
                 window_length: int = 1, tau: float = 0.01, init_delta: float = 0.5, delta_decay: float = 0.99,
                 max_episode_length: float = 1e9, output_dir: str | os.PathLike = './logs', debug: bool = False,
                 train_episode: int = 800, epsilon: int = 50000, seed: int | None = None, *,
                 dummy_input: Any = None, base_algo: str = 'l1', progress: bool = True):
        super().__init__(model, config_list)
        owner = type(self).__name__
        if not callable(evaluator):
            raise TypeError(f'{owner}: evaluator must be callable as evaluator(val_loader, model); '
                            f'got {type(evaluator).__name__}.')
        if not 0 < flops_ratio < 1:
            raise ValueError(f'{owner}: flops_ratio must be in (0, 1); got {flops_ratio}.')
        if not 0 < lbound <= rbound <= 1:
            raise ValueError(f'{owner}: need 0 < lbound <= rbound <= 1; got lbound={lbound}, rbound={rbound}.')
        if reward not in REWARDS:
            raise ValueError(f'{owner}: reward must be one of {REWARDS}; got {reward!r}.')
        for key, value in (('train_episode', train_episode), ('channel_round', channel_round),
                           ('bsize', bsize), ('rmsize', rmsize)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f'{owner}: {key} must be an integer >= 1; got {value!r}.')
        _warn_ignored(owner, suffix=suffix, model_type=model_type, dataset=dataset,
                      n_calibration_batches=n_calibration_batches, n_points_per_layer=n_points_per_layer,
                      window_length=window_length, max_episode_length=max_episode_length, debug=debug,
                      epsilon=epsilon)
        self.val_loader, self.flops_ratio = val_loader, flops_ratio
        self.lbound, self.rbound, self.reward_kind = lbound, rbound, reward
        self.channel_round, self.train_episode, self.warmup = channel_round, train_episode, warmup
        self.init_delta, self.delta_decay = init_delta, delta_decay
        self.agent_args = dict(hidden1=hidden1, hidden2=hidden2, lr_c=lr_c, lr_a=lr_a, tau=tau, discount=discount,
                               bsize=bsize)
        self.rmsize = rmsize
        probe = first_input(val_loader)  # an empty loader fails here, not deep in the search
        self._setup(evaluator, base_algo, output_dir, seed=0 if seed is None else seed, budget='flops',
                    dummy_input=probe if dummy_input is None else dummy_input,
                    max_sparsity_per_layer=1 - lbound, progress=progress)

    def _single_target(self) -> float:
        return 1.0 - self.flops_ratio

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), 'flops_ratio': self.flops_ratio, 'bounds': [self.lbound, self.rbound],
                'reward': self.reward_kind, 'channel_round': self.channel_round, 'episodes': self.train_episode,
                'warmup': self.warmup, 'agent': self.agent_args, 'delta': [self.init_delta, self.delta_decay]}

    # -- environment ----------------------------------------------------------------------
    def _static_embedding(self, names: list[str]) -> np.ndarray:
        shapes: dict[str, tuple[int, ...]] = {}
        modules = dict(self.bound_model.named_modules())
        def record(module: nn.Module, args: tuple, output: Any, name: str) -> None:
            if args and isinstance(args[0], torch.Tensor):  # an attention may be called by keyword
                shapes.setdefault(name, tuple(args[0].shape))
        handles = [modules[n].register_forward_hook(lambda m, a, o, n=n: record(m, a, o, n)) for n in names]
        was_training = self.bound_model.training
        try:
            with torch.no_grad():
                call_model(self.bound_model.eval(), self.dummy_input)
        finally:
            self.bound_model.train(was_training)
            for handle in handles:
                handle.remove()
        rows = []
        for t, name in enumerate(names):
            m, shape = modules[name], shapes.get(name, (1, 1))
            conv = isinstance(m, nn.modules.conv._ConvNd)
            h, w = (shape[-2], shape[-1]) if conv and len(shape) >= 4 else (1, 1)
            in_ch = m.in_channels if conv else getattr(m, 'in_features', shape[-1])  # an attention: its width
            stride = m.stride[0] if conv else 1
            kernel = m.kernel_size[0] if conv else 1
            rows.append([t, in_ch, self.cost.channels[name], h, w, stride, kernel, self._unit_flops(name)])
        return normalize_columns(np.array(rows))

    def _unit_flops(self, name: str) -> int:
        """FLOPs of the layers the action for ``name`` prunes (every member of a tied unit)."""
        return self.cost.unit_flops(name, self.members(name))

    def _state(self, static: np.ndarray, t: int, names: list[str], decided: dict[str, float],
               previous: float) -> np.ndarray:
        total = self.cost.total_flops
        reduced = (total - self.cost.flops(decided)) / total
        rest = sum(self._unit_flops(n) for n in names[t + 1:]) / total
        return np.concatenate([static[t], [reduced, rest, previous]]).astype(np.float32)

    def _max_preserve(self, t: int, names: list[str], decided: dict[str, float]) -> float:
        """The largest preserve ratio of layer ``t`` that keeps the budget reachable when
        every later layer preserves only ``lbound``."""
        budget = self.flops_ratio * self.cost.total_flops
        later = {n: 1 - self.lbound for n in names[t + 1:]}

        def fits(ratio: float) -> bool:
            return self.cost.flops({**decided, names[t]: 1 - ratio, **later}) <= budget
        if fits(self.rbound):
            return self.rbound
        low, high = self.lbound, self.rbound
        for _ in range(16):
            mid = (low + high) / 2
            low, high = (mid, high) if fits(mid) else (low, mid)
        return low

    def _round(self, name: str, ratio: float, cap: float) -> float:
        """Sparsity keeping a multiple of ``channel_round`` channels, never above ``cap``."""
        count = self.cost.channels[name]
        step = 1 if name in self.head_units else min(self.channel_round, count)  # heads are whole units
        keep = int(math.ceil(ratio * count / step) * step)
        if keep > cap * count + 1e-9:
            keep = int(math.floor(cap * count / step) * step)
        keep = min(count, max(1, keep))
        return 1.0 - keep / count

    def fit_budget(self, raw: Mapping[str, float]) -> dict[str, float]:
        """As the base, but ``flops_ratio`` is a ceiling, as in AMC: the allocation nearest
        the budget among those that keep no more FLOPs than allowed."""
        allocation = dict(super().fit_budget(raw))
        units = {n: self.units(n) for n in allocation}
        target = self.target_sparsity - 1e-9
        for _ in range(sum(units.values())):
            if self.measure(allocation) >= target:
                break
            moves = [m for m in self._moves(allocation, units, (1,)) if self.measure(m) > self.measure(allocation)]
            if not moves:
                return allocation
            reaching = [m for m in moves if self.measure(m) >= target]
            allocation = (min(reaching, key=self.measure) if reaching else max(moves, key=self.measure))
        # then back towards the ceiling, one channel (or one channel traded) at a time
        for _ in range(sum(units.values())):
            closer = [m for m in self._moves(allocation, units, (-1, (1, -1)))
                      if target <= self.measure(m) < self.measure(allocation) - 1e-12]
            if not closer:
                break
            allocation = min(closer, key=self.measure)
        return allocation

    def _moves(self, allocation: dict[str, float], units: dict[str, int], kinds: tuple) -> list[dict[str, float]]:
        """Allocations one unit away (``1``, ``-1``) or one unit traded between two layers."""
        names, out = list(allocation), []

        def ok(value: float) -> bool:
            return -1e-12 <= value <= self.max_sparsity + 1e-12
        for kind in kinds:
            if isinstance(kind, int):
                out += [{**allocation, n: allocation[n] + kind / units[n]} for n in names
                        if ok(allocation[n] + kind / units[n])]
            elif len(names) <= 24:  # pairs only where they stay cheap
                out += [{**allocation, a: allocation[a] + 1 / units[a], b: allocation[b] - 1 / units[b]}
                        for a in names for b in names
                        if a != b and ok(allocation[a] + 1 / units[a]) and ok(allocation[b] - 1 / units[b])]
        return out

    def reward(self, score: float, allocation: dict[str, float]) -> float:
        """The agent's reward for an allocation that scored ``score``."""
        if self.reward_kind == 'acc_flops_reward':
            return -(1.0 - score) * math.log(max(self.cost.flops(allocation), 1.0))
        return score

    # -- search -----------------------------------------------------------------------------
    def _episode(self, agent: DDPGAgent, names: list[str], static: np.ndarray, episode: int,
                 rng: np.random.Generator) -> tuple[dict[str, float], list[tuple[np.ndarray, float]]]:
        decided: dict[str, float] = {}
        steps, previous = [], 0.0
        delta = self.init_delta * self.delta_decay ** max(0, episode - self.warmup)
        for t, name in enumerate(names):
            state = self._state(static, t, names, decided, previous)
            if episode < self.warmup:
                action = float(rng.uniform(self.lbound, self.rbound))
            else:
                action = truncated_normal(agent.act(state), delta, self.lbound, self.rbound, rng)
            action = min(action, self._max_preserve(t, names, decided))
            decided[name] = self._round(name, action, self._max_preserve(t, names, decided))
            steps.append((state, action))
            previous = action
        return decided, steps

    def search(self) -> tuple[dict[str, float], float]:
        """Train the agent; returns the best allocation found and its score."""
        history = SearchHistory(self.experiment_data_dir, 'amc', self.settings())
        names = self.searchable()
        floor = self.cost.flops({n: 1 - self.lbound for n in names}) / self.cost.total_flops
        if floor > self.flops_ratio:
            raise ValueError(f'AMCPruner: flops_ratio={self.flops_ratio} is unreachable with lbound={self.lbound}: '
                             f'the searchable layers ({len(names)}) at lbound leave {floor:.3f} of the FLOPs. '
                             'Lower lbound or select more layers.')
        static = self._static_embedding(names)
        rng = np.random.default_rng(self.seed)
        agent = DDPGAgent(static.shape[1] + 3, rmsize=self.rmsize * len(names), seed=self.seed, **self.agent_args)
        baseline = MovingAverage()
        with self.progress_bar(self.train_episode, 'amc') as bar:
            for episode in range(self.train_episode):
                decided, steps = self._episode(agent, names, static, episode, rng)
                allocation = self.fit_budget(decided)
                score = self.evaluate([allocation], history, evaluator_args=(self.val_loader,),
                                      extra={'round': episode})[0][0]
                self.note_best(bar, allocation, score)
                reward = self.reward(score, allocation)
                advantage = reward - baseline.update(reward)
                for t, (state, action) in enumerate(steps):
                    following = steps[t + 1][0] if t + 1 < len(steps) else state
                    agent.memory.append(state, action, advantage, following, t + 1 == len(steps))
                if episode >= self.warmup and len(agent.memory) >= agent.bsize:
                    for _ in steps:
                        agent.update(rng)
                bar.update(1)
        self._history, self.agent = history, agent
        return dict(self.best_allocation), float(self.best_score)

    def compress(self) -> nn.Module:
        allocation, score = self.search()
        return self.finish(self._history, allocation, score)
