"""Command line: ``python -m prunus demo``."""
from __future__ import annotations

import argparse
import sys

from prunus.demo import main as run_demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='prunus', description='prunus command line')
    commands = parser.add_subparsers(dest='command', required=True)
    demo = commands.add_parser('demo', help='prune a CNN trained on real digits with every one-shot pruner')
    demo.add_argument('--sparsity', type=float, default=0.5, help='fraction to prune (default 0.5)')
    demo.add_argument('--epochs', type=int, default=15, help='dense training epochs (default 15)')
    demo.add_argument('--finetune-epochs', type=int, default=3, help='fine-tuning epochs (default 3)')
    args = parser.parse_args(argv)
    if args.command == 'demo':
        if not 0 <= args.sparsity < 1:
            parser.error(f'--sparsity must be in [0, 1); got {args.sparsity}')
        run_demo(args.sparsity, args.epochs, args.finetune_epochs)
    return 0


if __name__ == '__main__':
    sys.exit(main())
