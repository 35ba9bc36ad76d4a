"""Weight-only quantization of the DiT, through diffusers' torchao backend (optional: needs `pip install torchao`).

`L2PPipeline.from_pretrained(folder, quantization_config=dit_quantization("int8"))` (or `ZImagePipeline`'s) stores
the transformer's Linear weights in int8 (or fp8) with per-channel scales and computes in the activations'
dtype; the text encoder and the Detailer Head's convolutions stay as they are.
"""

from __future__ import annotations

# kind -> the torchao config class
WEIGHT_ONLY = {"int8": "Int8WeightOnlyConfig", "fp8": "Float8WeightOnlyConfig"}


def dit_quantization(kind: str = "int8"):
    """A diffusers `PipelineQuantizationConfig` quantizing only the `transformer` component."""
    if kind not in WEIGHT_ONLY:
        raise ValueError(f"unknown weight-only quantization {kind!r}; choose one of {sorted(WEIGHT_ONLY)}")
    try:
        import torchao.quantization as torchao_quantization
    except ImportError:
        raise ImportError("weight-only quantization needs torchao, which is not installed: pip install torchao") from None
    from diffusers import TorchAoConfig
    from diffusers.quantizers import PipelineQuantizationConfig

    config = getattr(torchao_quantization, WEIGHT_ONLY[kind])()
    return PipelineQuantizationConfig(quant_mapping={"transformer": TorchAoConfig(config)})
