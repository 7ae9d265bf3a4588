"""Semantic-communication building blocks: Deep JSCC, keyed shuffles, feature denoisers, metrics.

* :class:`DeepJSCC` (with :class:`AFModule` for the SNR-adaptive ADJSCC variant), :func:`train_jscc`,
  :func:`jscc_psnr`;
* :func:`keyed_permutation`, :class:`Shuffler`, :class:`ShuffledAccess` (shared-model multi-user uplink);
* :class:`WienerFeatureDenoiser`, :class:`VPSchedule`, :class:`DiffusionFeatureDenoiser`;
* interference statistics (:func:`interference_statistics`, :func:`feature_moments`);
* :class:`SeparationBaseline` (digital reference with a cliff); metrics :func:`psnr`, :func:`ssim`.

Channels and power normalisation are in :mod:`commlab.channels`.
"""

from . import metrics
from .denoise import DiffusionFeatureDenoiser, VPSchedule, WienerFeatureDenoiser
from .digital import SeparationBaseline, allocate_bits, gaussian_uniform_quantizer, jpeg_scan_bits, jpeg_separation
from .interference import autocorrelation, correlation, feature_moments, interference_statistics, lag1_autocorrelation
from .jscc import AFModule, DeepJSCC
from .metrics import psnr, ssim
from .omdma import ShuffledAccess
from .shuffle import Shuffler, frame_key, inverse_permutation, keyed_permutation
from .train import jscc_psnr, train_jscc

__all__ = [
    "AFModule",
    "DeepJSCC",
    "DiffusionFeatureDenoiser",
    "SeparationBaseline",
    "ShuffledAccess",
    "Shuffler",
    "VPSchedule",
    "WienerFeatureDenoiser",
    "allocate_bits",
    "autocorrelation",
    "correlation",
    "feature_moments",
    "frame_key",
    "gaussian_uniform_quantizer",
    "interference_statistics",
    "jpeg_scan_bits",
    "jpeg_separation",
    "inverse_permutation",
    "jscc_psnr",
    "keyed_permutation",
    "lag1_autocorrelation",
    "metrics",
    "psnr",
    "ssim",
    "train_jscc",
]
