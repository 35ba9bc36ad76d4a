"""Which parameters the transfer trains: the shallow, pixel-facing parts; the middle blocks stay frozen."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

POLICIES = ("release", "paper")
# The DiT's parts outside its blocks, by attribute name: what `also_frozen` may name on top of a policy.
PARTS = ("all_x_embedder", "x_pad_token", "noise_refiner", "t_embedder", "cap_embedder", "cap_pad_token",
         "context_refiner", "local_decoder")


def freeze_for_transfer(model: nn.Module, n_shallow: int = 5, policy: str = "release",
                        also_frozen: Sequence[str] = ()) -> int:
    """Freeze an `L2PTransformer2DModel` for the transfer and return its trainable parameter count.

    - "release": freeze only `layers[n_shallow:-n_shallow]`; everything else trains (embedders, pad tokens,
      both refiner pairs, the first and last n blocks, the head), as the released training code does.
    - "paper": train only the RGB patch embedder, the first and last `n_shallow` blocks and the Detailer Head.
    `n_shallow` may reach half the depth (then no block is frozen: the paper's "all" ablation). `also_frozen`
    names parts (`PARTS`) to freeze on top of the policy, for ablations of what the transfer may move (the text
    path, the timestep embedder that modulates the frozen blocks too).
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown freeze policy {policy!r}; choose one of {list(POLICIES)}")
    unknown = sorted(set(also_frozen) - set(PARTS))
    if unknown:
        raise ValueError(f"cannot freeze {unknown}: not among the model's parts outside its blocks {list(PARTS)}")
    depth = len(model.layers)
    if not 0 <= 2 * n_shallow <= depth:
        raise ValueError(f"n_shallow={n_shallow} is too large for a model of {depth} blocks (at most {depth // 2})")
    shallow = set(range(n_shallow)) | set(range(depth - n_shallow, depth))
    if policy == "release":
        model.requires_grad_(True)
        for index, block in enumerate(model.layers):
            block.requires_grad_(index in shallow)
    else:
        model.requires_grad_(False)
        for module in [model.all_x_embedder, model.local_decoder] + [model.layers[i] for i in sorted(shallow)]:
            module.requires_grad_(True)
    for name in also_frozen:
        getattr(model, name).requires_grad_(False)
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
