"""The layer protocol, parameters, containers and the configuration registry.

A :class:`Module` maps an array to an array with ``forward`` and maps the gradient of its
output back with ``backward``, which also adds the gradients of its parameters into their
``grad``. Each module keeps what its backward needs from the last forward, so a forward
and a backward alternate (the training loop's rhythm). Containers compose modules:
:class:`Sequential` chains them, :class:`Parallel` runs branches on the same input and
adds or concatenates their outputs, which expresses residual blocks
(:func:`Residual`) and the concatenating skips of a U-Net (:func:`SkipConcat`).

Every module can describe itself as a JSON-ready configuration (its constructor
arguments, children nested) so that a saved model can be rebuilt without its code.

A model lives on the host (NumPy arrays) or on a CUDA device: :meth:`Module.to_device`
and :meth:`Module.to_host` move its parameters, their gradients and its buffers, and
:attr:`Module.device` says where it is. Layers with parameters refuse input from the other
side with a ``TypeError`` that names them.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .._params import fail
from . import _backend as B

_REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: make ``cls`` rebuildable from its saved configuration."""
    _REGISTRY[cls.__name__] = cls
    return cls


class Parameter:
    """A trainable array and the gradient accumulated into it.

    Parameters
    ----------
    value : ndarray or CUDA device array
    decay : bool
        Whether L2 weight decay applies (weights yes; biases and normalisation no).
    """

    __slots__ = ("value", "grad", "decay")

    def __init__(self, value: np.ndarray, decay: bool = True):
        self.value = value
        self.grad = B.zeros_like(value)
        self.decay = decay

    @property
    def shape(self) -> tuple:
        return self.value.shape

    def __repr__(self) -> str:
        return f"Parameter(shape={self.value.shape}, dtype={self.value.dtype})"


class Module:
    """Base class of layers and containers.

    Subclasses implement ``forward(x)`` and ``backward(grad_output, input_grad=True)``;
    ``backward`` returns the gradient with respect to the input (or None when
    ``input_grad`` is False, which lets the first layer of a network skip that work).
    Parameters live in attributes holding :class:`Parameter`, buffers (running
    statistics) in the dict ``self.buffers``, children in ``self.children`` (a dict).
    """

    def __init__(self):
        self.training = True
        self._device = B.CPU
        self.children: dict[str, Module] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self._params: dict[str, Parameter] = {}

    # ------------------------------------------------------------------ the protocol ---
    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad_output: np.ndarray, input_grad: bool = True):
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def config(self) -> dict:
        """Constructor arguments that rebuild this module (JSON-ready)."""
        return {}

    @classmethod
    def from_config(cls, config: dict) -> Module:
        return cls(**config)

    # ---------------------------------------------------------------- parameters ---
    def add_parameter(self, name: str, value: np.ndarray, decay: bool = True) -> Parameter:
        p = Parameter(value, decay)
        self._params[name] = p
        return p

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """``(dotted name, Parameter)`` for this module and its children, in a fixed order."""
        for name, p in self._params.items():
            yield prefix + name, p
        for cname, child in self.children.items():
            yield from child.named_parameters(f"{prefix}{cname}.")

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        for name, b in self.buffers.items():
            yield prefix + name, b
        for cname, child in self.children.items():
            yield from child.named_buffers(f"{prefix}{cname}.")

    def num_parameters(self) -> int:
        return int(sum(p.value.size for p in self.parameters()))

    def zero_grad(self) -> None:
        for p in self.parameters():
            B.fill(p.grad, 0)

    def state(self) -> dict[str, np.ndarray]:
        """Every parameter and buffer by dotted name (NumPy copies, also for a model on
        the device)."""
        out = {f"params/{k}": B.host_copy(p.value) for k, p in self.named_parameters()}
        out.update({f"buffers/{k}": B.host_copy(b) for k, b in self.named_buffers()})
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Copy values from :meth:`state` (shapes must match; dtypes are converted); the
        model stays where it is (host or device)."""
        own = {f"params/{k}": p.value for k, p in self.named_parameters()}
        own.update({f"buffers/{k}": b for k, b in self.named_buffers()})
        missing = sorted(set(own) - set(state))
        unknown = sorted(set(state) - set(own))
        if missing or unknown:
            raise fail("load_state", f"the state does not match the model: missing {missing}, "
                                     f"unexpected {unknown}")
        for k, dst in own.items():
            src = B.as_array(state[k])
            if tuple(src.shape) != tuple(dst.shape):
                raise fail("load_state", f"`{k}` has shape {tuple(src.shape)}, the model "
                                         f"wants {tuple(dst.shape)}")
            B.assign(dst, src)

    def astype(self, dtype) -> Module:
        """Convert every parameter and buffer to ``dtype`` in place; returns ``self``."""
        dtype = np.dtype(dtype)
        for m in self.modules():
            for p in m._params.values():
                p.value = _converted(p.value, dtype)
                p.grad = B.zeros_like(p.value)
            for k in m.buffers:
                m.buffers[k] = _converted(m.buffers[k], dtype)
        return self

    # ------------------------------------------------------------------ placement ---
    @property
    def device(self) -> str:
        """Where the model is: ``"cpu"`` (NumPy arrays) or ``"cuda"`` (device arrays)."""
        return getattr(self, "_device", B.CPU)

    def _move(self, where: str) -> Module:
        for m in self.modules():
            for p in m._params.values():
                p.value = B.to(p.value, where)
                p.grad = B.to(p.grad, where)
            for k in m.buffers:
                m.buffers[k] = B.to(m.buffers[k], where)
            m._device = where
            m._moved(where)
        return self

    def to_device(self) -> Module:
        """Copy every parameter, gradient and buffer to the current CUDA device (Numba
        device arrays); the model then takes device arrays as input and keeps every
        intermediate result on the device. Returns ``self``.

        Examples
        --------
        >>> from gridconv import nn                                 # doctest: +SKIP
        >>> model = nn.Sequential(nn.Dense(4, 2)).to_device()      # doctest: +SKIP
        >>> model.device                                           # doctest: +SKIP
        'cuda'
        """
        from ..device import backends

        info = backends()["cuda"]
        if not info["available"]:
            raise RuntimeError(f"{type(self).__name__}.to_device: no CUDA device to move "
                               f"the model to ({info['reason']})")
        return self._move(B.CUDA)

    def to_host(self) -> Module:
        """Copy every parameter, gradient and buffer back to NumPy arrays; returns
        ``self``."""
        return self._move(B.CPU)

    def _moved(self, where: str) -> None:
        """Hook for layers that cache arrays of the other side (called after a move)."""

    def _expect(self, a, what: str = "input") -> None:
        """A ``TypeError`` naming the layer when ``a`` is not where the layer's parameters
        are."""
        where = B.location(a)
        if where != self.device:
            kind = "a CUDA device array" if where == B.CUDA else "a NumPy (host) array"
            fix = ("gridconv.to_device(x) or model.to_host()" if where == B.CPU
                   else "gridconv.to_host(x) or model.to_device()")
            raise TypeError(f"{type(self).__name__}: the {what} is {kind} but the layer's "
                            f"parameters are {B.describe(self.device)}; move one of them "
                            f"({fix})")

    @property
    def dtype(self) -> np.dtype:
        ps = self.parameters()
        return ps[0].value.dtype if ps else np.dtype(np.float32)

    # ------------------------------------------------------------------- modes ---
    def modules(self) -> Iterator[Module]:
        yield self
        for child in self.children.values():
            yield from child.modules()

    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> Module:
        return self.train(False)

    # ---------------------------------------------------------------- printing ---
    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items()
                         if not isinstance(v, (dict, list)) or k not in ("layers", "branches"))
        head = f"{type(self).__name__}({args})"
        if not self.children:
            return head
        body = "\n".join(f"  ({k}): " + repr(c).replace("\n", "\n  ")
                         for k, c in self.children.items())
        return f"{type(self).__name__}(\n{body}\n)"


def _converted(a, dtype):
    """A converted copy of ``a`` (never ``a`` itself), on the same side."""
    if B.is_device(a):
        out = B.astype(a, dtype)
        return B.copy(out) if out is a else out
    return a.astype(dtype)


def serialize(module: Module) -> dict:
    """A module as ``{"class": name, "config": {...}}``, children nested."""
    return {"class": type(module).__name__, "config": module.config()}


def deserialize(d: dict) -> Module:
    """Rebuild a module from :func:`serialize` output (parameters freshly initialised)."""
    name = d.get("class")
    if name not in _REGISTRY:
        raise fail("load", f"unknown layer class {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name].from_config(d["config"])


@register
class Sequential(Module):
    """Layers applied one after the other; indexable and sliceable.

    ``model[a:b]`` is a Sequential sharing the same layer objects (Grad-CAM uses this to
    split a classifier into its features and its head).
    """

    def __init__(self, *layers: Module):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: layer {i} must be a Module, got "
                                f"{type(layer).__name__}")
            self.children[str(i)] = layer

    @property
    def layers(self) -> list[Module]:
        return list(self.children.values())

    def __len__(self) -> int:
        return len(self.children)

    def __getitem__(self, i):
        layers = self.layers
        if isinstance(i, slice):
            out = Sequential(*layers[i])
            out.training = self.training
            out._device = self.device
            return out
        return layers[i]

    def __iter__(self):
        return iter(self.layers)

    def forward(self, x):
        for layer in self.children.values():
            x = layer.forward(x)
        return x

    def backward(self, grad_output, input_grad=True):
        layers = self.layers
        g = grad_output
        for i in range(len(layers) - 1, -1, -1):
            g = layers[i].backward(g, input_grad=input_grad or i > 0)
        return g

    def config(self):
        return {"layers": [serialize(m) for m in self.children.values()]}

    @classmethod
    def from_config(cls, config: dict) -> Sequential:
        return cls(*[deserialize(d) for d in config["layers"]])


@register
class Identity(Module):
    """Passes its input through (a shortcut branch)."""

    def forward(self, x):
        return x

    def backward(self, grad_output, input_grad=True):
        return grad_output if input_grad else None


@register
class Parallel(Module):
    """Branches on the same input, merged by sum (``"add"``) or channel concatenation.

    ``Parallel(body, Identity(), merge="add")`` is a residual block;
    ``Parallel(Identity(), inner, merge="concat")`` is a U-Net skip connection.
    """

    def __init__(self, *branches: Module, merge: str = "add"):
        super().__init__()
        if merge not in ("add", "concat"):
            raise fail("Parallel", f"`merge` must be 'add' or 'concat', got {merge!r}")
        if len(branches) < 1:
            raise fail("Parallel", "needs at least one branch")
        self.merge = merge
        for i, b in enumerate(branches):
            if not isinstance(b, Module):
                raise TypeError(f"Parallel: branch {i} must be a Module, got "
                                f"{type(b).__name__}")
            self.children[str(i)] = b
        self._sizes: list[int] = []

    def forward(self, x):
        outs = [b.forward(x) for b in self.children.values()]
        if self.merge == "add":
            shapes = {tuple(o.shape) for o in outs}
            if len(shapes) != 1:
                raise fail("Parallel", f"branches to add must give one shape, got "
                                       f"{sorted(shapes)}")
            y = B.copy(outs[0]) if outs[0] is x else outs[0]
            for o in outs[1:]:
                y = B.add(y, o)
            return y
        self._sizes = [o.shape[1] for o in outs]
        return B.concat_channels(outs)

    def backward(self, grad_output, input_grad=True):
        branches = list(self.children.values())
        if self.merge == "add":
            grads = [B.contiguous(grad_output)] * len(branches)
        else:
            grads = B.split_channels(grad_output, self._sizes)
        total = None
        for b, g in zip(branches, grads):
            gx = b.backward(g, input_grad=input_grad)
            if gx is not None:
                total = gx if total is None else B.add(total, gx)
        return total

    def config(self):
        return {"branches": [serialize(b) for b in self.children.values()],
                "merge": self.merge}

    @classmethod
    def from_config(cls, config: dict) -> Parallel:
        return cls(*[deserialize(d) for d in config["branches"]], merge=config["merge"])




def Residual(body: Module, shortcut: Module | None = None) -> Parallel:  # noqa: N802
    """``y = body(x) + shortcut(x)`` (the shortcut defaults to the identity)."""
    return Parallel(body, shortcut if shortcut is not None else Identity(), merge="add")


def SkipConcat(inner: Module) -> Parallel:  # noqa: N802
    """``y = concat([x, inner(x)], axis=1)``: the skip connection of a U-Net level."""
    return Parallel(Identity(), inner, merge="concat")
