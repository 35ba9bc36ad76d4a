"""Weight-only quantization of the DiT through diffusers' torchao backend (skipped where torchao is absent)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from l2p import L2PPipeline
from l2p.quantization import dit_quantization

EMBEDDED = Path(__file__).resolve().parent.parent / "assets" / "tiny-l2p"


def generate(pipe):
    return pipe("a yellow triangle on a black background", height=128, width=128, num_inference_steps=4,
                output_type="np", generator=torch.Generator().manual_seed(0)).images


def test_unknown_kind_is_refused_before_anything_loads():
    with pytest.raises(ValueError, match="int8"):
        dit_quantization("int3")


def test_int8_weights_in_the_dit_only_and_images_stay_close():
    pytest.importorskip("torchao", reason="torchao is not installed (pip install torchao): weight-only quantization is optional")
    reference = generate(L2PPipeline.from_pretrained(EMBEDDED))
    pipe = L2PPipeline.from_pretrained(EMBEDDED, quantization_config=dit_quantization("int8"))
    linears = [m for m in pipe.transformer.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(type(m.weight).__name__ == "Int8Tensor" for m in linears)
    assert all(type(p).__name__ == "Parameter" for p in pipe.text_encoder.parameters())
    quantized = generate(pipe)
    assert 0 < np.abs(quantized - reference).mean() < 0.01
