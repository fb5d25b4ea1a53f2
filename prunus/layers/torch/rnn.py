"""Speedup handler for nn.LSTM, nn.GRU and nn.RNN: input features and hidden units.

Input features are the columns of the first layer's input weights (both directions);
a removed constant input folds into ``bias_ih_l0``. Output channels are the last layer's
hidden units, ``[forward | backward]``. ``hidden_size`` is one number for every layer and
direction, so a hidden unit position goes from *every* layer of its direction together
(its gate rows, its recurrent rows and columns, the next layer's input columns), and
both directions lose the same number. A unit is removable when its candidate gate
(LSTM ``g``, GRU ``n``, RNN the only one) has all-zero rows and biases in every layer of
its direction: its cell (or hidden) state then stays zero from the zero initial state,
so it adds nothing anywhere. The final states ``h_n``/``c_n`` carry the same channel
labels, so a layer reading them shrinks with the output; explicit initial states keep
every unit (their width is fixed by whoever made them).
"""
from __future__ import annotations

import torch
from torch import nn

from prunus.layers.torch.handlers import HANDLERS, Handler, replace_tensor as _set, take as _take


_GATES = {'LSTM': 4, 'GRU': 3}
_CANDIDATE = {'LSTM': 2, 'GRU': 2}  # LSTM gates i, f, g, o; GRU r, z, n


def _gates(module: nn.Module) -> int:
    return _GATES.get(module.mode, 1)


def _names(module: nn.Module, layer: int, direction: int) -> tuple[str, str, str, str]:
    sfx = f'_l{layer}' + ('_reverse' if direction else '')
    return f'weight_ih{sfx}', f'weight_hh{sfx}', f'bias_ih{sfx}', f'bias_hh{sfx}'


class RNNHandler(Handler):
    """nn.LSTM / nn.GRU / nn.RNN (no LSTM projections)."""

    in_dim = -1
    out_dim = -1

    def handles(self, module):
        return getattr(module, 'proj_size', 0) == 0

    def _dirs(self, module) -> int:
        return 2 if module.bidirectional else 1

    def count_in(self, module):
        return module.input_size

    def count_out(self, module):
        return self._dirs(module) * module.hidden_size

    def groups(self, module):
        return 1, self._dirs(module), False

    def _dead_units(self, module, direction: int) -> torch.Tensor:
        h, dead = module.hidden_size, torch.ones(module.hidden_size, dtype=torch.bool)
        gate = _CANDIDATE.get(module.mode, 0)
        for layer in range(module.num_layers):
            for name in _names(module, layer, direction):
                t = getattr(module, name, None)
                if t is None:
                    continue
                rows = t.detach()[gate * h:(gate + 1) * h].reshape(h, -1)
                dead &= (rows == 0).all(1).cpu()
        return dead

    def dead_out(self, module):
        return torch.cat([self._dead_units(module, d) for d in range(self._dirs(module))])

    def prune_in(self, module, keep):
        for direction in range(self._dirs(module)):
            name = _names(module, 0, direction)[0]
            _set(module, name, _take(getattr(module, name).data, 1, keep))
        module.input_size = len(keep)
        module._init_flat_weights()

    def can_fold(self, module, values):
        return module.bias or bool((values == 0).all())

    def fold_in(self, module, removed, values):
        if not bool(values.any()):
            return
        for direction in range(self._dirs(module)):
            w_name, _, b_name, _ = _names(module, 0, direction)
            w = getattr(module, w_name).data
            extra = w[:, removed.to(w.device)] @ values.to(w.device, w.dtype)
            _set(module, b_name, getattr(module, b_name).data + extra)
        module._init_flat_weights()

    def prune_out(self, module, keep):
        h, dirs, g = module.hidden_size, self._dirs(module), _gates(module)
        units = [keep[(keep >= d * h) & (keep < (d + 1) * h)] - d * h for d in range(dirs)]
        gate_rows = [torch.cat([units[d] + k * h for k in range(g)]) for d in range(dirs)]
        next_cols = torch.cat([units[d] + d * h for d in range(dirs)])
        for layer in range(module.num_layers):
            for d in range(dirs):
                w_ih, w_hh, b_ih, b_hh = _names(module, layer, d)
                new_ih = _take(getattr(module, w_ih).data, 0, gate_rows[d])
                if layer > 0:
                    new_ih = _take(new_ih, 1, next_cols)
                _set(module, w_ih, new_ih)
                _set(module, w_hh, _take(_take(getattr(module, w_hh).data, 0, gate_rows[d]), 1, units[d]))
                for b in (b_ih, b_hh):
                    if getattr(module, b, None) is not None:
                        _set(module, b, _take(getattr(module, b).data, 0, gate_rows[d]))
        module.hidden_size = len(units[0])
        module._init_flat_weights()

    def link_outputs(self, tracer, module, out_ids, ins, outs, dynamic) -> None:
        """``h_n``/``c_n`` rows carry their direction's output labels; initial states
        given as inputs keep every unit."""
        h, dirs = module.hidden_size, self._dirs(module)
        if any(t is not ins[0] and t.is_floating_point() for t in ins[1:]):
            tracer.block(out_ids, f'hidden size of {type(module).__name__}, whose initial state '
                                  'is an input')
        per_dir = out_ids.view(dirs, h)
        for t in outs[1:]:
            if t.dim() >= 2 and t.shape[0] == dirs * module.num_layers and t.shape[-1] == h:
                # row l * dirs + d; one direction: every row alike, so picking a row is safe
                rows = per_dir.repeat(module.num_layers, 1) if dirs > 1 else per_dir
                shape = [rows.shape[0]] + [1] * (t.dim() - 2) + [h]
                tracer.put(t, rows.view(shape), dynamic)


_RNN = RNNHandler()
HANDLERS.update({nn.LSTM: _RNN, nn.GRU: _RNN, nn.RNN: _RNN})
