"""Classic designed filters as weight arrays ready for :func:`gridconv.conv`.

Every function here returns a *spatial* kernel: a floating-point NumPy array of shape
``K = (K_1, ..., K_d)`` (float64 unless a ``dtype`` is given). :func:`as_weight` turns a
spatial kernel into a convolution weight of shape ``(C_out, C_in / groups, *K)``.

Conventions
-----------
* ``gridconv.conv`` computes a **cross-correlation** (``y[i] = sum_k w[k] x[i + k -
  centre]``), exactly as ``scipy.ndimage.correlate`` does. All kernels below are written
  for that convention: correlating with :func:`sobel` / :func:`prewitt` gives the same
  numbers as ``scipy.ndimage.sobel`` / ``scipy.ndimage.prewitt``; correlating with
  :func:`gaussian`, :func:`box` and :func:`laplacian` gives ``gaussian_filter``,
  ``uniform_filter`` and ``laplace``. With ``flip=True`` (true convolution) the symmetric
  kernels (identity, box, gaussian, laplacian, sharpen, ridge) give the same result and the
  antisymmetric derivative kernels (sobel, prewitt) give the **negated** result.
* For odd sizes, ``padding="same"`` with the default ``padding_mode="zeros"`` is
  ``scipy.ndimage``'s ``mode="constant"`` (``cval=0``); ``"reflect"``, ``"replicate"`` and
  ``"circular"`` are scipy's ``"mirror"``, ``"nearest"`` and ``"wrap"``. For an even size
  ``K`` scipy centres the kernel at index ``K // 2`` whereas ``padding="same"`` (split as
  TensorFlow does, the extra element on the high side) centres it at ``K // 2 - 1``: use
  ``origin=-1`` in scipy to compare.

Example
-------
>>> import numpy as np
>>> from gridconv import kernels
>>> kernels.sobel(axis=0)
array([[-1., -2., -1.],
       [ 0.,  0.,  0.],
       [ 1.,  2.,  1.]])
>>> kernels.as_weight(kernels.gaussian(1.0)).shape
(1, 1, 9, 9)
>>> # y = gridconv.conv(x, kernels.as_weight(kernels.gaussian(2.0)), padding="same")
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

__all__ = [
    "identity",
    "laplacian",
    "ridge",
    "sobel",
    "prewitt",
    "sharpen",
    "box",
    "gaussian",
    "as_weight",
]

_OP = "gridconv.kernels"


# ---------------------------------------------------------------------------------------
# argument checking
# ---------------------------------------------------------------------------------------


def _fail(func: str, message: str, exc: type[Exception] = ValueError) -> Exception:
    return exc(f"{_OP}.{func}: {message}")


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _is_seq(v) -> bool:
    if isinstance(v, np.ndarray):
        return v.ndim == 1
    return isinstance(v, Sequence) and not isinstance(v, (str, bytes))


def _check_ndim(ndim, func: str) -> int:
    if not _is_int(ndim):
        raise _fail(func, f"`ndim` must be an int >= 1 (the spatial rank), got {ndim!r}",
                    TypeError)
    if ndim < 1:
        raise _fail(func, f"`ndim` must be >= 1 (the spatial rank), got {ndim!r}")
    return int(ndim)


def _infer_ndim(func: str, ndim, **per_axis) -> int:
    """``ndim`` if given, else the length of the first per-axis sequence, else 2."""
    lengths = {name: len(v) for name, v in per_axis.items() if _is_seq(v)}
    if ndim is not None:
        ndim = _check_ndim(ndim, func)
        for name, n in lengths.items():
            if n != ndim:
                raise _fail(func, f"`{name}` has {n} entries but `ndim` is {ndim}; give one "
                                  f"value per spatial axis or a single value")
        return ndim
    if len(set(lengths.values())) > 1:
        raise _fail(func, "per-axis arguments disagree on the number of spatial axes: "
                          + ", ".join(f"`{k}` has {n}" for k, n in lengths.items()))
    if lengths:
        n = next(iter(lengths.values()))
        if n < 1:
            raise _fail(func, "per-axis arguments must have at least one entry, got an "
                              "empty sequence")
        return n
    return 2


def _check_dtype(dtype, func: str) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as err:
        raise _fail(func, f"`dtype` must be a floating-point dtype, got {dtype!r}",
                    TypeError) from err
    if dt.kind != "f":
        raise _fail(func, f"`dtype` must be a floating-point dtype (float32 or float64), "
                          f"got {dt}", TypeError)
    return dt


def _check_axis(axis, ndim: int, func: str) -> int:
    if not _is_int(axis):
        raise _fail(func, f"`axis` must be an int, got {axis!r}", TypeError)
    if not -ndim <= axis < ndim:
        raise _fail(func, f"`axis` must be in [{-ndim}, {ndim - 1}] for ndim={ndim}, "
                          f"got {axis}")
    return int(axis) % ndim


def _per_axis_ints(value, ndim: int, name: str, func: str, *, minimum: int = 1,
                   odd: bool = False) -> tuple[int, ...]:
    if _is_int(value):
        values = (int(value),) * ndim
    elif _is_seq(value):
        if not all(_is_int(v) for v in value):
            raise _fail(func, f"`{name}` must be an int or a sequence of ints, got {value!r}",
                        TypeError)
        values = tuple(int(v) for v in value)  # length already checked by _infer_ndim
    else:
        raise _fail(func, f"`{name}` must be an int or a sequence of {ndim} ints, got "
                          f"{value!r}", TypeError)
    if any(v < minimum for v in values):
        raise _fail(func, f"`{name}` must be >= {minimum} on every axis, got {value!r}")
    if odd and any(v % 2 == 0 for v in values):
        raise _fail(func, f"`{name}` must be odd on every axis (the kernel needs a centre), "
                          f"got {value!r}")
    return values


def _per_axis_reals(value, ndim: int, name: str, func: str) -> tuple[float, ...]:
    if _is_real(value):
        values = (float(value),) * ndim
    elif _is_seq(value):
        if not all(_is_real(v) for v in value):
            raise _fail(func, f"`{name}` must be a real number or a sequence of real "
                              f"numbers, got {value!r}", TypeError)
        values = tuple(float(v) for v in value)
    else:
        raise _fail(func, f"`{name}` must be a real number or a sequence of {ndim} real "
                          f"numbers, got {value!r}", TypeError)
    return values


def _check_real(value, name: str, func: str, *, minimum: float = 0.0) -> float:
    if not _is_real(value):
        raise _fail(func, f"`{name}` must be a real number, got {value!r}", TypeError)
    value = float(value)
    if not math.isfinite(value) or value < minimum:
        raise _fail(func, f"`{name}` must be finite and >= {minimum}, got {value!r}")
    return value


def _check_flag(value, name: str, func: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise _fail(func, f"`{name}` must be a bool, got {value!r}", TypeError)
    return bool(value)


def _outer(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """The separable kernel ``v_0 (x) v_1 (x) ... (x) v_{d-1}``."""
    out = np.ones((), dtype=np.float64)
    for v in vectors:
        out = np.multiply.outer(out, np.asarray(v, dtype=np.float64))
    return out


# ---------------------------------------------------------------------------------------
# the filters
# ---------------------------------------------------------------------------------------


def identity(size: int | Sequence[int] = 3, ndim: int | None = None, *,
             dtype=np.float64) -> np.ndarray:
    """The identity (Dirac delta) kernel: 1 at the centre, 0 elsewhere.

    Correlating (or convolving) with it, ``padding="same"``, returns the input unchanged.
    Useful as a building block (``sharpen = identity - amount * laplacian``) and to test
    pipelines.

    Parameters
    ----------
    size : int or sequence of int, default 3
        Kernel size, the same on every axis or one per axis. Must be odd (>= 1) so that the
        kernel has a centre.
    ndim : int, optional
        Spatial rank ``d``. Default: ``len(size)`` when ``size`` is a sequence, else 2.
    dtype : floating dtype, default float64

    Returns
    -------
    ndarray of shape ``(size,) * ndim`` (or ``tuple(size)``)

    Examples
    --------
    >>> identity()
    array([[0., 0., 0.],
           [0., 1., 0.],
           [0., 0., 0.]])
    >>> identity((1, 3)).tolist()
    [[0.0, 1.0, 0.0]]
    """
    func = "identity"
    ndim = _infer_ndim(func, ndim, size=size)
    shape = _per_axis_ints(size, ndim, "size", func, odd=True)
    dt = _check_dtype(dtype, func)
    k = np.zeros(shape, dtype=dt)
    k[tuple(s // 2 for s in shape)] = 1
    return k


def laplacian(ndim: int = 2, *, diagonals: bool = False, dtype=np.float64) -> np.ndarray:
    r"""The discrete Laplacian :math:`\nabla^2` on a 3-wide stencil.

    * ``diagonals=False`` (default): the sum over the axes of the second difference
      ``[1, -2, 1]`` -- the 3-point stencil in 1-D, the 5-point stencil in 2-D, the
      7-point stencil in 3-D (``2d + 1`` points in ``d``-D). Correlating with it is exactly
      ``scipy.ndimage.laplace``.
    * ``diagonals=True``: every one of the ``3**d - 1`` neighbours weighted 1 and the centre
      ``-(3**d - 1)``: the 8-neighbour Laplacian in 2-D, the 26-neighbour one in 3-D
      (in 1-D it equals the 3-point stencil). It approximates ``3**(d-1) * nabla^2`` (plus
      higher-order terms), i.e. ``3 * nabla^2`` in 2-D, and is more isotropic.

    The kernel sums to 0 and is symmetric, so correlation and convolution agree.

    Parameters
    ----------
    ndim : int, default 2
        Spatial rank ``d >= 1``.
    diagonals : bool, default False
        Include the diagonal neighbours (8-/26-neighbour variant).
    dtype : floating dtype, default float64

    Returns
    -------
    ndarray of shape ``(3,) * ndim``

    Examples
    --------
    >>> laplacian()
    array([[ 0.,  1.,  0.],
           [ 1., -4.,  1.],
           [ 0.,  1.,  0.]])
    >>> laplacian(diagonals=True)
    array([[ 1.,  1.,  1.],
           [ 1., -8.,  1.],
           [ 1.,  1.,  1.]])
    >>> laplacian(1).tolist()
    [1.0, -2.0, 1.0]
    """
    func = "laplacian"
    ndim = _check_ndim(ndim, func)
    diagonals = _check_flag(diagonals, "diagonals", func)
    dt = _check_dtype(dtype, func)
    centre = (1,) * ndim
    if diagonals:
        k = np.ones((3,) * ndim)
        k[centre] = 1 - 3 ** ndim
    else:
        k = np.zeros((3,) * ndim)
        for axis in range(ndim):
            for j in (0, 2):
                idx = list(centre)
                idx[axis] = j
                k[tuple(idx)] = 1
        k[centre] = -2 * ndim
    return k.astype(dt)


def ridge(ndim: int = 2, axis: int | None = None, *, dtype=np.float64) -> np.ndarray:
    """A ridge (bright line) detector.

    Two standard masks, both summing to 0 (zero response on flat regions) and symmetric
    (correlation and convolution agree):

    * ``axis=None`` (default): the isotropic ridge / point detector -- every neighbour
      ``-1``, the centre ``3**d - 1``::

          [[-1, -1, -1],
           [-1,  8, -1],
           [-1, -1, -1]]

      This is the "ridge detection" kernel of the standard table of image-processing
      kernels (https://en.wikipedia.org/wiki/Kernel_(image_processing)) and the
      point-detection mask of Gonzalez & Woods, *Digital Image Processing*, 4th ed.,
      section 10.2; it equals ``-laplacian(ndim, diagonals=True)``. It responds to thin
      bright structures (lines, points) of any orientation.
    * ``axis=a``: the oriented line-detection mask of Gonzalez & Woods (section 10.2,
      "line detection"): the negated second difference ``[-1, 2, -1]`` across ``axis`` and
      the box ``[1, 1, 1]`` along the other axes. It responds most strongly to a bright
      line (2-D) or sheet (3-D) one sample thick lying *perpendicular to* ``axis``. In
      2-D, ``axis=0`` is Gonzalez & Woods' "horizontal" mask::

          [[-1, -1, -1],
           [ 2,  2,  2],
           [-1, -1, -1]]

      and ``axis=1`` the "vertical" one.

    Parameters
    ----------
    ndim : int, default 2
        Spatial rank ``d >= 1``.
    axis : int, optional
        ``None`` for the isotropic detector, else the axis across which the ridge profile
        is taken (negative values count from the end).
    dtype : floating dtype, default float64

    Returns
    -------
    ndarray of shape ``(3,) * ndim``

    Examples
    --------
    >>> ridge()
    array([[-1., -1., -1.],
           [-1.,  8., -1.],
           [-1., -1., -1.]])
    >>> ridge(axis=1)
    array([[-1.,  2., -1.],
           [-1.,  2., -1.],
           [-1.,  2., -1.]])
    """
    func = "ridge"
    ndim = _check_ndim(ndim, func)
    dt = _check_dtype(dtype, func)
    if axis is None:
        k = -np.ones((3,) * ndim)
        k[(1,) * ndim] = 3 ** ndim - 1
        return k.astype(dt)
    axis = _check_axis(axis, ndim, func)
    vectors = [[1.0, 1.0, 1.0]] * ndim
    vectors[axis] = [-1.0, 2.0, -1.0]
    return _outer(vectors).astype(dt)


def _derivative(func: str, smooth: Sequence[float], axis, ndim, normalize, dtype):
    ndim = _check_ndim(ndim, func)
    axis = _check_axis(axis, ndim, func)
    normalize = _check_flag(normalize, "normalize", func)
    dt = _check_dtype(dtype, func)
    vectors = [list(smooth)] * ndim
    vectors[axis] = [-1.0, 0.0, 1.0]
    k = _outer(vectors)
    if normalize:
        k /= 2.0 * float(sum(smooth)) ** (ndim - 1)
    return k.astype(dt)


def sobel(axis: int, ndim: int = 2, *, normalize: bool = False,
          dtype=np.float64) -> np.ndarray:
    """The Sobel derivative kernel along ``axis``.

    The separable kernel with the central difference ``[-1, 0, 1]`` along ``axis`` and the
    smoothing ``[1, 2, 1]`` along every other axis (in 1-D just ``[-1, 0, 1]``); in 3-D
    this is the 3x3x3 Sobel-Feldman operator. Its sign is that of ``scipy.ndimage.sobel``:
    **correlating** with it (``gridconv.conv``, the default, or ``scipy.ndimage.correlate``)
    gives exactly ``scipy.ndimage.sobel(x, axis)`` (same boundary mode), positive where
    ``x`` increases with the index along ``axis``. True convolution (``flip=True``,
    ``scipy.ndimage.convolve``) flips the kernel, which negates it, and so gives
    ``-scipy.ndimage.sobel(x, axis)``.

    The kernel sums to 0. Unnormalised, the response to the ramp ``x = t * i_axis`` is
    ``2 * 4**(d-1) * t``; with ``normalize=True`` the kernel is divided by
    ``2 * 4**(d-1)``, the sum of its absolute weights (``8`` in 2-D, ``32`` in 3-D), so
    that it estimates the derivative itself.

    Parameters
    ----------
    axis : int
        Axis of the derivative, ``-ndim <= axis < ndim``.
    ndim : int, default 2
        Spatial rank ``d >= 1``.
    normalize : bool, default False
        Scale to unit gain on a ramp (off by default, as in scipy).
    dtype : floating dtype, default float64

    Returns
    -------
    ndarray of shape ``(3,) * ndim``

    Examples
    --------
    >>> sobel(axis=1)
    array([[-1.,  0.,  1.],
           [-2.,  0.,  2.],
           [-1.,  0.,  1.]])
    >>> sobel(0, ndim=1).tolist()
    [-1.0, 0.0, 1.0]
    >>> float(sobel(0, ndim=3).sum()), sobel(0, ndim=3).shape
    (0.0, (3, 3, 3))
    """
    return _derivative("sobel", (1.0, 2.0, 1.0), axis, ndim, normalize, dtype)


def prewitt(axis: int, ndim: int = 2, *, normalize: bool = False,
            dtype=np.float64) -> np.ndarray:
    """The Prewitt derivative kernel along ``axis``.

    The separable kernel with ``[-1, 0, 1]`` along ``axis`` and the box ``[1, 1, 1]``
    along every other axis (in 1-D just ``[-1, 0, 1]``). Sign convention of
    ``scipy.ndimage.prewitt``: **correlating** with it (``gridconv.conv``'s default) gives
    exactly ``scipy.ndimage.prewitt(x, axis)``; true convolution (``flip=True``) gives its
    negation. The kernel sums to 0; ``normalize=True`` divides it by ``2 * 3**(d-1)`` so
    that the response to a ramp of slope ``t`` is ``t``.

    Parameters
    ----------
    axis : int
        Axis of the derivative, ``-ndim <= axis < ndim``.
    ndim : int, default 2
        Spatial rank ``d >= 1``.
    normalize : bool, default False
        Scale to unit gain on a ramp.
    dtype : floating dtype, default float64

    Returns
    -------
    ndarray of shape ``(3,) * ndim``

    Examples
    --------
    >>> prewitt(axis=0)
    array([[-1., -1., -1.],
           [ 0.,  0.,  0.],
           [ 1.,  1.,  1.]])
    """
    return _derivative("prewitt", (1.0, 1.0, 1.0), axis, ndim, normalize, dtype)


def sharpen(ndim: int = 2, amount: float = 1.0, *, diagonals: bool = False,
            dtype=np.float64) -> np.ndarray:
    """The Laplacian sharpening kernel ``identity - amount * laplacian``.

    Adds ``amount`` times the negated Laplacian (the high frequencies) back to the signal.
    With ``amount=1`` in 2-D this is the classic::

        [[ 0, -1,  0],                         [[-1, -1, -1],
         [-1,  5, -1],   or, diagonals=True,    [-1,  9, -1],
         [ 0, -1,  0]]                          [-1, -1, -1]]

    The kernel sums to 1 (flat regions are unchanged) and is symmetric. ``amount=0`` is
    :func:`identity`.

    Parameters
    ----------
    ndim : int, default 2
        Spatial rank ``d >= 1``.
    amount : float, default 1.0
        Strength, finite and >= 0.
    diagonals : bool, default False
        Use the 8-/26-neighbour Laplacian (see :func:`laplacian`).
    dtype : floating dtype, default float64

    Returns
    -------
    ndarray of shape ``(3,) * ndim``

    Examples
    --------
    >>> sharpen()
    array([[ 0., -1.,  0.],
           [-1.,  5., -1.],
           [ 0., -1.,  0.]])
    >>> sharpen(1, amount=0.5).tolist()
    [-0.5, 2.0, -0.5]
    """
    func = "sharpen"
    ndim = _check_ndim(ndim, func)
    amount = _check_real(amount, "amount", func)
    diagonals = _check_flag(diagonals, "diagonals", func)
    dt = _check_dtype(dtype, func)
    k = identity(3, ndim) - amount * laplacian(ndim, diagonals=diagonals)
    return k.astype(dt)


def box(size: int | Sequence[int], ndim: int | None = None, *,
        dtype=np.float64) -> np.ndarray:
    """The box (moving-average) blur: all weights ``1 / prod(size)``, summing to 1.

    Correlating with it is ``scipy.ndimage.uniform_filter(x, size)`` (for odd sizes with
    ``padding="same"``; for an even size compare with ``origin=-1``, see the module
    notes).

    Parameters
    ----------
    size : int or sequence of int
        Kernel size (>= 1), the same on every axis or one per axis; even sizes are allowed.
    ndim : int, optional
        Spatial rank ``d``. Default: ``len(size)`` when ``size`` is a sequence, else 2.
    dtype : floating dtype, default float64

    Returns
    -------
    ndarray of shape ``(size,) * ndim`` (or ``tuple(size)``)

    Examples
    --------
    >>> box(2)
    array([[0.25, 0.25],
           [0.25, 0.25]])
    >>> box((1, 4)).tolist()
    [[0.25, 0.25, 0.25, 0.25]]
    """
    func = "box"
    ndim = _infer_ndim(func, ndim, size=size)
    shape = _per_axis_ints(size, ndim, "size", func)
    dt = _check_dtype(dtype, func)
    return _outer([np.full(s, 1.0 / s) for s in shape]).astype(dt)


def gaussian(sigma: float | Sequence[float], ndim: int | None = None,
             truncate: float = 4.0, size: int | Sequence[int] | None = None, *,
             dtype=np.float64) -> np.ndarray:
    """The sampled Gaussian blur, normalised to sum 1.

    The separable kernel ``g_0 (x) ... (x) g_{d-1}`` with, per axis,
    ``g(x) = exp(-x**2 / (2 sigma**2)) / sum(...)`` sampled at integer offsets ``x`` from
    the centre. With ``size=None`` each axis has radius ``r = int(truncate * sigma + 0.5)``
    (size ``2r + 1``), exactly as ``scipy.ndimage.gaussian_filter``, so correlating with
    the kernel reproduces ``gaussian_filter(x, sigma, truncate=truncate)`` (for
    ``padding="same"`` with zero padding: ``mode="constant"``, everywhere). An axis with
    ``sigma == 0`` is left untouched (its kernel is ``[1]``), as in scipy.

    With an explicit ``size`` the samples are taken at ``x = i - (size - 1) / 2``,
    ``i = 0 .. size-1``; for an even size these are half-integers (the kernel is centred
    between two samples).

    Parameters
    ----------
    sigma : float or sequence of float
        Standard deviation(s) in samples, finite and >= 0, one value or one per axis.
    ndim : int, optional
        Spatial rank ``d``. Default: the length of ``sigma`` or ``size`` when one is a
        sequence, else 2.
    truncate : float, default 4.0
        Radius in standard deviations when ``size`` is None (finite, >= 0).
    size : int or sequence of int, optional
        Explicit kernel size (>= 1) per axis; overrides ``truncate``. An axis with
        ``sigma == 0`` needs an odd size.
    dtype : floating dtype, default float64

    Returns
    -------
    ndarray of shape ``(2 * r + 1,) * ndim`` (or ``size``)

    Examples
    --------
    >>> k = gaussian(1.0)
    >>> k.shape, round(float(k.sum()), 12)
    ((9, 9), 1.0)
    >>> gaussian(1.0, ndim=1, size=3).round(4).tolist()
    [0.2741, 0.4519, 0.2741]
    >>> gaussian((2.0, 0.0)).shape
    (17, 1)
    """
    func = "gaussian"
    ndim = _infer_ndim(func, ndim, sigma=sigma,
                       **({"size": size} if size is not None else {}))
    sigmas = _per_axis_reals(sigma, ndim, "sigma", func)
    if any(not math.isfinite(s) or s < 0 for s in sigmas):
        raise _fail(func, f"`sigma` must be finite and >= 0 on every axis, got {sigma!r}")
    truncate = _check_real(truncate, "truncate", func)
    if size is None:
        sizes = tuple(2 * int(truncate * s + 0.5) + 1 for s in sigmas)
    else:
        sizes = _per_axis_ints(size, ndim, "size", func)
    dt = _check_dtype(dtype, func)
    vectors = []
    for s, n in zip(sigmas, sizes, strict=True):
        if s == 0:
            if n % 2 == 0:
                raise _fail(func, f"an axis with `sigma` 0 needs an odd `size`, got "
                                  f"size={size!r} for sigma={sigma!r}")
            v = np.zeros(n)
            v[n // 2] = 1.0
        else:
            x = np.arange(n) - (n - 1) / 2.0
            v = np.exp(-0.5 / (s * s) * x ** 2)
            v = v / v.sum()
        vectors.append(v)
    return _outer(vectors).astype(dt)


# ---------------------------------------------------------------------------------------
# kernel -> weight
# ---------------------------------------------------------------------------------------


def as_weight(kernel, in_channels: int = 1, out_channels: int | None = None,
              depthwise: bool = False) -> np.ndarray:
    """Turn a spatial kernel of shape ``K`` into a conv weight ``(C_out, C_in/groups, *K)``.

    * default (``in_channels=1``): shape ``(1, 1, *K)`` -- filter a single-channel input::

          gridconv.conv(x, as_weight(gaussian(2.0)), padding="same")   # x: (N, 1, H, W)

    * ``depthwise=True``: shape ``(C_out, 1, *K)`` with ``C_out = in_channels`` by default
      (or a multiple of it, the depth multiplier), every slice equal to ``kernel``; use it
      with ``groups=in_channels`` to filter every channel independently::

          w = as_weight(sobel(0), in_channels=3, depthwise=True)      # (3, 1, 3, 3)
          gridconv.conv(x, w, padding="same", groups=3)              # x: (N, 3, H, W)

    * otherwise: shape ``(C_out, in_channels, *K)`` with ``C_out = 1`` by default, every
      ``(o, c)`` slice equal to ``kernel``, for ``groups=1``: each output channel is the
      filter applied to the **sum** of the input channels (divide by ``in_channels`` for
      their mean).

    Parameters
    ----------
    kernel : array_like of shape ``K``
        Spatial kernel (any rank >= 1, not empty, real). Floating kernels keep their dtype;
        integer and boolean ones become float64.
    in_channels : int, default 1
        Number of input channels ``C_in`` (>= 1).
    out_channels : int, optional
        Number of output channels (>= 1); see above for the default.
    depthwise : bool, default False
        Build a depthwise (``groups = in_channels``) weight.

    Returns
    -------
    ndarray
        A new C-contiguous array (never a view of ``kernel``).

    Examples
    --------
    >>> as_weight(box(3)).shape
    (1, 1, 3, 3)
    >>> as_weight(box(3), in_channels=4, depthwise=True).shape
    (4, 1, 3, 3)
    >>> as_weight(box(3, ndim=3), in_channels=2, out_channels=5).shape
    (5, 2, 3, 3, 3)
    """
    func = "as_weight"
    if hasattr(kernel, "__cuda_array_interface__") and not isinstance(kernel, np.ndarray):
        raise _fail(func, "`kernel` must be a NumPy array or array-like on the host, got a "
                          "CUDA array", TypeError)
    try:
        k = np.asarray(kernel)
    except Exception as err:  # pragma: no cover - numpy's message is chained
        raise _fail(func, f"`kernel` must be array-like, got {type(kernel).__name__}",
                    TypeError) from err
    if k.dtype.kind in "biu":
        k = k.astype(np.float64)
    elif k.dtype.kind != "f":
        raise _fail(func, f"`kernel` must be a real (floating-point or integer) array, got "
                          f"dtype {k.dtype}", TypeError)
    if k.ndim < 1:
        raise _fail(func, "`kernel` must have at least one spatial axis, got a 0-d array")
    if k.size == 0:
        raise _fail(func, f"`kernel` must not be empty, got shape {k.shape}")
    if not _is_int(in_channels):
        raise _fail(func, f"`in_channels` must be an int >= 1, got {in_channels!r}",
                    TypeError)
    if in_channels < 1:
        raise _fail(func, f"`in_channels` must be >= 1, got {in_channels}")
    depthwise = _check_flag(depthwise, "depthwise", func)
    if out_channels is None:
        out_channels = in_channels if depthwise else 1
    elif not _is_int(out_channels):
        raise _fail(func, f"`out_channels` must be an int >= 1 or None, got "
                          f"{out_channels!r}", TypeError)
    elif out_channels < 1:
        raise _fail(func, f"`out_channels` must be >= 1, got {out_channels}")
    if depthwise:
        if out_channels % in_channels:
            raise _fail(func, f"with depthwise=True `out_channels` must be a multiple of "
                              f"`in_channels` ({in_channels}), got {out_channels}")
        shape = (int(out_channels), 1, *k.shape)
    else:
        shape = (int(out_channels), int(in_channels), *k.shape)
    return np.array(np.broadcast_to(k, shape), order="C", copy=True)
