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

#: bfloat16 unit roundoff (8 significand bits): 2**-8, about 3.9e-3.
BF16_U = 2.0**-8

#: Probabilities of a bfloat16 model server (vLLM) against the float32 model in process: every
#: weight and activation of the server is rounded to bf16, so its logits carry a relative error
#: of a few BF16_U (about 2% on logits of magnitude 5 over two layers and the LM head: 0.1), and
#: softmax moves a probability by at most half the logit error (|dp| <= p(1 - p) |dz| * 2 <= |dz| / 2):
#: 0.05. (The notes in ../shared/vllm-cpu.md: compare served values at a bf16 tolerance.)
BF16_PROB_ATOL = 0.05
