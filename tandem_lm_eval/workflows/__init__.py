"""Workflows that drive the harness and the calibration end to end: ``collect`` (every stage of every
question, labelled by the task's own metric), ``oracle`` (reference solutions as a recorded mentor),
``compare`` (Tandem against its baselines) and ``leaderboard`` (its tables and plots).

May import: harness, calibration, cascade, judgment, backends, store, cost, data, scoring, common.
"""
