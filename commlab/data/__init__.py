"""Offline data loaders and client partitioners (conventions §3).

Loaders (nothing is downloaded unless the user allows it; scikit-learn and scikit-image are
imported only when a loader that needs them is called):

* :func:`fashion_mnist` — Fashion-MNIST from the Debian package, ``$COMMLAB_DATA`` or the user
  cache (opt-in download), float32 ``[N, 1, 28, 28]`` images and int64 labels.
* :func:`digits` — scikit-learn's 8x8 digits, float32 ``[N, 1, 8, 8]``, with a seeded train/test split.
* :func:`photos` — whole bundled colour photos (train sources, or held-out test sources).
* :func:`photo_patches` — seeded random 32x32 crops with flips: a CIFAR-like substitute.
* :func:`stdlib_corpus` / :class:`TextCorpus` — character-level text from the Python standard library.
* :func:`espeak_corpus` / :class:`Utterance` / :func:`command_utterances` — synthetic speech from the
  espeak-ng program (conventions §3.5), 16 kHz float32 waves, cached by text, arguments and version.

Synthetic dynamics (torch, seeded by an explicit ``torch.Generator``):

* :class:`Lorenz96` — the Lorenz-96 system with fixed-step RK4 over leading batch / ensemble axes,
  optional stochastic forcing, spin-up onto the attractor, perturbed ensemble initial conditions and
  the leading Lyapunov exponent (module :mod:`commlab.data.lorenz96`, which also has ``energy`` and
  ``forecast_cases``: cases × members of perturbed forecasts with an exchangeable or biased truth run).

Synthetic data for single notebooks (import the module):

* :mod:`~commlab.data.click_trains` — click codas with planted factors (count, rhythm, jitter, centroid,
  a nuisance gain) and their log band energies (CDEV);
* :mod:`~commlab.data.synthetic_captions` — a seeded caption modality paired with Fashion-MNIST images
  (CreamFL);
* :mod:`~commlab.data.shifts` — distribution shifts of an image set: rotations, rotated fractions,
  class subsampling.

Partitioners (numpy, seeded, one sorted int64 index array per client):

* :func:`iid`, :func:`k_classes`, :func:`dirichlet`, :func:`pathological_shards` (sorted-label shards,
  as in FedAvg's pathological non-iid split), and :func:`train_test_indices`; PCA + k-means clusters
  (``partition.kmeans``, ``partition.kmeans_model``).

Note: the functions ``fashion_mnist``, ``digits`` and ``photos`` share their names with their
modules, so ``commlab.data.photos`` is the function; reach a module with
``importlib.import_module("commlab.data.photos")``.
"""

from .digits import digits
from .fashion_mnist import fashion_mnist
from .lorenz96 import Lorenz96
from .partition import dirichlet, iid, k_classes, pathological_shards, train_test_indices
from .photos import photo_patches, photos
from .speech import COMMANDS, SpeechCorpus, Utterance, command_utterances, espeak_corpus
from .text import TextCorpus, stdlib_corpus

__all__ = [
    "fashion_mnist",
    "digits",
    "photos",
    "photo_patches",
    "stdlib_corpus",
    "TextCorpus",
    "COMMANDS",
    "SpeechCorpus",
    "Utterance",
    "command_utterances",
    "espeak_corpus",
    "Lorenz96",
    "iid",
    "k_classes",
    "dirichlet",
    "pathological_shards",
    "train_test_indices",
]
