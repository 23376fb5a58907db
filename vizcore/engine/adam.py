"""Adam and NAdam for the render loop, without `torch.optim`: constructing a torch optimizer imports `torch._dynamo`
(1.5-2 s of start-up on a 2-core CPU) for a loop that never compiles anything.

The updates are torch's own single-tensor Adam and NAdam (no weight decay, no AMSGrad) operation for operation, so
renders are the same images as with `torch.optim`; `tests/test_engine.py` compares them step by step. NAdam (Dozat
2016, horama's optimizer) is the render's default: a Nesterov look-ahead with a momentum coefficient of about 0.46
over a render's steps (Adam's 0.9), which reached 1.09-1.11x Adam's class logits at the same steps (bench/RESULTS.md,
2026-12-07 issue 27).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

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

    def _moments(self) -> Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Each parameter with a gradient (complex ones as real views, as torch does) after the moments' update:
        (parameter, gradient, first moment, second moment)."""
        for p, avg, avg_sq in zip(self.params, self._avg, self._avg_sq):
            if p.grad is None:
                continue
            grad = p.grad
            if torch.is_complex(p):  # real and imaginary parts are two real parameters
                grad, p, avg, avg_sq = (torch.view_as_real(t) for t in (grad, p, avg, avg_sq))
            avg.lerp_(grad, 1 - self.beta1)
            avg_sq.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
            yield p, grad, avg, avg_sq

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        self.steps += 1
        step = float(self.steps)
        step_size = self.lr / (1 - self.beta1**step)
        bias_correction2_sqrt = (1 - self.beta2**step) ** 0.5
        for p, _grad, avg, avg_sq in self._moments():
            denom = (avg_sq.sqrt() / bias_correction2_sqrt).add_(self.eps)
            p.addcdiv_(avg, denom, value=-step_size)


class NAdam(Adam):
    """NAdam (Dozat 2016) with torch's defaults: betas (0.9, 0.999), eps 1e-8, momentum decay 4e-3 (the momentum
    coefficient 0.9 * (1 - 0.5 * 0.96^(0.004 t)): 0.45 at the first step, 0.46 at step 144, 0.52 at step 1000)."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, momentum_decay: float = 4e-3) -> None:
        super().__init__(params, lr, betas, eps)
        self.momentum_decay = momentum_decay
        self._mu_product = torch.ones(())  # float32, as torch keeps it: the same rounding, the same images

    def _mu(self, step: float) -> float:
        return self.beta1 * (1.0 - 0.5 * (0.96 ** (step * self.momentum_decay)))

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        self.steps += 1
        step = float(self.steps)
        mu, mu_next = self._mu(step), self._mu(step + 1)
        self._mu_product *= mu
        product = self._mu_product.item()
        bias_correction2 = 1 - self.beta2**step
        for p, grad, avg, avg_sq in self._moments():
            denom = avg_sq.div(bias_correction2).sqrt().add_(self.eps)
            p.addcdiv_(grad, denom, value=-self.lr * (1.0 - mu) / (1.0 - product))
            p.addcdiv_(avg, denom, value=-self.lr * mu_next / (1.0 - product * mu_next))


#: the render's optimizers by name (`RenderOptions.optimizer`)
OPTIMIZERS: dict[str, Callable[..., Adam]] = {"nadam": NAdam, "adam": Adam}
