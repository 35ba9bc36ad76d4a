"""l2p: the L2P ("Latent-to-Pixel") pixel-space generator on diffusers, and the tools around it."""

from .detailer_head import DetailerHead
from .pipeline_l2p import L2PPipeline
from .rope import RopeScaling, RotaryPositions, rope_scaling
from .transfer import freeze_for_transfer
from .transformer_l2p import L2PTransformer2DModel

__all__ = [
    "DetailerHead",
    "L2PPipeline",
    "L2PTransformer2DModel",
    "RopeScaling",
    "RotaryPositions",
    "freeze_for_transfer",
    "rope_scaling",
]
