"""The ``tandem-lm-eval`` command: its parser and one file per subcommand that needs more than a few lines.

Top floor: may import any room of the package. Nothing imports it.
"""
