"""The vocabulary every room shares: typed option values from ``model_args`` (``options``) and the
reasoning-model tag convention (``thinking``).

Imports nothing from the package.
"""
