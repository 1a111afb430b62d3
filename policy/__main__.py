"""Entry point the Pulumi CLI runs for `pulumi preview --policy-pack policy`."""
from mesh_guardrails.pack import serve

serve()
