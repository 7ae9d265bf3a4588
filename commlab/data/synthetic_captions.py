"""A synthetic second modality for image datasets: noisy attribute "captions" of each image.

For the CreamFL notebook (briefs/distributed/creamfl_representation_ensemble_fl.md): COCO captions are
unavailable offline, so each image ``x`` of class ``y`` gets a caption vector ``t`` ``[dim]``::

    t = m ⊙ (a_y + β · P x̃) + σ ε
      a_y ∈ {−1, +1}^dim       a fixed attribute code per class (drawn once from the generator's seed)
      x̃ = (x − mean) / std     the image's pixels standardised with fixed per-pixel statistics
      P  [dim, n_pixels]       a fixed Gaussian projection with entries N(0, 1/n_pixels): the instance part,
                               so that exact image–caption pairs, not only classes, can be retrieved
      m ~ Bernoulli(1 − p)^dim attribute dropout (a dropped attribute carries noise only)
      ε ~ N(0, I_dim)          noise

β (``instance_scale``), σ (``noise``) and p (``dropout``) keep the captions weakly informative, so that
retrieval does not saturate. The codes, the projection and the pixel statistics depend only on
``seed`` (and the statistics on the images passed to :meth:`CaptionGenerator.fit`); the dropout masks and
noise of a call come from the caller's generator.
"""

from __future__ import annotations

import torch

from commlab._checks import check_int, check_nonnegative, check_probability, check_seed
from commlab.seeding import SeedTree


class CaptionGenerator:
    """Noisy attribute captions ``[N, dim]`` for images ``[N, ...]`` with labels ``[N]``.

    Args:
        n_classes: number of classes (codes), >= 2.
        n_pixels: flattened image size (784 for Fashion-MNIST).
        dim: caption dimension, >= 1.
        instance_scale: β >= 0, weight of the image's own projection.
        noise: σ >= 0, standard deviation of the additive Gaussian noise.
        dropout: p in [0, 1), probability that an attribute is dropped.
        seed: seed of the codes and the projection.

    Attributes:
        codes: ``[n_classes, dim]`` float32 in {−1, +1}; projection: ``[dim, n_pixels]`` float32;
        mean, std: ``[n_pixels]`` pixel statistics (zero and one until :meth:`fit`).
    """

    def __init__(self, n_classes: int = 10, n_pixels: int = 784, dim: int = 32, *, instance_scale: float = 1.0,
                 noise: float = 1.0, dropout: float = 0.2, seed: int = 0):
        self.n_classes = check_int("n_classes", n_classes, low=2)
        self.n_pixels = check_int("n_pixels", n_pixels, low=1)
        self.dim = check_int("dim", dim, low=1)
        self.instance_scale = check_nonnegative("instance_scale", instance_scale)
        self.noise = check_nonnegative("noise", noise)
        self.dropout = check_probability("dropout", dropout)
        if self.dropout == 1.0:
            raise ValueError("dropout must be in [0, 1): with 1 every attribute is dropped")
        self.seed = check_seed(seed)
        tree = SeedTree(self.seed)
        signs = torch.randint(0, 2, (self.n_classes, self.dim), generator=tree.torch("codes"))
        self.codes = (2 * signs - 1).float()
        gaussian = torch.randn(self.dim, self.n_pixels, generator=tree.torch("projection"))
        self.projection = gaussian / self.n_pixels ** 0.5  # entries N(0, 1/n_pixels)
        self.mean = torch.zeros(self.n_pixels)
        self.std = torch.ones(self.n_pixels)

    def fit(self, images: torch.Tensor) -> CaptionGenerator:
        """Set the pixel statistics from ``images`` ``[N, ...]`` (a fixed reference set); returns self."""
        flat = self._flat(images)
        self.mean = flat.mean(dim=0)
        self.std = flat.std(dim=0).clamp_min(1e-3)  # constant border pixels would divide by zero
        return self

    def clean(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``a_y + β P x̃`` ``[N, dim]``: the caption before dropout and noise."""
        flat = self._flat(images)
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.shape != (len(flat),):
            raise ValueError(f"labels must be int64 [{len(flat)}], got {getattr(labels, 'dtype', None)} "
                             f"{tuple(getattr(labels, 'shape', ()))}")
        if len(labels) and (labels.min() < 0 or labels.max() >= self.n_classes):
            raise ValueError(f"labels must lie in [0, {self.n_classes}), got [{int(labels.min())}, "
                             f"{int(labels.max())}]")
        standard = (flat - self.mean) / self.std
        return self.codes[labels] + self.instance_scale * standard @ self.projection.T

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Captions ``t = m ⊙ (a_y + β P x̃) + σ ε`` ``[N, dim]`` float32, drawn with ``generator``."""
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        clean = self.clean(images, labels)
        keep = torch.rand(clean.shape, generator=generator) >= self.dropout  # m ~ Bernoulli(1 - p)
        return keep * clean + self.noise * torch.randn(clean.shape, generator=generator)

    def _flat(self, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or not images.is_floating_point() or images.dim() < 2:
            raise ValueError(f"images must be a floating tensor [N, ...], got {tuple(getattr(images, 'shape', ()))}")
        flat = images.reshape(len(images), -1).float()
        if flat.shape[1] != self.n_pixels:
            raise ValueError(f"images have {flat.shape[1]} pixels each, the generator expects {self.n_pixels}")
        return flat

    def state_dict(self) -> dict:
        """The generator's settings and fixed tensors (enough to rebuild it with :meth:`load_state_dict`)."""
        return {"settings": {"n_classes": self.n_classes, "n_pixels": self.n_pixels, "dim": self.dim,
                             "instance_scale": self.instance_scale, "noise": self.noise, "dropout": self.dropout,
                             "seed": self.seed},
                "codes": self.codes.clone(), "projection": self.projection.clone(),
                "mean": self.mean.clone(), "std": self.std.clone()}

    def load_state_dict(self, state: dict) -> None:
        """Restore the tensors of :meth:`state_dict` (settings must match this generator's)."""
        mine = self.state_dict()["settings"]
        if state.get("settings") != mine:
            raise ValueError(f"the state was saved with settings {state.get('settings')}, this generator has {mine}")
        for name in ("codes", "projection", "mean", "std"):
            setattr(self, name, state[name].clone())

    def __repr__(self) -> str:
        return (f"CaptionGenerator(n_classes={self.n_classes}, dim={self.dim}, instance_scale={self.instance_scale}, "
                f"noise={self.noise}, dropout={self.dropout}, seed={self.seed})")
