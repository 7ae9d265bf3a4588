"""Programs that join a model, data and a training method.

* :mod:`~commlab.train.loop` — the one training loop notebooks call (any method of
  :mod:`commlab.distributed`, evaluation on a schedule, a progress bar);
* :mod:`~commlab.train.ddp` — ``python -m commlab.train.ddp``: SmallCNN with DDP and a compressed
  gradient hook under torchrun;
* :mod:`~commlab.train.outer` — ``python -m commlab.train.outer``: the outer methods (DiLoCo, NoLoCo,
  CO2, ...) on real ranks under torchrun;
* :mod:`~commlab.train.ddp_simulator` — the same data-parallel training on a simulated link;
* :mod:`~commlab.train.elastic_dp` — data parallelism that keeps its trajectory when a rank is lost
  (micro-batches re-sliced over the survivors, per-sample random streams, a reduction whose bits do
  not depend on the world size), simulated and on real gloo ranks;
* :mod:`~commlab.train.ft_churn` — DiLoCo, async DiLoCo and a naive join under churn on real torchft
  replicas (kill, join, heal), with the shared state's hash logged at every outer step;
* :mod:`~commlab.train.lm` — character language-model training windows, AdamW with warm-up and cosine
  decay, bits per character.

Sub-modules are imported directly.
"""
