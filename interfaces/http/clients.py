"""Which address a request comes from: the TCP peer, or, behind trusted reverse proxies only, the
right-most X-Forwarded-For address that no trusted proxy holds (everything left of it is the client's word)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_address(value: str) -> Address | None:
    """An IP address as proxies write it: bare, `1.2.3.4:port`, `[::1]` or `[::1]:port`; None otherwise."""
    value = value.strip()
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:  # IPv4 with a port (an IPv6 address has two colons or more)
        value = value.partition(":")[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    return address.ipv4_mapped or address if isinstance(address, ipaddress.IPv6Address) else address


class TrustedProxies:
    """The proxies whose X-Forwarded-For is believed (setting `trusted_proxies`: IPs or CIDRs)."""

    def __init__(self, networks: Iterable[Network] = ()) -> None:
        self.networks = tuple(networks)

    @classmethod
    def parse(cls, raw: str) -> "TrustedProxies":
        networks = []
        for item in raw.replace(",", " ").split():
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise SystemExit(f"CHARTER_TRUSTED_PROXIES: {item!r} is not an IP address or CIDR") from None
        return cls(networks)

    def holds(self, address: Address | None) -> bool:
        return address is not None and any(address in network for network in self.networks)

    def client(self, peer: str | None, forwarded_for: Iterable[str]) -> str:
        """The client's address. Only a trusted peer's X-Forwarded-For counts; it is read from the right,
        skipping trusted proxies, up to the first address that is not one. An entry that is not an
        address stops the walk at the last address a trusted proxy vouched for."""
        if not peer:
            return "unknown"
        candidate = parse_address(peer)
        if not self.networks or not self.holds(candidate):
            return str(candidate) if candidate is not None else peer
        hops = [hop for header in forwarded_for for hop in header.split(",") if hop.strip()]
        for hop in reversed(hops):
            address = parse_address(hop)
            if address is None:
                break
            candidate = address
            if not self.holds(address):
                break
        return str(candidate)
