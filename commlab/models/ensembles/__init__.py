"""Ensemble utilities: cascades, selective-classification metrics, partition-and-vote certificates.

Import the sub-modules directly (``from commlab.models.ensembles.cascade import ...``).
"""
