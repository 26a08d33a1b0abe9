"""Logging in to vCenter or ESXi with pyvmomi, with every failure turned into a typed connector error."""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

from connectors import tls
from connectors.base import (
    BadCredentials,
    ConnectorError,
    Endpoint,
    ProtocolError,
    Unreachable,
)

DEFAULT_PORT = 443


def port_of(endpoint: Endpoint) -> int:
    return endpoint.port or DEFAULT_PORT


@contextmanager
def session(endpoint: Endpoint) -> Iterator[Any]:
    """A logged-in ServiceInstance, logged out afterwards."""
    instance = connect(endpoint)
    try:
        yield instance
    finally:
        with suppress(Exception):  # logging out of a session that already failed is best effort
            Disconnect(instance)


def fault_message(fault: Exception) -> str:
    return str(getattr(fault, "msg", "") or type(fault).__name__)


def connect(endpoint: Endpoint) -> Any:
    port = port_of(endpoint)
    tls.probe(endpoint, port)
    try:
        instance = SmartConnect(
            host=endpoint.address,
            port=port,
            user=endpoint.username,
            pwd=endpoint.secret,
            sslContext=tls.client_context(endpoint),
            httpConnectionTimeout=endpoint.timeout,
            connectionPoolTimeout=-1,
        )
    except vim.fault.InvalidLogin:
        raise BadCredentials(
            f"{endpoint.address} refused the user name or password of {endpoint.username!r}"
        ) from None
    except vim.fault.NoPermission as error:
        raise BadCredentials(
            f"{endpoint.username!r} may not log in to {endpoint.address}: {fault_message(error)}"
        ) from None
    except ssl.SSLCertVerificationError as error:
        raise tls.untrusted(endpoint, port, error) from None
    except ssl.SSLError as error:
        raise Unreachable(f"TLS with {endpoint.address}:{port} failed: {error.reason or error}") from None
    except ConnectorError:
        raise
    except (OSError, http.client.HTTPException) as error:
        raise tls.network_error(endpoint, port, error) from None
    except vim.fault.HostConnectFault as error:
        # What pyvmomi raises when the socket times out or drops mid-answer: the network, not the product.
        raise Unreachable(
            f"{endpoint.address}:{port} did not answer in time: {fault_message(error)}"
        ) from None
    except vmodl.MethodFault as error:
        raise ProtocolError(f"{endpoint.address} answered with a fault: {fault_message(error)}") from None
    except Exception as error:
        if isinstance(error, socket.timeout):
            raise tls.network_error(endpoint, port, error) from None
        # pyvmomi raises plain exceptions for answers that are not a vSphere SOAP endpoint.
        raise ProtocolError(f"{endpoint.address}:{port} is not a vCenter or ESXi endpoint: {error}") from None
    return instance
