"""Weight initialisation for Z-Image-family DiTs trained from nothing (the toy source, the scratch baseline).

diffusers' `ZImageTransformer2DModel` is built to load pretrained weights, so its fresh modules keep PyTorch's
default init: every adaLN modulation then gives each block a random scale and a random tanh gate, and the
final layer a random output. Trained from there, the toy DiT learnt backgrounds but after 1500 steps still
ignored what the prompt said about objects. DiT's "adaLN-Zero" recipe instead starts every block as the
identity (scale 1, gate 0) and the output at zero, so early gradients shape the conditioning pathways first;
it is what DiT-family models are trained with.
"""

from __future__ import annotations

import torch.nn as nn


def adaln_zero_init(model: nn.Module) -> nn.Module:
    """In place: Xavier-uniform linear layers with zero biases, small normal embeddings of the timestep, and
    zero adaLN modulations and final projections. Convolutions (a Detailer Head) keep their default init."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    t_embedder = getattr(model, "t_embedder", None)
    if t_embedder is not None:
        for module in t_embedder.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
    for name, module in model.named_modules():
        if name.endswith("adaLN_modulation"):
            for layer in module.modules():
                if isinstance(layer, nn.Linear):
                    nn.init.zeros_(layer.weight)
                    nn.init.zeros_(layer.bias)
    for final in getattr(model, "all_final_layer", {}).values():
        nn.init.zeros_(final.linear.weight)
        nn.init.zeros_(final.linear.bias)
    return model
