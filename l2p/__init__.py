"""l2p: the L2P ("Latent-to-Pixel") pixel-space generator on diffusers, and the tools around it.

The names below load on first use, so `import l2p.toyworld` (numpy and PIL only) does not pay for
importing diffusers and transformers.
"""

from .lazy import lazy_exports

_EXPORTS = {
    "DetailerHead": ".detailer_head",
    "L2PPipeline": ".pipeline_l2p",
    "L2PTransformer2DModel": ".transformer_l2p",
    "RopeScaling": ".rope",
    "RotaryPositions": ".rope",
    "freeze_for_transfer": ".transfer",
    "rope_scaling": ".rope",
}

__all__ = sorted(_EXPORTS)

# Saved pipelines name their transformer ["l2p", "L2PTransformer2DModel"]; `DiffusionPipeline.from_pretrained`
# then picks its load method by looking the diffusers base classes up in this package, so `ModelMixin` must
# be reachable from here too (it is not part of the API).
__getattr__, __dir__ = lazy_exports(__name__, {**_EXPORTS, "ModelMixin": ".transformer_l2p"})
