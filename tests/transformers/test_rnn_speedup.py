"""LSTM / GRU / RNN through the speedup: input features and hidden units, exact."""
import pytest
import torch
from torch import nn

from prunus.compression.torch import L1FilterPruner, apply_masks
from prunus.speedup import speedup

CELLS = [nn.LSTM, nn.GRU, nn.RNN]


class Net(nn.Module):
    def __init__(self, cell, bidirectional, layers, read_state, embed=False):
        super().__init__()
        self.embed = nn.Embedding(20, 16) if embed else None
        self.a = nn.Linear(6, 16)
        self.rnn = cell(16, 12, num_layers=layers, bidirectional=bidirectional, batch_first=True)
        self.o = nn.Linear(12 * (2 if bidirectional else 1), 3)
        self.read_state = read_state

    def forward(self, x):
        h = self.embed(x) if self.embed is not None else torch.relu(self.a(x))
        out, state = self.rnn(h)
        if self.read_state:
            state = state[0] if isinstance(state, tuple) else state
            last = torch.cat([state[-2], state[-1]], -1) if self.rnn.bidirectional else state[-1]
            return self.o(last)
        return self.o(out)


def unit_masks(rnn, units):
    """Masks every gate row of the given hidden units in every layer and direction."""
    h, gates = rnn.hidden_size, {'LSTM': 4, 'GRU': 3}.get(rnn.mode, 1)
    masks = {}
    for name, p in rnn.named_parameters():
        mask = torch.ones_like(p)
        mask[[k * h + u for k in range(gates) for u in units]] = 0
        masks[name] = mask
    return {'rnn': masks}


@pytest.mark.parametrize('cell', CELLS)
@pytest.mark.parametrize('bidirectional', [False, True])
@pytest.mark.parametrize('layers', [1, 2])
def test_input_features_and_hidden_units_go_exactly(cell, bidirectional, layers):
    torch.manual_seed(0)
    model = Net(cell, bidirectional, layers, read_state=False).eval()
    L1FilterPruner(model, [{'sparsity': 0.5, 'op_names': ['a']}]).compress()
    apply_masks(model, unit_masks(model.rnn, [1, 4, 7]))
    x = torch.randn(2, 5, 6)
    expected = model(x)
    small = speedup(model, x)
    assert (small.rnn.input_size, small.rnn.hidden_size) == (8, 9)
    assert small.o.in_features == 9 * (2 if bidirectional else 1)
    assert small.rnn.weight_hh_l0.shape == ({'LSTM': 4, 'GRU': 3}.get(small.rnn.mode, 1) * 9, 9)
    torch.testing.assert_close(small(x), expected)


@pytest.mark.parametrize('cell', CELLS)
def test_a_layer_reading_the_final_state_shrinks_too(cell):
    torch.manual_seed(0)
    model = Net(cell, False, 2, read_state=True).eval()
    apply_masks(model, unit_masks(model.rnn, [0, 5]))
    x = torch.randn(2, 5, 6)
    small = speedup(model, x)
    assert small.rnn.hidden_size == 10 and small.o.in_features == 10
    torch.testing.assert_close(small(x), model(x))


def test_bidirectional_final_state_keeps_units_and_stays_exact():
    torch.manual_seed(0)
    model = Net(nn.LSTM, True, 1, read_state=True).eval()
    apply_masks(model, unit_masks(model.rnn, [0, 5]))
    x = torch.randn(2, 5, 6)
    small, summary = speedup(model, x, return_summary=True)
    assert small.rnn.hidden_size == 12 and summary.kept
    torch.testing.assert_close(small(x), model(x))


def test_a_unit_alive_in_one_layer_stays():
    torch.manual_seed(0)
    model = Net(nn.GRU, False, 2, read_state=False).eval()
    masks = unit_masks(model.rnn, [3])
    for name in ('weight_ih_l1', 'weight_hh_l1', 'bias_ih_l1', 'bias_hh_l1'):
        masks['rnn'][name] = torch.ones_like(masks['rnn'][name])
    apply_masks(model, masks)
    x = torch.randn(2, 5, 6)
    small = speedup(model, x)
    assert small.rnn.hidden_size == 12
    torch.testing.assert_close(small(x), model(x))


def test_embedding_dims_feeding_an_lstm_go():
    torch.manual_seed(0)
    model = Net(nn.LSTM, False, 1, read_state=False, embed=True).eval()
    mask = torch.ones(20, 16)
    mask[:, [2, 3, 9]] = 0
    apply_masks(model, {'embed': {'weight': mask}})
    x = torch.randint(0, 20, (2, 5))
    small = speedup(model, x)
    assert small.embed.embedding_dim == 13 and small.rnn.input_size == 13
    torch.testing.assert_close(small(x), model(x))


def test_an_explicit_initial_state_keeps_the_hidden_size():
    class WithState(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(4, 6, batch_first=True)
            self.o = nn.Linear(6, 2)

        def forward(self, x):
            return self.o(self.rnn(x, torch.zeros(1, x.shape[0], 6))[0])
    model = WithState().eval()
    apply_masks(model, unit_masks(model.rnn, [1]))
    x = torch.randn(2, 3, 4)
    small = speedup(model, x)
    assert small.rnn.hidden_size == 6
    torch.testing.assert_close(small(x), model(x))
