"""TLS for connectors: trust the system store, an extra CA, or one pinned certificate fingerprint.

An untrusted certificate is reported with its SHA-256 fingerprint, so an admin can compare it with the one the
server shows and pin it (the usual way with a self-signed vCenter or a Hyper-V host's WinRM listener).
"""

from __future__ import annotations

import hashlib
import socket
import ssl
from typing import Any

from connectors.base import Endpoint, TimedOut, Unreachable, UntrustedCertificate


def normalise_thumbprint(value: str) -> str:
    return value.replace(":", "").replace(" ", "").lower()


class PinnedContext(ssl.SSLContext):
    """Accepts exactly one certificate, by SHA-256 fingerprint, checked inside the handshake's wrap_socket, so
    nothing is sent to a server before its certificate matched (no check-then-connect race)."""

    pin = ""
    address = ""

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        wrapped = super().wrap_socket(*args, **kwargs)
        actual = fingerprint(wrapped.getpeercert(binary_form=True) or b"")
        if actual != self.pin:
            wrapped.close()
            raise UntrustedCertificate(
                f"the certificate of {self.address} does not match the pinned fingerprint "
                f"(it presents SHA-256 {pretty(actual)})"
            )
        return wrapped


def client_context(endpoint: Endpoint) -> ssl.SSLContext:
    """The context for a connection: a pinned fingerprint if one is set, else the system store plus the
    endpoint's CA (or no verification at all when an admin turned it off)."""
    if endpoint.thumbprint:
        pinned = PinnedContext(ssl.PROTOCOL_TLS_CLIENT)
        pinned.check_hostname = False
        pinned.verify_mode = ssl.CERT_NONE
        pinned.pin = normalise_thumbprint(endpoint.thumbprint)
        pinned.address = endpoint.address
        return pinned
    context = ssl.create_default_context()
    if not endpoint.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if endpoint.ca_pem.strip():
        try:
            context.load_verify_locations(cadata=endpoint.ca_pem)
        except (ssl.SSLError, ValueError) as error:
            raise UntrustedCertificate(
                f"the CA certificate given for {endpoint.address} is not valid PEM: {error}"
            ) from None
    return context


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def pretty(thumbprint: str) -> str:
    return ":".join(thumbprint[i : i + 2] for i in range(0, len(thumbprint), 2)).upper()


def peer_fingerprint(host: str, port: int, timeout: float) -> str | None:
    """The SHA-256 fingerprint of what a TLS server presents, read without trusting it (for error messages)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host) as wrapped,
        ):
            der = wrapped.getpeercert(binary_form=True)
    except OSError:
        return None
    return fingerprint(der) if der else None


def untrusted(endpoint: Endpoint, port: int, error: BaseException) -> UntrustedCertificate:
    seen = peer_fingerprint(endpoint.address, port, min(endpoint.timeout, 5.0))
    hint = f"; it presents SHA-256 {pretty(seen)}: add its CA or pin that fingerprint" if seen else ""
    reason = getattr(error, "verify_message", "") or str(error)
    return UntrustedCertificate(
        f"the certificate of {endpoint.address}:{port} is not trusted ({reason}){hint}",
        fingerprint=seen or "",
    )


def network_error(endpoint: Endpoint, port: int, error: BaseException) -> Unreachable | TimedOut:
    """A socket-level failure as a connector error naming the address."""
    if isinstance(error, TimeoutError | socket.timeout):
        return TimedOut(f"{endpoint.address}:{port} did not answer within {endpoint.timeout:g} s")
    if isinstance(error, socket.gaierror):
        return Unreachable(f"cannot resolve host name {endpoint.address!r}: {error.strerror}")
    if isinstance(error, ConnectionRefusedError):
        return Unreachable(f"{endpoint.address}:{port} refused the connection (is the service running?)")
    return Unreachable(f"cannot reach {endpoint.address}:{port}: {error}")


def probe(endpoint: Endpoint, port: int) -> None:
    """Connect and finish a TLS handshake within the endpoint's timeout, with the endpoint's trust settings.

    Client libraries (pyvmomi's version discovery among them) open connections without a time-out; probing
    first turns a server that accepts but never answers into a TimedOut instead of a hang."""
    context = client_context(endpoint)
    try:
        with socket.create_connection((endpoint.address, port), timeout=endpoint.timeout) as raw:
            raw.settimeout(endpoint.timeout)
            with context.wrap_socket(raw, server_hostname=endpoint.address):
                pass
    except ssl.SSLCertVerificationError as error:
        raise untrusted(endpoint, port, error) from None
    except UntrustedCertificate:
        raise
    except ssl.SSLError as error:
        raise Unreachable(f"TLS with {endpoint.address}:{port} failed: {error.reason or error}") from None
    except OSError as error:
        raise network_error(endpoint, port, error) from None
