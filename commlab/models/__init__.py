"""Small models and model-level utilities shared by notebooks: CNNs (:mod:`~commlab.models.cnn`),
character n-gram MLP language models (:mod:`~commlab.models.charlm`), stacked replicas
(:mod:`~commlab.models.stacked`), masked sparse MLPs (:mod:`~commlab.models.sparse`), mixtures of
experts (:mod:`~commlab.models.moe`), a tiny causal transformer on scaled-dot-product attention
(:mod:`~commlab.models.transformer`), LoRA adapters for its linear layers
(:mod:`~commlab.models.lora`), flow-matching velocity fields with their loss and ODE sampler
(:mod:`~commlab.models.flow_matching`), contrastive objectives — InfoNCE, Recall@K, contrastively weighted
representation ensembles (:mod:`~commlab.models.contrastive`), a 1-D convolutional β-VAE
(:mod:`~commlab.models.vae1d`), a seeded ReLU MLP builder (:mod:`~commlab.models.mlp`), and the training
loop helpers (:mod:`~commlab.models.fit`).

Sub-modules are imported directly (``from commlab.models.sparse import ...``); this package
re-exports nothing, so that importing one model family never pulls in the others.
"""
