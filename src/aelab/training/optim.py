"""Adam for small models: the fused kernel, called without the per-step Python bookkeeping.

``torch.optim.Adam(fused=True)`` runs one kernel over all parameters, but each ``step()`` first rebuilds
its lists of parameters, gradients and states in Python (~0.2-0.3 ms on a 2-core CPU: a tenth of a
dense-autoencoder step). :class:`LeanAdam` is that same optimizer, with the same state and the same
``state_dict``, which keeps the lists after the first step and hands them straight to the kernel:
bit for bit the same update.
"""
from __future__ import annotations

import torch


class LeanAdam(torch.optim.Adam):
    """``torch.optim.Adam(fused=True)``, stepping through cached lists once every state exists.

    Falls back to Adam's own ``step`` whenever the fast path does not apply: a closure, a parameter
    without a gradient, several devices or dtypes, amsgrad, maximize, or before the first step.
    """

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.0, **kwargs):
        super().__init__(params, lr=lr, weight_decay=weight_decay, fused=True, **kwargs)
        self._lists = None
        self._failed_at = None  # len(self.state) when building the lists last failed: retry only once it changes

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        self._lists = self._failed_at = None  # loading replaces the state tensors (and the groups' settings)

    def add_param_group(self, param_group) -> None:
        super().add_param_group(param_group)
        # Optimizer.__init__ adds the first groups before __init__ above sets these; they start cleared there
        self._lists = self._failed_at = None

    def _build_lists(self):
        groups = []
        for group in self.param_groups:
            if group["amsgrad"] or group["maximize"] or group.get("decoupled_weight_decay", False):
                return None
            params = list(group["params"])
            states = [self.state.get(p, {}) for p in params]
            if not all("exp_avg" in s for s in states):
                return None
            if len({(p.device, p.dtype) for p in params}) > 1:
                return None
            groups.append((group, params, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                           [s["step"] for s in states]))
        return groups

    @torch.no_grad()
    def step(self, closure=None):
        if closure is None and self._lists is None and self.state and self._failed_at != len(self.state):
            self._lists = self._build_lists()
            self._failed_at = None if self._lists is not None else len(self.state)
        if closure is not None or not self._lists:
            return super().step(closure)
        grads = [[p.grad for p in params] for _, params, *_ in self._lists]
        if any(g is None for gs in grads for g in gs):
            return super().step(closure)
        for (group, params, exp_avgs, exp_avg_sqs, steps), gs in zip(self._lists, grads):
            if not params:
                continue
            beta1, beta2 = group["betas"]
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(params, gs, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=group["lr"],
                               beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                               maximize=False, grad_scale=None, found_inf=None)
        return None


def make_adam(params, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam with the fused kernel (one pass over all parameters; CUDA, and CPU since torch 2.4), stepped
    by :class:`LeanAdam`; plain Adam where the fused kernel is missing."""
    params = list(params)
    try:
        return LeanAdam(params, lr=lr, weight_decay=weight_decay)
    except (RuntimeError, TypeError, ValueError):  # older torch or a device without the fused kernel
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
