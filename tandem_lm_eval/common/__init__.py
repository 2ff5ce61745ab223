"""The vocabulary every room shares: typed option values from ``model_args`` (``options``), the paths a
user gives checked before any work (``paths``) and the reasoning-model tag convention (``thinking``).

Imports nothing from the package.
"""
