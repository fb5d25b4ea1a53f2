# Tests run with torch's default thread count: a search's forked workers must not deadlock
# on torch's OpenMP threads (prunus.compression.torch.forksafe), and only tests that run
# with the defaults can show it.
