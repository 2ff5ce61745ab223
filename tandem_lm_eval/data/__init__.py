"""Data the other rooms read and write: benchmark data (``benchmarks``: GSM8K, MATH, HumanEval from the
hub or a local folder), the record format of traces and collects (``records``), the embedded demo
model (``demo_model``), what a model checkpoint on disk holds (``checkpoint``: its folder, parameter
count, hidden shape) and the package's own folders (``resources``: tasks, classifiers).

May import: scoring, common.
"""
