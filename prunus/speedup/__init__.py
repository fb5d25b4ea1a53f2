"""Physical removal of pruned channels (see the speedup issue); nothing is exported yet."""
__all__: list[str] = []
