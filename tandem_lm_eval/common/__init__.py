"""The vocabulary every room shares: typed option values from ``model_args`` (``options``), the paths a
user gives checked before any work (``paths``), the reasoning-model tag convention (``thinking``) and
the names of stored hidden vectors (``hidden_keys``) and a question's content key (``question_content``).

Imports nothing from the package.
"""
