import os
import sys
from pathlib import Path

import torch

# Tests are CPU-only and must not reach any hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))
# L2P_TEST_THREADS lets a test run leave cores to other work on a shared machine.
torch.set_num_threads(int(os.environ.get("L2P_TEST_THREADS", min(2, os.cpu_count() or 1))))
