"""Custom operators. `cost_volume` is the plane-sweep correlation volume of the Cross-view Module
(DESIGN §5): one `torch.library` op (`mtl3d::cost_volume`) with a chunked PyTorch reference, a
correlation-matrix forward for small CPU maps and fused Triton forward/backward kernels for CUDA tensors,
chosen by `backend="auto"`.
"""

from __future__ import annotations

from mtl3d_perception.ops.cost_volume import cost_volume

__all__ = ["cost_volume"]
