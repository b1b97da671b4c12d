"""patternsearch's tests.

The suite runs on two workers, one per core (README: ``pytest -n 2``): each test
process, and every command it starts, computes on one thread. torch's default
of a thread per core in each worker oversubscribes the cores: test_cli.py and
test_end_to_end.py took 132 s that way and 109 s on one thread each (2-core AMD
EPYC host). Set before any test module imports torch; a value you set wins.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
