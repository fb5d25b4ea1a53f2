"""Least-squares reconstruction of a pruned model's layers against the dense model."""
import copy

import pytest
import torch
from torch import nn

from prunus.compression.torch import L1FilterPruner, LevelPruner, Refit, reconstruct
from prunus.speedup import speedup


def _cnn(groups_mid: bool = False) -> nn.Module:
    torch.manual_seed(0)
    mid = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False) if groups_mid else nn.Identity()
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        mid, nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 5)).eval()


def _randomize_norms(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def _batches(n: int = 4, size: int = 16):
    g = torch.Generator().manual_seed(2)
    return [torch.randn(size, 3, 8, 8, generator=g) for _ in range(n)]


def _pruned(model: nn.Module, sparsity: float = 0.5):
    x = torch.randn(2, 3, 8, 8)
    pruner = L1FilterPruner(model, [{'sparsity': sparsity, 'op_types': ['Conv2d']}],
                            dependency_aware=True, dummy_input=x)
    pruner.compress()
    return pruner, x


def _error(model, dense, batches) -> float:
    with torch.no_grad():
        return sum(float((model(b) - dense(b)).pow(2).sum()) for b in batches) / \
            sum(float(dense(b).pow(2).sum()) for b in batches)


def test_removed_channel_that_copies_a_kept_one_is_recovered_exactly():
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)).eval()
    with torch.no_grad():
        dense[0].weight[3] = dense[0].weight[1]  # unit 3 duplicates unit 1
        dense[0].bias[3] = dense[0].bias[1]
    model = copy.deepcopy(dense)
    mask = torch.ones(4, 6)
    mask[3] = 0
    from prunus.compression.torch import apply_masks
    apply_masks(model, {'0': {'weight': mask, 'bias': torch.tensor([1., 1., 1., 0.])}})
    batches = [torch.randn(32, 6) for _ in range(3)]
    report = reconstruct(model, dense, batches, ridge=0.0, exact_heads=True)
    assert list(report) == ['2'] and report['2'].before > 0.05 and report['2'].after < 1e-6
    assert _error(model, dense, batches) < 1e-10
    assert torch.equal(model[0].weight[3], torch.zeros(6))


@pytest.mark.parametrize('groups_mid', [False, True])
def test_reconstruction_lowers_error_keeps_masks_and_the_speedup_exact(groups_mid):
    dense = _cnn(groups_mid)
    _randomize_norms(dense)
    model = copy.deepcopy(dense)
    pruner, x = _pruned(model)
    masks = {n: m.weight_mask.clone() for n, m in model.named_modules() if hasattr(m, 'weight_mask')}
    batches = _batches()
    lengths = model[9].weight.detach().norm(dim=1).pow(2) + model[9].bias.detach().pow(2)
    report = reconstruct(model, dense, batches)
    # the stem and a depthwise conv after it read what they read before: nothing to fit
    assert list(report) == ['4', '9']
    # the classifier is the model's head: its rows turn but keep their lengths
    after = model[9].weight.detach().norm(dim=1).pow(2) + model[9].bias.detach().pow(2)
    assert torch.allclose(after, lengths, rtol=1e-5)
    assert all(isinstance(r, Refit) and r.after < r.before for r in report.values())
    for name, module in model.named_modules():
        if name in masks:
            assert torch.equal(module.weight_mask, masks[name])
            assert torch.all(module.weight[masks[name] == 0] == 0)
    masked_out = model(batches[0])
    fast = speedup(model, x, pruner)
    assert torch.allclose(fast(batches[0]), masked_out, atol=1e-5)


@pytest.mark.parametrize('groups_mid', [False, True])
def test_refitting_every_layer_brings_the_output_closer(groups_mid):
    dense = _cnn(groups_mid)
    _randomize_norms(dense)
    model = copy.deepcopy(dense)
    _pruned(model)
    batches = _batches()
    before = _error(model, dense, batches)
    reconstruct(model, dense, batches, exact_heads=True)
    assert _error(model, dense, batches) < 0.5 * before


def test_unstructured_masks_keep_their_zeros():
    dense = _cnn()
    model = copy.deepcopy(dense)
    LevelPruner(model, [{'sparsity': 0.6, 'op_types': ['Conv2d', 'Linear']}]).compress()
    zeros = {n: m.weight_mask == 0 for n, m in model.named_modules() if hasattr(m, 'weight_mask')}
    batches = _batches()
    before = _error(model, dense, batches)
    reconstruct(model, dense, batches, exact_heads=True)
    assert _error(model, dense, batches) < before
    for name, module in model.named_modules():
        if name in zeros:
            assert torch.all(module.weight[zeros[name]] == 0)


def test_training_modes_are_restored_and_only_named_layers_change():
    dense = _cnn()
    model = copy.deepcopy(dense)
    _pruned(model)
    model.train()
    model[5].eval()
    untouched = model[9].weight.detach().clone()
    report = reconstruct(model, dense, _batches(), layers=['4'])
    assert list(report) == ['4']
    assert torch.equal(model[9].weight, untouched)
    assert model.training and model[4].training and not model[5].training
    assert not dense.training


def test_a_layer_called_twice_is_fit_on_both_calls():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(5, 5)
            self.b = nn.Linear(5, 5)

        def forward(self, x):
            return self.b(torch.relu(self.b(torch.relu(self.a(x)))))
    torch.manual_seed(0)
    dense = Twice().eval()
    model = copy.deepcopy(dense)
    from prunus.compression.torch import apply_masks
    apply_masks(model, {'a': {'weight': torch.tensor([[1.]] * 3 + [[0.]] * 2).expand(5, 5).clone()}})
    batches = [torch.randn(64, 5) for _ in range(2)]
    untouched = model.b.weight.detach().clone()
    report = reconstruct(model, dense, batches, layers=['b'])
    assert report['b'].after < report['b'].before and not torch.equal(model.b.weight, untouched)


def test_a_transformers_conv1d_layer_is_refit():
    conv1d = pytest.importorskip('transformers.pytorch_utils').Conv1D
    torch.manual_seed(0)
    dense = nn.Sequential(conv1d(6, 5), nn.ReLU(), conv1d(4, 6)).eval()
    model = copy.deepcopy(dense)
    from prunus.compression.torch import apply_masks
    mask = torch.ones(5, 6)
    mask[:, :2] = 0  # Conv1D stores (in, out): output features 0 and 1 removed
    apply_masks(model, {'0': {'weight': mask, 'bias': mask[0]}})
    batches = [torch.randn(40, 5) for _ in range(2)]
    before = _error(model, dense, batches)
    report = reconstruct(model, dense, batches, exact_heads=True)
    assert list(report) == ['2'] and _error(model, dense, batches) < 0.9 * before
    assert torch.all(model[0].weight[:, :2] == 0)


@pytest.mark.parametrize('call, message', [
    (lambda m, d, b: reconstruct(m, m, b), 'reference is the pruned model itself'),
    (lambda m, d, b: reconstruct(m, nn.Linear(2, 2), b), "no layer '0'"),
    (lambda m, d, b: reconstruct(m, d, b, layers=['nope']), "'nope', which is not a module"),
    (lambda m, d, b: reconstruct(m, d, b, layers=['1']), "layer '1' is a BatchNorm2d"),
    (lambda m, d, b: reconstruct(m, d, b, ridge=-1), 'ridge must be a number >= 0'),
    (lambda m, d, b: reconstruct(m, d, []), 'calibration_data is empty'),
    (lambda m, d, b: reconstruct(m, d, b[0]), 'calibration_data must be an iterable'),
])
def test_bad_calls_name_what_is_wrong_and_leave_the_model_alone(call, message):
    dense = _cnn()
    model = copy.deepcopy(dense)
    _pruned(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises((ValueError, TypeError), match=message):
        call(model, dense, _batches(2))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_a_reference_of_another_shape_is_refused():
    dense = _cnn()
    model = copy.deepcopy(dense)
    pruner, x = _pruned(model)
    small = speedup(copy.deepcopy(model), x, pruner)
    with pytest.raises(ValueError, match="layer '0' has weight shape"):
        reconstruct(small, dense, _batches(2))


def test_on_real_digits_the_refit_model_is_far_more_accurate_right_after_removal():
    from sklearn.datasets import load_digits
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target)
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    opt = torch.optim.Adam(dense.parameters(), lr=3e-3)
    dense.train()
    for _ in range(8):
        for idx in torch.randperm(1400).split(32):
            opt.zero_grad()
            nn.functional.cross_entropy(dense(x[idx]), y[idx]).backward()
            opt.step()
    dense.eval()

    def accuracy(model):
        with torch.no_grad():
            return float((model(x[1400:]).argmax(1) == y[1400:]).float().mean())
    plain, refit = copy.deepcopy(dense), copy.deepcopy(dense)
    for model in (plain, refit):
        L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}], dependency_aware=True,
                       dummy_input=x[:2], importance='group').compress()
    reconstruct(refit, dense, list(x[:1024].split(256)))
    assert accuracy(dense) > 0.85
    assert accuracy(refit) > accuracy(plain) + 0.2


def test_a_hugging_face_classifier_with_keyword_batches():
    transformers = pytest.importorskip('transformers')
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=32, num_labels=3)
    torch.manual_seed(0)
    dense = transformers.BertForSequenceClassification(config).eval()
    model = copy.deepcopy(dense)
    from prunus.compression.torch import apply_masks
    rows = torch.ones(32, 16)
    rows[::2] = 0  # half of the first FFN's neurons
    apply_masks(model, {'bert.encoder.layer.0.intermediate.dense':
                        {'weight': rows, 'bias': rows[:, 0].clone()}})
    g = torch.Generator().manual_seed(3)
    batches = [{'input_ids': torch.randint(0, 50, (8, 6), generator=g)} for _ in range(3)]
    def lengths():
        head = model.classifier
        return (head.weight.detach().pow(2).sum(1) + head.bias.detach().pow(2)).sqrt()
    before = lengths()
    report = reconstruct(model, dense, batches)
    assert 'bert.encoder.layer.0.output.dense' in report  # reads the pruned neurons
    assert 'classifier' in report  # the head: turned, lengths kept
    assert torch.allclose(lengths(), before, rtol=1e-5)
    assert all(r.after <= r.before for r in report.values())


def test_a_failure_part_way_leaves_every_layer_as_it_was():
    dense = _cnn()
    _randomize_norms(dense)
    model = copy.deepcopy(dense)
    _pruned(model)
    # the reference's classifier sees (N, 1, 12): it fails there, after layer '4' was refit
    dense[8] = nn.Sequential(nn.Flatten(), nn.Unflatten(1, (1, 12)))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="layer '9' outputs"):
        reconstruct(model, dense, _batches(2))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
