"""Compilation options shared by the CPU kernels."""

from __future__ import annotations

from numba.core.cpu import ParallelOptions

# fastmath without 'nnan'/'ninf': reductions vectorise, NaNs still propagate and
# ``v != v`` still detects them.
FASTMATH = {"reassoc", "contract", "arcp", "nsz", "afn"}

# The kernels' ``parallel=``: their ``prange`` loops only. ``parallel=True`` also turns
# every array expression and allocation outside the ``prange`` loop (a kernel's
# ``np.zeros(1)`` tile counter, the zero bias) into a parallel loop of its own, and each
# one wakes the thread team: on the 2-core VM, where a sleeping worker takes 50-150 us to
# wake, that one extra launch cost 0.13 ms of every call (measured: 0.26 -> 0.12 ms for
# gather_direct with no tile to compute, 3.03 -> 2.90 ms on the audio front end). (An
# instance, not a dict: Numba pops the keys of a dict it is given, so a shared dict
# would enable everything again from the second kernel on.)
PARALLEL = ParallelOptions({"prange": True, "comprehension": False, "reduction": False,
                            "inplace_binop": False, "setitem": False, "numpy": False,
                            "stencil": False, "fusion": False})
