"""The Tandem algorithm (section 2): the stage loop (``stages``), its results (``outcomes``), the two
prompts (``prompts``), the stop policies (``policies/``) and the modes where the mentor answers
itself (``mentor_answers``).

May import: judgment, backends, store, cost, common. Backends are used only through their interface
(``backends.base``); the store only to time the calls a ``StoredBackend`` sends on.
"""
