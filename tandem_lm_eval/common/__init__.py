"""The vocabulary every room shares: typed option values from ``model_args`` (``options``) and the
reasoning-model tag convention (``thinking``), the names of stored hidden vectors (``hidden_keys``).

Imports nothing from the package.
"""
