"""l2p: the L2P ("Latent-to-Pixel") pixel-space generator on diffusers, and the tools around it.

The names below load on first use, so `import l2p.toyworld` (numpy and PIL only) does not pay for
importing diffusers and transformers.
"""

import importlib

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


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'l2p' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
