"""Small models and model-level utilities shared by notebooks.

Sub-modules are imported directly (``from commlab.models.sparse import ...``); this package
re-exports nothing, so that importing one model family never pulls in the others.
"""
