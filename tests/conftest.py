import os
import sys
from pathlib import Path

import torch

# Tests are CPU-only and must not reach any hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))
# The cores are shared among pytest-xdist's workers (pyproject.toml), so that two workers do not each run
# torch on every core. L2P_TEST_THREADS lets a test run leave cores to other work on a shared machine.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", 1))
_threads = max(1, min(2, (os.cpu_count() or 1) // _workers))
torch.set_num_threads(int(os.environ.get("L2P_TEST_THREADS", _threads)))
