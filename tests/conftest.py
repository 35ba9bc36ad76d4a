import os
import sys
from pathlib import Path

import torch

# Tests are CPU-only and must not reach any hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
