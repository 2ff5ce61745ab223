"""What a request costs: Eq. 12 (``flops``), the per-request ledger and run totals (``ledger``), and
dollar prices of API calls (``pricing``).

May import: common.
"""
