"""Optimisers: SGD with momentum and Adam, with L2 weight decay.

An optimiser holds the model's :class:`~gridconv.nn.module.Parameter` objects and
updates their values in place from their accumulated gradients. ``weight_decay`` adds
``weight_decay * value`` to the gradient of every parameter marked ``decay`` (weights of
convolutions and dense layers; not biases, normalisation or PReLU slopes). ``state()`` and
``load_state()`` carry the moments across a saved and resumed run.

Parameters on a CUDA device are updated in place by one fused kernel per parameter and
step; the moments live next to the parameters (moved along when the model moved after the
optimiser was made), and ``state()`` gives NumPy copies either way.
"""

from __future__ import annotations

import numpy as np

from .._params import fail
from . import _backend as B


class Optimizer:
    """Base class: ``step()`` applies one update, ``zero_grad()`` clears the gradients."""

    def __init__(self, params, lr: float, weight_decay: float = 0.0):
        self.params = list(params.parameters() if hasattr(params, "parameters") else params)
        name = type(self).__name__
        if not self.params:
            raise fail(name, "no parameters to optimise")
        if lr <= 0:
            raise fail(name, f"`lr` must be > 0, got {lr}")
        if weight_decay < 0:
            raise fail(name, f"`weight_decay` must be >= 0, got {weight_decay}")
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.steps = 0

    def zero_grad(self) -> None:
        for p in self.params:
            B.fill(p.grad, 0)

    def _grad(self, p) -> np.ndarray:
        if self.weight_decay and p.decay:
            return p.grad + p.value.dtype.type(self.weight_decay) * p.value
        return p.grad

    def _decay(self, p) -> float:
        """The weight decay of parameter ``p`` (0 when it is not decayed)."""
        return self.weight_decay if p.decay else 0.0

    def step(self) -> None:
        self.steps += 1
        for arrays in self._slots().values():  # follow parameters moved since
            for i, a in enumerate(arrays):
                where = B.location(self.params[i].value)
                if B.location(a) != where:
                    arrays[i] = B.to(a, where)
        for i, p in enumerate(self.params):
            if B.is_device(p.value):
                self._update_device(i, p)
            else:
                self._update(i, p, self._grad(p))

    def _update(self, i: int, p, g) -> None:
        raise NotImplementedError

    def _update_device(self, i: int, p) -> None:
        raise NotImplementedError

    def state(self) -> dict[str, np.ndarray]:
        """Moments and counters as arrays by name, for checkpoints (NumPy arrays; a
        device optimiser's moments are copied to the host)."""
        out = {"steps": np.array(self.steps), "lr": np.array(self.lr)}
        for key, arrays in self._slots().items():
            for i, a in enumerate(arrays):
                out[f"{key}/{i}"] = B.to_host(a)
        return out

    def load_state(self, state: dict) -> None:
        self.steps = int(state["steps"])
        self.lr = float(state["lr"])
        for key, arrays in self._slots().items():
            for i, a in enumerate(arrays):
                B.assign(a, state[f"{key}/{i}"])

    def _slots(self) -> dict[str, list[np.ndarray]]:
        return {}


class SGD(Optimizer):
    """Stochastic gradient descent with (Nesterov) momentum: ``v = momentum * v + g``,
    ``w -= lr * v`` (or ``lr * (g + momentum * v)`` with ``nesterov``)."""

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.9,
                 weight_decay: float = 0.0, nesterov: bool = False):
        super().__init__(params, lr, weight_decay)
        if not 0 <= momentum < 1:
            raise fail("SGD", f"`momentum` must be in [0, 1), got {momentum}")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        self.velocity = [B.zeros_like(p.value) for p in self.params]

    def _update(self, i, p, g):
        dt = p.value.dtype.type
        v = self.velocity[i]
        v *= dt(self.momentum)
        v += g
        step = g + dt(self.momentum) * v if self.nesterov else v
        p.value -= dt(self.lr) * step

    def _update_device(self, i, p):
        B.cuda().sgd_step(p.value, p.grad, self.velocity[i], self.lr, self.momentum,
                          self._decay(p), self.nesterov)

    def _slots(self):
        return {"velocity": self.velocity}


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction; L2 decay added to the gradient."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, lr, weight_decay)
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise fail("Adam", f"`betas` must be in [0, 1), got {betas}")
        self.beta1, self.beta2, self.eps = float(b1), float(b2), float(eps)
        self.m = [B.zeros_like(p.value) for p in self.params]
        self.v = [B.zeros_like(p.value) for p in self.params]

    def _update(self, i, p, g):
        dt = p.value.dtype.type
        m, v = self.m[i], self.v[i]
        m *= dt(self.beta1)
        m += dt(1 - self.beta1) * g
        v *= dt(self.beta2)
        v += dt(1 - self.beta2) * (g * g)
        c1 = 1 - self.beta1 ** self.steps
        c2 = 1 - self.beta2 ** self.steps
        p.value -= dt(self.lr / c1) * m / (np.sqrt(v / dt(c2)) + dt(self.eps))

    def _update_device(self, i, p):
        c1 = 1 - self.beta1 ** self.steps
        c2 = 1 - self.beta2 ** self.steps
        B.cuda().adam_step(p.value, p.grad, self.m[i], self.v[i], self.beta1, self.beta2,
                           self.lr / c1, c2, self.eps, self._decay(p))

    def _slots(self):
        return {"m": self.m, "v": self.v}
