"""What prunus knows about each framework's layer types, one package per framework.

For every supported layer type, one place answers: which weights a pruner may mask, where
the channels are, whether input and output channels are tied, and how the speedup removes
channels. The speedups and the pruners read these tables; nothing here imports them.
"""
