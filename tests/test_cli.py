"""The prunus command line on torchvision and user models."""
import json
import subprocess
import sys

import pytest

torch = pytest.importorskip('torch')
torchvision = pytest.importorskip('torchvision')

import prunus  # noqa: E402
from prunus.cli import main  # noqa: E402
from prunus.speedup import load  # noqa: E402

SHAPE = ['--input-shape', '1,3,32,32']


def _prunus(*args):
    return subprocess.run([sys.executable, '-m', 'prunus', *args], capture_output=True, text=True)


def test_version_and_help_for_every_command():
    result = _prunus('--version')
    assert result.returncode == 0 and result.stdout.strip() == f'prunus {prunus.__version__}'
    top = _prunus('--help').stdout
    for command in ('compare', 'speedup', 'report', 'demo'):
        assert command in top
        page = _prunus(command, '--help')
        assert page.returncode == 0 and 'usage: prunus ' + command in page.stdout
    assert '--input-shape' in _prunus('speedup', '--help').stdout
    assert '--budgets' in _prunus('compare', '--help').stdout


@pytest.fixture(scope='module')
def resnet_masks(tmp_path_factory):
    from prunus.compression.torch import L1FilterPruner
    folder = tmp_path_factory.mktemp('cli')
    model = torchvision.models.resnet18(weights=None)
    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d'],
                                     'op_names': ['layer1.0.conv1', 'layer3.1.conv1']}])
    pruner.compress()
    pruner.export_model(str(folder / 'pruned.pth'), str(folder / 'mask.pth'))
    return folder


def test_report_on_torchvision_with_masks(resnet_masks, capsys):
    assert main(['report', 'resnet18', *SHAPE, '--masks', str(resnet_masks / 'mask.pth'),
                 '--format', 'json']) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {r['layer']: r for r in report['layers']}
    assert rows['layer1.0.conv1']['sparsity'] == 0.5 and rows['layer1.0.conv2']['sparsity'] == 0.0
    assert rows['fc']['params'] == 512 * 1000 + 1000 and rows['fc']['flops'] == 2 * 512 * 1000
    assert report['total']['params'] == sum(p.numel() for p in torchvision.models.resnet18().parameters())
    assert main(['report', 'resnet18', *SHAPE]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ['layer', 'type', 'params', 'FLOPs', 'sparsity']
    assert table.splitlines()[-1].startswith('total')


def test_speedup_saves_a_reloadable_model(resnet_masks, capsys):
    out = resnet_masks / 'small.pt'
    weights = resnet_masks / 'pruned.pth'
    assert main(['speedup', 'resnet18', str(resnet_masks / 'mask.pth'), *SHAPE, '-o', str(out),
                 '--weights', str(weights)]) == 0
    assert 'masked channels removed' in capsys.readouterr().out
    small = load(out, torchvision.models.resnet18()).eval()
    assert small.layer1[0].conv1.out_channels == 32
    dense = torchvision.models.resnet18()
    dense.load_state_dict(torch.load(weights, weights_only=True))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref, got = dense.eval()(x), small(x)
    assert float((ref - got).abs().max()) <= 1e-4 * float(ref.abs().max())


def test_compare_on_torchvision_and_user_model(tmp_path, capsys):
    csv = tmp_path / 'table.csv'
    assert main(['compare', 'resnet18', *SHAPE, '--pruners', 'l1,level', '--budgets', '0.5',
                 '--latency-seconds', '0.01', '--output', str(csv)]) == 0
    printed = capsys.readouterr().out
    assert printed.split()[:2] == ['pruner', 'budget']
    import pandas as pd
    table = pd.read_csv(csv)
    assert list(table.pruner) == ['dense', 'l1', 'level']
    assert table.flops_small[1] < table.flops_small[0]
    assert main(['compare', 'tests.speedup.zoo:ResidualAdd', '--input-shape', '1,3,12,12',
                 '--pruners', 'fpgm', '--latency-seconds', '0.01']) == 0
    assert 'fpgm' in capsys.readouterr().out


@pytest.mark.parametrize('argv, message', [
    (['report', 'resnt18'], "did you mean 'resnet18'?"),
    (['report', 'resnet18', '--input-shape', '1,a'], '--input-shape must be positive integers'),
    (['report', 'nosuchpkg:Net'], "cannot import 'nosuchpkg'"),
    (['report', 'tests.speedup.zoo:Nope'], "has no attribute 'Nope'"),
    (['speedup', 'resnet18', 'missing.pth', '-o', 'x.pt'], "MASKS 'missing.pth' does not exist"),
    (['compare', 'resnet18', '--budgets', '2', '--input-shape', '1,3,8,8'], 'budgets must be sparsities'),
])
def test_errors_are_one_line_with_status_2(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
