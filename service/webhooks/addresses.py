"""Where a webhook may be sent: public addresses only (no server-side request forgery).

A webhook URL is chosen by whoever holds an admin key, and the delivery log reports what answered;
without a check, the service would probe its own network for them (the cloud metadata service at
169.254.169.254, a database on 127.0.0.1:5432, hosts on 10.0.0.0/8) and report what answered.
So the host is resolved and every address it resolves to must be public, at registration and
again at each delivery; the delivery then connects to the very address it checked, so a name
that resolves to a public address when checked and to a private one a moment later (DNS
rebinding) gains nothing. ``TRIALBOOK_WEBHOOK_ALLOW_PRIVATE`` turns the check off (receivers on
the same host or network, tests).

Refused: loopback, private, link-local, shared (100.64.0.0/10), multicast, reserved and
unspecified addresses and every other block IANA marks as not globally reachable; IPv4-mapped
IPv6 addresses (``::ffff:127.0.0.1``) and IPv6 forms that embed an IPv4 address (6to4, Teredo,
NAT64); IPv4 written other than as four decimal numbers (``2130706433``, ``0x7f000001``,
``0177.0.0.1``, ``127.1``: parsers disagree on them); and names reserved for private networks
(``*.internal`` such as ``metadata.google.internal``, ``*.local``, ``*.localhost``, names without
a dot), which are refused without a DNS query.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

import httpx

from service.config import get_settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Special-use and private-use names (RFC 6761, 6762, 8375, 2606; ICANN's 2024 `.internal`): they
# never name a public host, and a lookup would only ask the local resolver about internal ones.
PRIVATE_SUFFIXES = (
    ".internal",
    ".local",
    ".localhost",
    ".localdomain",
    ".home.arpa",
    ".arpa",
    ".lan",
    ".intranet",
    ".corp",
    ".private",
    ".test",
    ".example",
    ".invalid",
    ".onion",
)
NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class RefusedAddressError(ValueError):
    """The URL's host is, or resolves to, an address that is not public."""


class UnresolvedError(ValueError):
    """The URL's host does not resolve (now): it may later, so a delivery is retried."""


@dataclass(frozen=True)
class Target:
    """Where one delivery goes: the URL as registered and the checked address to connect to."""

    url: httpx.URL
    address: str | None  # None: no check (private addresses allowed), connect as the URL says


def _reason(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public address, or None when it is."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return "an IPv4-mapped IPv6 address (write the IPv4 address itself)"
        if ip.sixtofour is not None or ip.teredo is not None or any(ip in n for n in NAT64):
            return "an IPv6 address that embeds an IPv4 address (6to4, Teredo or NAT64)"
        if ip.is_site_local:
            return "a site-local address"
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("not globally reachable", not ip.is_global),
    )
    for name, hit in checks:
        if hit:
            return f"a {name} address" if name != "not globally reachable" else f"{name}"
    return None


def _literal(host: str) -> IPAddress | None:
    """The address a host names literally, or None for a name; odd IPv4 forms are refused."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        socket.inet_aton(host)  # accepts 2130706433, 0x7f000001, 0177.0.0.1, 127.1, ...
    except OSError:
        return None
    raise RefusedAddressError(
        f"'{host}' is an IPv4 address in an ambiguous form; write it as four decimal numbers "
        "(a.b.c.d)"
    )


def _check_name(host: str) -> None:
    if host == "localhost":
        return  # resolved from the hosts file, and refused as loopback
    if "." not in host:
        raise RefusedAddressError(
            f"'{host}' is a name without a domain, which only a local network resolves; give a "
            "fully qualified public name"
        )
    if host.endswith(PRIVATE_SUFFIXES):
        raise RefusedAddressError(f"'{host}' is a name reserved for private networks")


def resolve(url: str) -> Target:
    """Check ``url``'s host and return the public address to connect to.

    Raises :class:`RefusedAddressError` when the host is or resolves to a non-public address
    (any of its addresses), :class:`UnresolvedError` when it does not resolve. With the setting
    ``webhook_allow_private`` nothing is checked or resolved.
    """
    parsed = httpx.URL(url)
    if get_settings().webhook_allow_private:
        return Target(url=parsed, address=None)
    host = parsed.host.lower().rstrip(".")
    if not host:
        raise RefusedAddressError("the URL has no host")
    literal = _literal(host)
    if literal is not None:
        why = _reason(literal)
        if why is not None:
            raise RefusedAddressError(f"{literal} is {why}")
        return Target(url=parsed, address=str(literal))
    _check_name(host)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UnresolvedError(f"'{host}' does not resolve ({exc})") from exc
    addresses = list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))
    if not addresses:
        raise UnresolvedError(f"'{host}' does not resolve")
    for text in addresses:
        why = _reason(ipaddress.ip_address(text))
        if why is not None:
            raise RefusedAddressError(f"'{host}' resolves to {text}, {why}")
    return Target(url=parsed, address=addresses[0])


def request_for(target: Target) -> tuple[httpx.URL, dict[str, str], dict[str, str]]:
    """The URL to connect to, and the extra headers and extensions, so that the connection goes
    to the checked address while ``Host`` and TLS (SNI, certificate) still name the host."""
    if target.address is None:
        return target.url, {}, {}
    host = target.url.host
    pinned = target.url.copy_with(host=target.address)
    netloc = target.url.netloc.decode("ascii").rsplit("@", 1)[-1]
    extensions = {"sni_hostname": host} if target.url.scheme == "https" else {}
    return pinned, {"host": netloc}, extensions
