"""Address ranges reasoned about as sets, not strings.

``0.0.0.0/1`` plus ``128.0.0.0/1`` is the whole internet although neither is ``0.0.0.0/0``; a range
with ``except:`` holes admits what remains. A list of ranges is *open* when the union of what it
admits holds more than ``OPEN_PUBLIC_ADDRESSES`` public (globally routable) IPv4 addresses, a /8's
worth: no real client or office network is that large. Any IPv6 range of /16 or wider counts as open.
"""
import ipaddress
from collections.abc import Iterable, Sequence

OPEN_PUBLIC_ADDRESSES = 2 ** 24
# IPv4 space that is not the internet (RFC 6890 special-purpose registry).
NOT_PUBLIC = tuple(ipaddress.IPv4Network(cidr) for cidr in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
    "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4"))


def _minus(networks: list[ipaddress.IPv4Network], hole: ipaddress.IPv4Network) -> list[ipaddress.IPv4Network]:
    result = []
    for network in networks:
        if network.subnet_of(hole):
            continue
        if hole.subnet_of(network):
            result.extend(network.address_exclude(hole))
        else:
            result.append(network)
    return result


def union(cidrs: Iterable[str], excepts: Iterable[str] = ()) -> list[ipaddress.IPv4Network]:
    """The IPv4 addresses the ranges admit, minus the holes, as disjoint networks (bad entries skipped)."""
    networks: list[ipaddress.IPv4Network] = []
    for cidr in cidrs:
        try:
            network = ipaddress.ip_network(str(cidr), strict=False)
        except ValueError:
            continue
        if isinstance(network, ipaddress.IPv4Network):
            networks.append(network)
    merged = list(ipaddress.collapse_addresses(networks))
    for hole in excepts:
        try:
            network = ipaddress.ip_network(str(hole), strict=False)
        except ValueError:
            continue
        if isinstance(network, ipaddress.IPv4Network):
            merged = _minus(merged, network)
    return merged


def public_addresses(networks: Sequence[ipaddress.IPv4Network]) -> int:
    remaining = list(networks)
    for private in NOT_PUBLIC:
        remaining = _minus(remaining, private)
    return sum(network.num_addresses for network in remaining)


def wide_ipv6(cidrs: Iterable[str]) -> list[str]:
    found = []
    for cidr in cidrs:
        try:
            network = ipaddress.ip_network(str(cidr), strict=False)
        except ValueError:
            continue
        if isinstance(network, ipaddress.IPv6Network) and network.prefixlen <= 16:
            found.append(str(cidr))
    return found


def is_open(cidrs: Iterable[str], excepts: Iterable[str] = ()) -> bool:
    """Whether the ranges together admit (a large part of) the internet."""
    cidrs = [str(c) for c in cidrs]
    return bool(wide_ipv6(cidrs)) or public_addresses(union(cidrs, excepts)) > OPEN_PUBLIC_ADDRESSES


def describe(cidrs: Iterable[str]) -> str:
    cidrs = [str(c) for c in cidrs]
    return f"{', '.join(cidrs)} (together {public_addresses(union(cidrs)):,} public addresses)"
