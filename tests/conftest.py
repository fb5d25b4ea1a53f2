import os

# Tests share two cores with each other's processes; one thread each is faster overall.
os.environ.setdefault('OMP_NUM_THREADS', '1')
