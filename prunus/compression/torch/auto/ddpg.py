"""The DDPG actor-critic AMC uses to pick each layer's preserve ratio (Lillicrap et al., 2016)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ...rl import ReplayMemory


def _mlp(inputs: int, hidden1: int, hidden2: int, head: nn.Module | None) -> nn.Sequential:
    parts: list[nn.Module] = [nn.Linear(inputs, hidden1), nn.ReLU(), nn.Linear(hidden1, hidden2), nn.ReLU(),
                              nn.Linear(hidden2, 1)]
    return nn.Sequential(*parts, *([head] if head is not None else []))


class DDPGAgent:
    """Actor ``state -> action in (0, 1)`` and critic ``(state, action) -> value``, with
    target networks updated softly (``tau``) and a replay memory.

    Args:
        state_dim: length of a layer embedding.
        hidden1, hidden2: widths of both networks' hidden layers.
        lr_c, lr_a: critic and actor learning rates.
        tau: soft target-update rate.
        discount: reward discount (AMC uses 1: every step gets the episode's reward).
        rmsize: replay capacity in transitions.
        bsize: minibatch size.
        seed: initializes the networks without touching the global torch RNG.
    """

    def __init__(self, state_dim: int, hidden1: int = 300, hidden2: int = 300, lr_c: float = 1e-3,
                 lr_a: float = 1e-4, tau: float = 0.01, discount: float = 1.0, rmsize: int = 100,
                 bsize: int = 64, seed: int = 0):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.actor = _mlp(state_dim, hidden1, hidden2, nn.Sigmoid())
            self.critic = _mlp(state_dim + 1, hidden1, hidden2, None)
        self.actor_target = _copy(self.actor)
        self.critic_target = _copy(self.critic)
        self.actor_optim = torch.optim.Adam(self.actor.parameters(), lr=lr_a)
        self.critic_optim = torch.optim.Adam(self.critic.parameters(), lr=lr_c)
        self.tau, self.discount, self.bsize = tau, discount, bsize
        self.memory = ReplayMemory(rmsize, state_dim)

    @torch.no_grad()
    def act(self, state: np.ndarray) -> float:
        return float(self.actor(torch.as_tensor(state, dtype=torch.float32)[None])[0, 0])

    def update(self, rng: np.random.Generator) -> tuple[float, float]:
        """One critic and one actor step on a replay minibatch; returns both losses."""
        states, actions, rewards, next_states, terminals = (torch.as_tensor(a) for a in self.memory.sample(
            self.bsize, rng))
        with torch.no_grad():
            next_q = self.critic_target(torch.cat([next_states, self.actor_target(next_states)], dim=1))
            target = rewards + self.discount * (1 - terminals) * next_q
        critic_loss = nn.functional.mse_loss(self.critic(torch.cat([states, actions], dim=1)), target)
        self.critic_optim.zero_grad()
        critic_loss.backward()
        self.critic_optim.step()
        actor_loss = -self.critic(torch.cat([states, self.actor(states)], dim=1)).mean()
        self.actor_optim.zero_grad()
        actor_loss.backward()
        self.actor_optim.step()
        _soft_update(self.actor_target, self.actor, self.tau)
        _soft_update(self.critic_target, self.critic, self.tau)
        return float(critic_loss.detach()), float(actor_loss.detach())

    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name).state_dict() for name in
                ('actor', 'critic', 'actor_target', 'critic_target', 'actor_optim', 'critic_optim', 'memory')}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            getattr(self, name).load_state_dict(value)


def _copy(net: nn.Module) -> nn.Module:
    import copy
    clone = copy.deepcopy(net)
    clone.requires_grad_(False)
    return clone


@torch.no_grad()
def _soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    for t, s in zip(target.parameters(), source.parameters()):
        t.mul_(1 - tau).add_(s, alpha=tau)
