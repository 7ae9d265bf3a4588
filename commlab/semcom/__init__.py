"""Semantic-communication building blocks: Deep JSCC, keyed shuffles, feature denoisers, metrics.

* :class:`DeepJSCC` (with :class:`AFModule` for the SNR-adaptive ADJSCC variant), :func:`train_jscc`,
  :func:`jscc_psnr`;
* :func:`keyed_permutation`, :class:`Shuffler`, :class:`ShuffledAccess` (shared-model multi-user uplink);
* :class:`WienerFeatureDenoiser`, :class:`VPSchedule`, :class:`DiffusionFeatureDenoiser`;
* interference statistics (:func:`interference_statistics`, :func:`feature_moments`);
* :class:`SeparationBaseline` (digital reference with a cliff, and the ideal-code bound); metrics :func:`psnr`,
  :func:`ssim`;
* :mod:`~commlab.semcom.ldpc_baseline` — the real digital baseline: PCA-quantiser bits through Sionna's 5G
  LDPC and QAM over a commlab channel, measured block error rate, :func:`best_rate_that_decodes` per SNR,
  :func:`ldpc_separation`; :mod:`~commlab.semcom.sionna_import` imports Sionna without moving torch's
  global generator (:func:`import_sionna_phy`, :func:`preserved_torch_rng`);
* :mod:`~commlab.semcom.mec` — entropies and mutual information of joint pmfs, greedy and exact
  minimum-entropy couplings, and entropy-bounded information maximisation (EBIM) solvers;
* :mod:`~commlab.semcom.slimmable` — slimmable split encoders: :class:`SlimmableSplitCNN` (one device head
  serving every width, per-width batch norm), its layers, the sandwich-rule trainer and the 8-bit payload;
* :mod:`~commlab.semcom.speech` — semantic speech transmission: log-mel features, a tiny CTC recogniser,
  token selection and a feature channel codec, CER and WER;
* :mod:`~commlab.semcom.feature_codec` — feature coding for machine tasks: truncate, quantise, pack and
  code (zlib, PNG, JPEG through Pillow) with the bits counted from the bitstream; bits per feature point in
  :mod:`~commlab.semcom.metrics`; :mod:`~commlab.semcom.entropy_coding` (rANS) and
  :mod:`~commlab.semcom.learned_codec` (a learned factorised-prior feature codec);
* :mod:`~commlab.semcom.interactive_distillation` — teacher and student talking over a rate-limited
  channel: split MLPs, message channels with payload bits, KD losses, interactive and one-way distillation;
* :mod:`~commlab.semcom.latent_causal` and :mod:`~commlab.semcom.click_properties` — CDEV: intervention
  sweeps on generative latents with bootstrap intervals, and click-train property extractors.

Channels and power normalisation are in :mod:`commlab.channels`.
"""

from . import mec, metrics, slimmable, speech
from .denoise import DiffusionFeatureDenoiser, VPSchedule, WienerFeatureDenoiser
from .digital import SeparationBaseline, allocate_bits, gaussian_uniform_quantizer, jpeg_scan_bits, jpeg_separation
from .interference import autocorrelation, correlation, feature_moments, interference_statistics, lag1_autocorrelation
from .jscc import AFModule, DeepJSCC
from .ldpc_baseline import (
    MCS,
    MCS_TABLE,
    BlerResult,
    LDPCQAMLink,
    best_rate_that_decodes,
    block_error_rate,
    gap_to_capacity_db,
    ldpc_separation,
    pca_from_bits,
    pca_source_bits,
)
from .metrics import psnr, ssim
from .omdma import ShuffledAccess
from .shuffle import Shuffler, frame_key, inverse_permutation, keyed_permutation
from .sionna_import import import_sionna_phy, preserved_torch_rng
from .train import jscc_psnr, train_jscc

__all__ = [
    "MCS",
    "MCS_TABLE",
    "AFModule",
    "BlerResult",
    "LDPCQAMLink",
    "DeepJSCC",
    "DiffusionFeatureDenoiser",
    "SeparationBaseline",
    "ShuffledAccess",
    "Shuffler",
    "VPSchedule",
    "WienerFeatureDenoiser",
    "allocate_bits",
    "autocorrelation",
    "best_rate_that_decodes",
    "block_error_rate",
    "correlation",
    "feature_moments",
    "frame_key",
    "gap_to_capacity_db",
    "gaussian_uniform_quantizer",
    "import_sionna_phy",
    "interference_statistics",
    "jpeg_scan_bits",
    "jpeg_separation",
    "inverse_permutation",
    "jscc_psnr",
    "keyed_permutation",
    "lag1_autocorrelation",
    "ldpc_separation",
    "mec",
    "metrics",
    "slimmable",
    "speech",
    "pca_from_bits",
    "pca_source_bits",
    "preserved_torch_rng",
    "psnr",
    "ssim",
    "train_jscc",
]
