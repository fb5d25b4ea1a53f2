"""Non-zero constants into zero-padded layers: every constant channel goes, its effect (the
borders included) rides on a small constant path of the consumer, exactly, no weight grows,
and under Adam the path learns as the masked model's weights on the removed inputs do."""
import copy
import io

import pytest
import torch
from torch import nn

from prunus.speedup import fix_constants, load, save, speedup
from prunus.layers.torch.constants import (DECAY, OFFSET, PATH, SCALE, SHIFTS, SOURCE_WEIGHTS,
                                          SQUARES)
from tests.speedup.zoo import masked_copy, max_rel_error, randomize_norms


def dead_filters(model: nn.Module, name: str, drop: list[int]) -> dict:
    conv = model.get_submodule(name)
    w = torch.ones_like(conv.weight)
    w[drop] = 0.0
    return {name: {'weight': w}}


def block(conv, norm, consumer):
    """conv -> norm -> ReLU6 shifted up (every removed channel is a non-zero constant)."""
    model = nn.Sequential(conv, norm, nn.Hardtanh(0.1, 6.0), consumer)
    return randomize_norms(model.eval())


CASES = {
    'conv2d': (block(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 6, 3, padding=1)),
               torch.randn(2, 3, 9, 9)),
    'conv2d_strided': (block(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8),
                             nn.Conv2d(8, 6, 3, stride=2, padding=2, dilation=2)),
                       torch.randn(2, 3, 9, 9)),
    'conv1d': (block(nn.Conv1d(3, 8, 3), nn.BatchNorm1d(8), nn.Conv1d(8, 6, 5, padding=2)),
               torch.randn(2, 3, 20)),
    'conv3d': (block(nn.Conv3d(3, 8, 1), nn.BatchNorm3d(8), nn.Conv3d(8, 4, 3, padding=1)),
               torch.randn(1, 3, 4, 5, 5)),
    # bias-like: the constant reaches every output position alike (one value per output)
    'conv2d_1x1': (block(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 6, 1)),
                   torch.randn(2, 3, 9, 9)),
    'conv2d_reflect': (block(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8),
                             nn.Conv2d(8, 6, 3, padding=1, padding_mode='reflect')),
                       torch.randn(2, 3, 9, 9)),
    'conv_transpose2d': (block(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8),
                               nn.ConvTranspose2d(8, 6, 3, stride=2, padding=1)),
                         torch.randn(2, 3, 9, 9)),
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_constants_go_and_the_result_stays_exact(case):
    model, x = CASES[case]
    masks = dead_filters(model, '0', [0, 2, 3, 5, 6])
    masked = masked_copy(model, masks)
    ref = masked(x)
    small, summary = speedup(model, x, masks, return_summary=True)
    assert max_rel_error(ref, small(x)) < 1e-4
    assert max_rel_error(masked(x[:1]), small(x[:1])) < 1e-4  # any batch size
    assert small[0].out_channels == 3 and summary.kept == {}
    assert small[3].weight.abs().max() <= masked[3].weight.abs().max()
    assert PATH in dict(small[3].named_parameters())
    assert SCALE in dict(small[3].named_buffers())
    # the learnable part is K / sum|c_j|: never above the masked model's largest weight
    assert small[3].carried_constants.abs().max() <= masked[3].weight.abs().max() + 1e-6


@pytest.mark.parametrize('layer', [nn.Conv2d(12, 6, 3, padding=1, groups=3),
                                   nn.ConvTranspose2d(12, 6, 3, padding=1, groups=3)],
                         ids=['conv', 'conv_transpose'])
def test_grouped_consumer_carries_per_group(layer):
    model = block(nn.Conv2d(3, 12, 3), nn.BatchNorm2d(12), layer)
    x = torch.randn(2, 3, 9, 9)
    masks = dead_filters(model, '0', [0, 1, 2, 5, 6, 7, 9, 10, 11])  # 3 in each group of 4
    small, summary = speedup(model, x, masks, return_summary=True)
    assert max_rel_error(masked_copy(model, masks)(x), small(x)) < 1e-4
    assert small[0].out_channels == 3 and small[3].in_channels == 3 and small[3].groups == 3
    assert summary.kept == {}


def test_two_padded_consumers_each_carry_the_constants():
    class Fork(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Hardtanh(0.1, 6))
            self.a, self.b = nn.Conv2d(8, 4, 3, padding=1), nn.Conv2d(8, 4, 5, padding=2)

        def forward(self, x):
            x = self.stem(x)
            return self.a(x) + self.b(x)

    model = randomize_norms(Fork().eval())
    x = torch.randn(2, 3, 10, 10)
    masks = dead_filters(model, 'stem.0', [1, 2, 3, 4, 7])
    small = speedup(model, x, masks)
    assert max_rel_error(masked_copy(model, masks)(x), small(x)) < 1e-4
    assert small.stem[0].out_channels == 3


@pytest.mark.parametrize('case', sorted(CASES))
def test_train_mode_matches_the_masked_model_and_eval_offsets_decay(case):
    model, x = CASES[case]
    masks = dead_filters(model, '0', [0, 2, 3, 5, 6])
    small = speedup(model, x, masks)
    masked = masked_copy(model, masks)
    offsets = {n: b.clone() for n, b in small.named_buffers() if n.endswith(OFFSET)}
    assert offsets  # the eval-mode constants differ (stale statistics)
    with torch.no_grad():  # BatchNorm on batch statistics: a pruned channel gives beta
        assert max_rel_error(masked.train()(x), small.train()(x)) < 1e-4
        small(x)
    for name, before in offsets.items():
        after = dict(small.named_buffers())[name]
        assert torch.allclose(after, before * (1 - DECAY) ** 2)  # two train-mode calls
    assert all(not b.requires_grad for b in small.buffers())


def test_the_frozen_paths_survive_saving_and_a_second_speedup():
    model, x = CASES['conv2d']
    small = speedup(model, x, dead_filters(model, '0', [0, 2, 3, 5, 6]))
    assert isinstance(small[3], nn.Conv2d) and not small[3]._forward_hooks
    buffer = io.BytesIO()
    torch.save(small, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False).eval()
    assert max_rel_error(small.eval()(x), loaded(x)) == 0.0
    # a second round: another constant adds to the consumer's frozen buffer, still exact
    masks = dead_filters(loaded, '0', [1])
    again = speedup(loaded, x, masks)
    assert again[0].out_channels == 2 and again[3].in_channels == 2
    assert max_rel_error(masked_copy(loaded, masks)(x), again(x)) < 1e-4


OPTIMIZERS = {'adam': lambda ps: torch.optim.Adam(ps, lr=0.02),
              'adamw': lambda ps: torch.optim.AdamW(ps, lr=0.02, weight_decay=0.1),
              'sgd': lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9, weight_decay=0.01)}


def _adam_steps(net, x, target, consumer, optimizer='adam'):
    """Three steps; ``consumer``: the layer whose own weights alone train (its copy of the
    removed shifts is the BatchNorm's, which stays), or None for every parameter."""
    net.train()
    for name, p in net.named_parameters():
        p.requires_grad_(consumer is None or (name.startswith(consumer + '.')
                                              and not name.endswith(SHIFTS)))
    opt = OPTIMIZERS[optimizer]([p for p in net.parameters() if p.requires_grad])
    for _ in range(3):
        opt.zero_grad()
        (net(x) * target).sum().backward()
        opt.step()


def _case(name):
    """(model, input, name of the consumer of the constants) for a CASES entry or 'linear'."""
    if name == 'linear':
        model, x, consumer = LINEAR
        return randomize_norms(model.eval()), x, consumer
    model, x = CASES[name]
    return model, x, '3'


LINEAR = (nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Hardtanh(0.1, 6.0),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)),
          torch.randn(4, 3, 9, 9), '5')


@pytest.mark.parametrize('optimizer', sorted(OPTIMIZERS))
@pytest.mark.parametrize('case', sorted(CASES) + ['linear'])
def test_under_adam_and_sgd_the_path_follows_the_masked_models_weights(case, optimizer):
    # only the consumer learns, in both models: its weights on the removed inputs (masked)
    # against the path K / sum|c_j| with its gradient scaled by sum c_j^2 / sum |c_j|
    model, x, consumer = _case(case)
    masks = dead_filters(model, '0', [0, 2, 3, 5, 6])
    small = speedup(model, x, masks)
    masked = masked_copy(model, masks)
    target = torch.randn_like(masked.train()(x))
    for net in (masked, small):
        _adam_steps(net, x, target, consumer, optimizer)
    moved = max_rel_error(model.train()(x), masked(x))
    assert moved > 1e-2  # the steps did change the masked model
    with torch.no_grad():
        assert max_rel_error(masked(x), small(x)) < 1e-3 * max(1.0, moved)


LEARNING = sorted(set(CASES) - {'conv_transpose2d'}) + ['linear']


@pytest.mark.parametrize('optimizer', sorted(OPTIMIZERS))
@pytest.mark.parametrize('case', LEARNING)
def test_the_constants_learn_as_the_masked_models_removed_shifts_do(case, optimizer):
    # every parameter trains: the removed filters' BatchNorm shifts too (in the masked
    # model), whose constants reach the consumer through the activation
    torch.manual_seed(0)
    model, x, consumer = _case(case)
    model = copy.deepcopy(model)
    with torch.no_grad():  # inside Hardtanh's linear range, where the masked model is linear
        model[1].bias[[0, 2, 3, 5, 6]] = 1.0 + torch.rand(5)
    masks = dead_filters(model, '0', [0, 2, 3, 5, 6])
    small = speedup(model, x, masks)
    assert small.get_submodule(consumer)._parameters.get(SOURCE_WEIGHTS) is not None
    keep = masks['0']['weight'].flatten(1)[:, 0]
    masked, frozen = masked_copy(model, masks), masked_copy(model, masks)
    for net in (masked, frozen):  # the pruner's masks hold in training too
        net[0].weight.register_hook(lambda g: g * masks['0']['weight'])
        net[0].bias.register_hook(lambda g: g * keep)
    frozen[1].bias.register_hook(lambda g: g * keep)  # the removed shifts fixed
    # small steps: no constant leaves Hardtanh's linear range (where the masked model clamps)
    target = 0.05 * torch.randn_like(masked.train()(x))
    for net in (masked, small, frozen):
        _adam_steps(net, x, target, None, optimizer)
    with torch.no_grad():
        learned = max_rel_error(masked(x), frozen(x))
        assert learned > 1e-4  # the shifts' learning shows
        assert max_rel_error(masked(x), small(x)) < 1e-2 * learned


@pytest.mark.parametrize('case', sorted(CASES) + ['linear'])
def test_fixed_paths_compute_the_same_and_leave_only_the_layers_weights(case, tmp_path):
    model, x, consumer = _case(case)
    small = speedup(model, x, dead_filters(model, '0', [0, 2, 3, 5, 6]))
    _adam_steps(small, x, torch.randn_like(small(x)), consumer)  # a fine-tune moved them
    with torch.no_grad():
        before = small.eval()(x)
    assert fix_constants(small) == [consumer]
    layer = small.get_submodule(consumer)
    assert not any(n.endswith((PATH, SCALE, OFFSET, SOURCE_WEIGHTS, SHIFTS))
                   for n, _ in small.named_parameters())
    assert not any(n.endswith((PATH, SCALE, SQUARES, OFFSET)) for n, _ in small.named_buffers())
    if isinstance(layer, nn.Linear) or case in ('conv2d_1x1', 'conv2d_reflect'):
        assert type(layer) in (nn.Linear, nn.Conv2d)  # all in the bias: the plain layer again
    with torch.no_grad():
        assert max_rel_error(before, small(x)) < 1e-5
        layer.train()  # a fixed path does not fade in training (BatchNorms left in eval)
        small(x)
        assert max_rel_error(before, small.eval()(x)) < 1e-5
    save(small, tmp_path / 'fixed.pt')
    again = load(tmp_path / 'fixed.pt', model)
    with torch.no_grad():
        assert max_rel_error(before, again.eval()(x)) < 1e-5
    assert fix_constants(small) == []


def test_fix_constants_names_a_wrong_argument():
    with pytest.raises(TypeError, match='torch.nn.Module, got dict'):
        fix_constants({'weight': torch.ones(2)})


def _removed_shift_hooks(net, pairs):
    """Fix the BatchNorm shifts of the channels whose filters the pruner masked."""
    for conv, norm in pairs:
        keep = (net.get_submodule(conv).weight_mask.flatten(1).abs().sum(1) > 0).float()
        net.get_submodule(norm).bias.register_hook(lambda g, k=keep: g * k)


def test_a_residual_channel_learns_from_both_its_consumers():
    # the stem's removed channels reach a.0 through a ReLU and the head through the add
    # and a second ReLU: one shift per channel, shared by both layers, as in the masked model
    from prunus.compression.torch import L1FilterPruner
    from tests.speedup.zoo import ResidualAdd
    torch.manual_seed(0)
    model = randomize_norms(ResidualAdd().eval())
    with torch.no_grad():
        for norm in (model.stem[1], model.a[1], model.a[4]):
            norm.bias.copy_(0.5 + torch.rand_like(norm.bias))  # clear of the ReLUs' kinks
    x = torch.randn(4, 3, 8, 8)
    nets = []
    for _ in range(3):
        net = copy.deepcopy(model)
        pruner = L1FilterPruner(net, [{'sparsity': 0.5, 'op_types': ['Conv2d']}],
                                dependency_aware=True, dummy_input=x)
        pruner.compress()
        nets.append((net, pruner))
    masked, frozen = nets[0][0], nets[1][0]
    small = speedup(nets[2][0], x, nets[2][1])
    readers = [m for m in small.modules() if SHIFTS in m._parameters]
    assert len(readers) >= 2 and len({id(m._parameters[SHIFTS]) for m in readers}) == 1
    _removed_shift_hooks(frozen, [('stem.0', 'stem.1'), ('a.0', 'a.1'), ('a.3', 'a.4')])
    target = 0.05 * torch.randn_like(model.train()(x))
    for net in (masked, small, frozen):
        _adam_steps(net, x, target, None)
    with torch.no_grad():
        learned = max_rel_error(masked(x), frozen(x))
        assert learned > 1e-3
        assert max_rel_error(masked(x), small(x)) < 1e-2 * learned


def test_a_second_speedup_fixes_the_first_ones_learned_constants():
    torch.manual_seed(0)
    model = block(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 6, 3, padding=1))
    x, consumer = torch.randn(2, 3, 9, 9), '3'
    with torch.no_grad():  # inside Hardtanh's linear range: every constant can learn
        model[1].bias.copy_(1.0 + torch.rand(8))
    small = speedup(model, x, dead_filters(model, '0', [0, 2, 3, 5, 6]))
    layer = small.get_submodule(consumer)
    assert SOURCE_WEIGHTS in layer._parameters and PATH not in layer._parameters
    masks = dead_filters(small, '0', [1])
    again = speedup(small, x, masks)
    layer = again.get_submodule(consumer)
    # the first shifts are gone with their BatchNorm's rows: their constants stay, learning
    # as the weights on them would; the newly removed channel's constant learns
    assert PATH in layer._parameters and SOURCE_WEIGHTS in layer._parameters
    assert layer._parameters[SOURCE_WEIGHTS].shape[1] == 1
    with torch.no_grad():
        assert max_rel_error(masked_copy(small, masks).eval()(x), again.eval()(x)) < 1e-4


def test_learn_constants_false_fixes_them_and_a_wrong_value_is_named():
    model = block(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 6, 3, padding=1))
    x, consumer = torch.randn(2, 3, 9, 9), '3'
    masks = dead_filters(model, '0', [0, 2, 3, 5, 6])
    learned, summary = speedup(model, x, masks, return_summary=True)
    fixed, fixed_summary = speedup(model, x, masks, learn_constants=False, return_summary=True)
    assert summary.learned_constants == [consumer] and fixed_summary.learned_constants == []
    assert 'constants learn from removed BatchNorm shifts in 1 layer' in str(summary)
    assert SOURCE_WEIGHTS in learned.get_submodule(consumer)._parameters
    layer = fixed.get_submodule(consumer)
    assert SOURCE_WEIGHTS not in layer._parameters and PATH in layer._parameters
    assert sum(p.numel() for p in fixed.parameters()) < sum(p.numel() for p in learned.parameters())
    with torch.no_grad():
        assert max_rel_error(learned.eval()(x), fixed.eval()(x)) < 1e-5
    with pytest.raises(TypeError, match='learn_constants must be True or False'):
        speedup(model, x, masks, learn_constants='yes')


def test_constants_learn_where_the_probe_needs_the_whole_input():
    # a Linear on a flatten fixes the input size: the probe falls back to the whole sample
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 12 * 12, 5)).eval()
    with torch.no_grad():
        model[1].bias.copy_(0.5 + torch.rand(8))
    x = torch.randn(3, 3, 12, 12)
    masks = dead_filters(model, '0', [1, 4, 6])
    small = speedup(model, x, masks)
    assert SOURCE_WEIGHTS in small[4]._parameters
    assert small[4].source_weights.shape == (5, 3 * 144)
    keep = masks['0']['weight'].flatten(1)[:, 0]
    masked = masked_copy(model, masks)
    masked[0].weight.register_hook(lambda g: g * masks['0']['weight'])
    masked[0].bias.register_hook(lambda g: g * keep)
    target = 0.05 * torch.randn_like(masked.train()(x))
    for net in (masked, small):
        _adam_steps(net, x, target, None)
    with torch.no_grad():
        assert max_rel_error(masked(x), small(x)) < 1e-4
