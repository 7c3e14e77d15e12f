"""Float tolerances of the suite, derived from the dtype and the size of the reduction.

The suite must pass on AVX2-only CPUs and on AVX-512 / AMX ones alike. Their kernels (oneDNN,
MKL, ATen's vectorised loops) block and order float32 reductions differently, so two runs of the
same computation agree only to float32 rounding, and two code paths (a batch against one row,
a cached prefix against the full prompt, different padding) agree to the rounding accumulated
through the model. No test compares floats of two code paths for exact equality.
"""

from __future__ import annotations

import numpy as np

#: float32 machine epsilon (2**-23, about 1.19e-7); the unit roundoff is half of it.
FP32_EPS = float(np.finfo(np.float32).eps)


def fp32_sum_atol(n_terms: int) -> float:
    """Absolute error bound of a float32 sum of ``n_terms`` non-negative terms adding up to <= 1.

    Recursive summation errs by at most gamma_(n-1) ~ (n - 1) * u (Higham, Accuracy and
    Stability of Numerical Algorithms, 4.2); normalising by the sum adds one more rounding. So
    ``n * eps`` (= 2 n u) bounds it in any summation order: 6e-7 for five rating levels.
    """
    return max(int(n_terms), 1) * FP32_EPS


#: Probabilities from two code paths through the same float32 model (batched vs single row,
#: cached prefix vs full prompt, adapters mixed vs one at a time). The logits differ by reordered
#: reductions over the hidden size and the sequence (measured up to ~4e-5 on logits of the tiny
#: test models, AVX2 and AMX machines); softmax keeps probabilities within this bound.
FP32_PATH_ATOL = 1e-4
