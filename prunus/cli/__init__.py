"""The ``prunus`` command line: ``demo``, ``report``, ``speedup`` and ``compare``.

Example::

    prunus report resnet18 --input-shape 1,3,224,224
    prunus speedup resnet18 masks.pth --input-shape 1,3,224,224 -o small.pt
    prunus compare resnet18 --pruners l1,fpgm --budgets 0.3,0.5
    prunus demo
"""
from __future__ import annotations

import argparse
import sys

from prunus import __version__
from prunus.demo import main as run_demo

from .commands import DEFAULT_SHAPE, run_compare, run_report, run_speedup
from .models import CliError

__all__ = ['main', 'build_parser']

_MODEL_HELP = ("a torchvision model name (random weights, e.g. resnet18) or 'module:attr' naming "
               'an nn.Module, or a class or function that returns one')
_EPILOG = 'Run "prunus COMMAND --help" for the options of each command.'


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('model', metavar='MODEL', help=_MODEL_HELP)
    parser.add_argument('--weights', metavar='PATH', help="a state_dict to load into MODEL first")
    parser.add_argument('--input-shape', default=DEFAULT_SHAPE, metavar='SHAPE',
                        help=f'shape of the random example input (default {DEFAULT_SHAPE})')
    parser.add_argument('--seed', type=int, default=0, help='seed of the example input (default 0)')


def _demo(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser('demo', help='prune a CNN trained on real digits with every one-shot pruner',
                               description='Train a CNN on scikit-learn digits, prune it with every '
                               'one-shot pruner, fine-tune, speed up and print a table.')
    demo.add_argument('--sparsity', type=float, default=0.5, help='fraction to prune (default 0.5)')
    demo.add_argument('--epochs', type=int, default=15, help='dense training epochs (default 15)')
    demo.add_argument('--finetune-epochs', type=int, default=3, help='fine-tuning epochs (default 3)')


def _report(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser('report', help='per-layer parameters, FLOPs and sparsity',
                                 description='Print, per layer that owns parameters, its parameter '
                                 'count, FLOPs on the example input and fraction of zero weights.',
                                 epilog='Example: prunus report resnet18 --masks mask.pth')
    _common(report)
    report.add_argument('--masks', metavar='MASKS', help='a mask file to apply first (from export_model)')
    report.add_argument('--format', choices=('table', 'csv', 'json'), default='table',
                        help='output format (default table)')


def _speedup(commands: argparse._SubParsersAction) -> None:
    speedup = commands.add_parser('speedup', help='physically remove masked channels and save the result',
                                  description='Apply MASKS to MODEL, remove the masked channels, '
                                  'check the outputs and save with prunus.speedup.save.',
                                  epilog='Example: prunus speedup resnet18 mask.pth '
                                  '--input-shape 1,3,224,224 -o small.pt')
    _common(speedup)
    speedup.add_argument('masks', metavar='MASKS', help='mask file {module: {"weight": mask}} (torch.save)')
    speedup.add_argument('-o', '--output', required=True, metavar='OUT', help='where to save the smaller model')
    speedup.add_argument('--no-check', action='store_true', help='skip running the result to compare outputs')


def _compare(commands: argparse._SubParsersAction) -> None:
    compare = commands.add_parser('compare', help='compare pruners at several budgets',
                                  description='Prune copies of MODEL with each pruner at each budget; '
                                  'print accuracy (with --evaluator), params, FLOPs and latency.',
                                  epilog='Example: prunus compare resnet18 --pruners l1,fpgm,level '
                                  '--budgets 0.3,0.5 --input-shape 1,3,64,64 --plot cmp.png')
    _common(compare)
    compare.add_argument('--pruners', default='level,l1,l2,fpgm', help='comma-separated registry names '
                         '(default level,l1,l2,fpgm)')
    compare.add_argument('--budgets', default='0.5', help='comma-separated sparsities (default 0.5)')
    compare.add_argument('--data', metavar='module:attr', help='a function returning (x, y) batches')
    compare.add_argument('--evaluator', metavar='module:attr', help='evaluator(model) -> accuracy')
    compare.add_argument('--finetune', metavar='module:attr', help='finetune(model, pruner)')
    compare.add_argument('--latency-seconds', type=float, default=0.2, help='timing per model (default 0.2)')
    compare.add_argument('--cache-dir', metavar='DIR', help='keep finished runs here and resume from them')
    compare.add_argument('--output', metavar='CSV', help='also write the table as CSV')
    compare.add_argument('--plot', metavar='PNG', help='also draw the plots (needs prunus[plot])')


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``prunus`` command, one subcommand each.

    Returns:
        The parser.

    Example::

        args = build_parser().parse_args(['report', 'resnet18'])
    """
    parser = argparse.ArgumentParser(prog='prunus', epilog=_EPILOG,
                                     description='Neural-network pruning for PyTorch and Keras 3.')
    parser.add_argument('--version', action='version', version=f'prunus {__version__}')
    commands = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    for add in (_compare, _speedup, _report, _demo):
        add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``prunus`` command line.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success; usage errors exit with status 2 and one line.

    Example::

        main(['report', 'resnet18', '--input-shape', '1,3,64,64'])
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == 'demo':
            if not 0 <= args.sparsity < 1:
                raise CliError(f'--sparsity must be in [0, 1); got {args.sparsity}')
            run_demo(args.sparsity, args.epochs, args.finetune_epochs)
            return 0
        run_command = {'report': run_report, 'speedup': run_speedup, 'compare': run_compare}
        return run_command[args.command](args)
    except (CliError, ValueError, TypeError, ImportError) as exc:
        parser.exit(2, f'prunus {args.command}: error: {exc}\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
