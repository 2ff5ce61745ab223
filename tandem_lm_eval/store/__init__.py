"""The run store: one SQLite file of checksummed entries (``run_store``) and the backend side of it:
``stored_backend`` (any backend behind the store, so a rerun never recomputes), ``keys`` (a model's
fingerprint and each request's key), ``codec`` (how results are stored, never pickle) and ``export``
(a store's mentor insights as a recorded mentor). It stands above the backends it wraps.

May import: backends, data, common.
"""
