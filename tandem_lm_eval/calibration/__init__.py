"""Offline calibration, no model calls: records as tables, the cascade's stop rule replayed
(``replay``), the whole threshold grid at once (``threshold_grid``), thresholds chosen by an explicit
objective (``objectives``), the accuracy/cost front (``front``), classifier fitting (``fitting``,
``model_card``) and the held-out report (``analysis``).

May import: judgment, cost, data, common.
"""
