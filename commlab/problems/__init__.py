"""Synthetic objectives with known constants, and small solvers for them.

* :func:`heterogeneous_least_squares` / :class:`HeterogeneousLeastSquares`: ½‖A_i x − b_i‖² per worker
  (+ optional non-convex regulariser), exact L_i, L, x*, f*.
* :func:`heterogeneous_quadratics` / :class:`HeterogeneousQuadratics`: EControl's ½(x − x_i*)ᵀH_i(x − x_i*).
* :func:`nonconvex_logreg` / :class:`NonconvexLogReg`: logistic loss + λ Σ x_j²/(1+x_j²), with
  :func:`synthetic_classification` and :func:`sklearn_binary` data.
* :func:`bilinear_saddle` / :class:`BilinearSaddle`: strongly-monotone affine operators F_m, z*, L_max.
* :class:`SoftmaxRegression`: multinomial logistic loss on per-machine minibatches, a zeroth-order oracle.
* :mod:`commlab.problems.vi`: extragradient and MASHA solvers for the saddle problem.
* :func:`smoothness_constants`: L_AM, L_QM, L_var of per-worker constants.
* :mod:`commlab.problems.ridge`: heterogeneous ridge regression per node (DADAO), exact L_i, μ_i, x*.
* :mod:`commlab.problems.weighted_least_squares`: K-client weighted least squares (ADMM-FL), exact w*.

All problems are torch, float32 by default, take an explicit ``torch.Generator`` and return
per-worker quantities stacked along a leading worker axis.
"""

from commlab.problems.bilinear import BilinearSaddle, bilinear_saddle
from commlab.problems.finite_sum import FiniteSum, worker_scales
from commlab.problems.least_squares import HeterogeneousLeastSquares, heterogeneous_least_squares
from commlab.problems.logistic import NonconvexLogReg, nonconvex_logreg, sklearn_binary, synthetic_classification
from commlab.problems.penalty import nonconvex_penalty, nonconvex_penalty_grad
from commlab.problems.quadratics import HeterogeneousQuadratics, heterogeneous_quadratics
from commlab.problems.smoothness import SmoothnessConstants, lambda_max, smoothness_constants
from commlab.problems.softmax import SoftmaxRegression

__all__ = [
    "BilinearSaddle",
    "FiniteSum",
    "HeterogeneousLeastSquares",
    "HeterogeneousQuadratics",
    "NonconvexLogReg",
    "SmoothnessConstants",
    "SoftmaxRegression",
    "bilinear_saddle",
    "heterogeneous_least_squares",
    "heterogeneous_quadratics",
    "lambda_max",
    "nonconvex_logreg",
    "nonconvex_penalty",
    "nonconvex_penalty_grad",
    "sklearn_binary",
    "smoothness_constants",
    "synthetic_classification",
    "worker_scales",
]
