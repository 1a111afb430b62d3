"""No load balancer, Ingress or NetworkPolicy open to the internet, judged on the union of its ranges."""
from collections.abc import Mapping

from . import ranges
from .props import as_list, dig

SERVICE = "kubernetes:core/v1:Service"
INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
ANYWHERE = ["0.0.0.0/0"]


def _annotation(props: Mapping, key: str) -> str | None:
    value = dig(props, "metadata", "annotations", key)
    return str(value) if value is not None else None


def no_open_load_balancer(resource_type: str, props: Mapping, stack: str) -> list[str]:
    """An internet-facing Service of type LoadBalancer must list source ranges that are not the internet."""
    if resource_type != SERVICE or dig(props, "spec", "type") != "LoadBalancer":
        return []
    internal = _annotation(props, "service.beta.kubernetes.io/aws-load-balancer-internal") == "true" or \
        _annotation(props, "service.beta.kubernetes.io/aws-load-balancer-scheme") == "internal"
    if internal:
        return []
    cidrs = [str(c) for c in as_list(dig(props, "spec", "loadBalancerSourceRanges"))] or ANYWHERE
    if not ranges.is_open(cidrs):
        return []
    return [f"internet-facing load balancer admits {ranges.describe(cidrs)}: list the clients' networks in "
            "loadBalancerSourceRanges, or make it internal"]


def no_open_ingress(resource_type: str, props: Mapping, stack: str) -> list[str]:
    if resource_type != INGRESS or _annotation(props, "alb.ingress.kubernetes.io/scheme") != "internet-facing":
        return []
    listed = _annotation(props, "alb.ingress.kubernetes.io/inbound-cidrs")
    cidrs = [c.strip() for c in listed.split(",") if c.strip()] if listed else ANYWHERE
    if not ranges.is_open(cidrs):
        return []
    return [f"internet-facing ALB admits {ranges.describe(cidrs)}: set alb.ingress.kubernetes.io/inbound-cidrs "
            "to the clients' networks"]


def no_open_network_policy(resource_type: str, props: Mapping, stack: str) -> list[str]:
    """A NetworkPolicy whose ipBlocks, together, admit the internet (in or out)."""
    if resource_type != NETWORK_POLICY:
        return []
    found = []
    for direction, key in (("ingress", "from"), ("egress", "to")):
        blocks = [peer.get("ipBlock") for rule in as_list(dig(props, "spec", direction))
                  for peer in as_list(rule.get(key) if isinstance(rule, Mapping) else None)
                  if isinstance(peer, Mapping) and isinstance(peer.get("ipBlock"), Mapping)]
        cidrs = [str(b.get("cidr")) for b in blocks]
        # Holes only count against the range they belong to.
        admitted = [str(n) for b in blocks for n in ranges.union([str(b.get("cidr"))],
                                                                 [str(e) for e in as_list(b.get("except"))])]
        if cidrs and (ranges.wide_ipv6(cidrs) or ranges.is_open(admitted)):
            found.append(f"NetworkPolicy {direction} admits {ranges.describe(cidrs)}: list only the networks "
                         "that need it")
    return found
