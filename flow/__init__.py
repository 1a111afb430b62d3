"""Deterministic synthetic customer data and the high-spender model (``python -m flow``)."""
