"""Adam for the render loop, without `torch.optim`: constructing a torch optimizer imports `torch._dynamo` (1.5-2 s
of start-up on a 2-core CPU) for a loop that never compiles anything.

The update is torch's own single-tensor Adam (no weight decay, no AMSGrad) operation for operation, so renders are
the same images as with `torch.optim.Adam`; `tests/test_engine.py` compares the two step by step.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class Adam:
    """Adam (Kingma & Ba 2015) over `params` with torch's defaults: betas (0.9, 0.999), eps 1e-8."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr, (self.beta1, self.beta2), self.eps = float(lr), betas, eps
        self.steps = 0
        self._avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self._avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients (set to None, as torch's default)."""
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        self.steps += 1
        step = float(self.steps)
        step_size = self.lr / (1 - self.beta1**step)
        bias_correction2_sqrt = (1 - self.beta2**step) ** 0.5
        for p, avg, avg_sq in zip(self.params, self._avg, self._avg_sq):
            if p.grad is None:
                continue
            grad = p.grad
            if torch.is_complex(p):  # as torch does: real and imaginary parts are two real parameters
                grad, p, avg, avg_sq = (torch.view_as_real(t) for t in (grad, p, avg, avg_sq))
            avg.lerp_(grad, 1 - self.beta1)
            avg_sq.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
            denom = (avg_sq.sqrt() / bias_correction2_sqrt).add_(self.eps)
            p.addcdiv_(avg, denom, value=-step_size)
