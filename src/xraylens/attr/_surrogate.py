"""Weighted linear surrogates of LIME and KernelSHAP, fitted for all labels of an image at once.

Every label of an image shares the binary samples ``z`` [S, F] and the sample weights ``w``
[S]; only the scores ``y`` [S, L] differ, so one fit covers all labels:

- ``"linear"``: weighted least squares with an intercept, the minimum-norm solution when
  ``z`` has too few samples (scikit-learn's ``LinearRegression``, Captum's KernelSHAP
  surrogate): one ``torch.linalg.lstsq`` on the weighted, centred samples with [S, L] right
  hand sides.
- ``"ridge"``: ``sum_s w_s (y_s - z_s b - c)^2 + alpha |b|^2`` (scikit-learn's ``Ridge``): one
  ``torch.linalg.solve`` of the [F, F] normal equations with L right-hand sides.
- ``"lasso"``: scikit-learn's ``Lasso(alpha)`` (``(1 / 2S) sum_s w'_s (...)^2 + alpha |b|_1``
  with the weights rescaled to sum to S), Captum's LIME surrogate. The L1 problem has no closed
  form; scikit-learn's coordinate descent is run once with all labels as targets (it solves the
  columns independently, so each equals a one-label fit), on float32 data as Captum does.
"""

from __future__ import annotations

import numpy as np
import torch

from xraylens.errors import InputError

SURROGATES = ("lasso", "ridge", "linear")


def _centre(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor):
    """Weighted means removed, rows scaled by sqrt(w): the intercept drops out."""
    total = w.sum()
    z_mean = (w[:, None] * z).sum(0) / total
    y_mean = (w[:, None] * y).sum(0) / total
    root = w.sqrt()[:, None]
    return root * (z - z_mean), root * (y - y_mean)


def fit(
    z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, surrogate: str, alpha: float
) -> torch.Tensor:
    """Coefficients float64 [L, F] of the surrogate of each label.

    Args:
        z: binary samples [S, F] (1: the feature kept); y: scores [S, L]; w: weights [S] >= 0.
    """
    if surrogate not in SURROGATES:
        raise InputError(f"surrogate must be one of {list(SURROGATES)}, got {surrogate!r}")
    z, y, w = z.double().cpu(), y.double().cpu(), w.double().cpu()
    if surrogate == "lasso":
        try:
            from sklearn.linear_model import Lasso
        except ImportError as exc:  # a dependency of xraylens; only a broken install lacks it
            raise InputError(
                "the lasso surrogate needs scikit-learn (pip install scikit-learn), or use "
                "surrogate='ridge' / 'linear' (xraylens.attr._surrogate)"
            ) from exc

        model = Lasso(alpha=alpha)
        # float32 in, like Captum's sklearn_train_linear_model, so that the results agree
        model.fit(z.float().numpy(), y.float().numpy(), sample_weight=w.float().numpy())
        coef = np.asarray(model.coef_, dtype=np.float64).reshape(y.shape[1], z.shape[1])
        return torch.from_numpy(coef)
    zc, yc = _centre(z, y, w)
    if surrogate == "ridge":
        gram = zc.T @ zc + alpha * torch.eye(z.shape[1], dtype=z.dtype)
        return torch.linalg.solve(gram, zc.T @ yc).T
    # gelsd: SVD based, the minimum-norm solution of rank-deficient systems (as SciPy's lstsq
    # that scikit-learn calls)
    return torch.linalg.lstsq(zc, yc, driver="gelsd").solution.T
