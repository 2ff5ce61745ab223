"""The run store: one SQLite file of checksummed entries (``run_store``). What goes in it, and under which
key, is decided by the store-backed backend (``backends/store_backed.py``, ``store_keys.py``).

May import: data, common.
"""
