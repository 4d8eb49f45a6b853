"""Where a hook may point: http(s) to a public address, unless
NOTIFICATION_ALLOW_PRIVATE_NETWORKS. Checked when a hook is saved and again
before every attempt (a name may resolve elsewhere later)."""

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings


class RefusedURL(ValueError):
    pass


def check_hook_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RefusedURL("Hook URLs must be http:// or https:// with a host.")
    if settings.NOTIFICATION_ALLOW_PRIVATE_NETWORKS:
        return
    for address in _addresses(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)):
        if not address.is_global or address.is_multicast:
            raise RefusedURL(
                f"{parts.hostname} resolves to {address}, a loopback, private, link-local or "
                "reserved address; set NOTIFICATION_ALLOW_PRIVATE_NETWORKS=true to allow it."
            )


def _addresses(host: str, port: int) -> set:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise RefusedURL(f"{host} does not resolve.") from exc
    addresses = set()
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        # An IPv4 address written as IPv6 (::ffff:10.0.0.1) is judged as IPv4.
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        addresses.add(address)
    return addresses
