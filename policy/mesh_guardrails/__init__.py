"""Guardrails for the customer-features / customer-scoring stacks, as plain functions."""
