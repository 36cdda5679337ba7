"""Grad-CAM saliency maps (Selvaraju et al., 2017) for 1-D, 2-D and 3-D classifiers."""

from __future__ import annotations

import numpy as np

from .._params import fail
from . import _backend as B
from .layers import Flatten, GlobalAvgPool, GlobalMaxPool
from .module import Sequential


def _default_split(model: Sequential) -> int:
    """Index of the first global pooling or flatten layer at the top level: the layers
    before it produce the last spatial feature map."""
    for i, layer in enumerate(model):
        if isinstance(layer, (GlobalAvgPool, GlobalMaxPool, Flatten)):
            return i
    raise fail("grad_cam", "could not find where the spatial features end (no global "
                           "pooling or Flatten layer at the top level); pass `layer`")


def grad_cam(model: Sequential, x: np.ndarray, class_index=None, *, layer: int | None = None,
             upsample: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Class activation maps from the gradients of a class score.

    The model is split at top-level index ``layer`` (default: where global pooling or
    flattening begins) into features ``A = model[:layer](x)`` ``(N, C, *s)`` and a head.
    The map is ``relu(sum_c alpha_c A_c)`` with ``alpha_c`` the spatial mean of
    ``d score / d A_c``, scaled to [0, 1] per sample and (``upsample``) resized linearly to
    the input's spatial shape.

    Parameters
    ----------
    model : Sequential classifier producing logits ``(N, K)``
    x : ndarray, shape (N, C_in, *S)
        A model on the CUDA device runs there (``x`` is copied over); the map is
        computed on the host from the feature map and its gradient.
    class_index : int or array of N ints, optional
        The class to explain; default the predicted class of each sample.

    Returns
    -------
    cam : ndarray, shape (N, *S) (or the feature map's ``(N, *s)``), float32 in [0, 1]
    classes : ndarray of int, shape (N,)
    """
    from scipy import ndimage

    if not isinstance(model, Sequential):
        raise TypeError(f"grad_cam: `model` must be a Sequential, got {type(model).__name__}")
    on_device = model.device == B.CUDA
    x = B.to_host(B.as_array(x))
    k = _default_split(model) if layer is None else int(layer)
    if not 0 < k < len(model):
        raise fail("grad_cam", f"`layer` must split the model (1..{len(model) - 1}), got {k}")
    was_training = model.training
    model.eval()
    features, head = model[:k], model[k:]
    a_run = features.forward(B.to_device(x, model.dtype) if on_device else x)
    if a_run.ndim < 3:
        raise fail("grad_cam", f"the features before layer {k} are not spatial "
                               f"(shape {tuple(a_run.shape)})")
    scores = B.to_host(head.forward(a_run))
    a = B.to_host(a_run)
    n = x.shape[0]
    classes = (np.argmax(scores, axis=1) if class_index is None
               else np.broadcast_to(np.asarray(class_index, int), (n,)).copy())
    g = np.zeros_like(scores)
    g[np.arange(n), classes] = 1
    da = B.to_host(head.backward(B.to_device(g) if on_device else g))
    model.zero_grad()  # the head's parameter gradients are a by-product, not training
    alpha = da.reshape(n, a.shape[1], -1).mean(axis=2)
    cam = np.maximum(np.einsum("nc,nc...->n...", alpha, a), 0)
    if upsample and cam.shape[1:] != x.shape[2:]:
        factors = [t / s for t, s in zip(x.shape[2:], cam.shape[1:])]
        cam = np.stack([ndimage.zoom(c, factors, order=1, mode="nearest") for c in cam])
        cam = cam[(slice(None), *(slice(0, t) for t in x.shape[2:]))]
    peak = cam.reshape(n, -1).max(axis=1)
    cam = cam / np.where(peak > 0, peak, 1).reshape((n,) + (1,) * (cam.ndim - 1))
    model.train(was_training)
    return cam.astype(np.float32), classes
