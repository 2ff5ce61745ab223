"""The vocabulary every room shares: typed option values from ``model_args`` (``options``), the paths a
user gives checked before any work (``paths``), the reasoning-model tag convention (``thinking``) and
the names of stored hidden vectors (``hidden_keys``), a question's identity (``question_hash``: how
records, stores, recorded mentors and classifier cards name a question) and its content key
(``question_content``: what the training-question guard matches).

Imports nothing from the package.
"""
