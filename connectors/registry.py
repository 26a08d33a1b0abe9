"""Connectors by kind, imported only when used (pyvmomi and pywinrm load only where they are needed)."""

from __future__ import annotations

import importlib

from connectors.base import Connector, Endpoint, Misconfigured

CONNECTORS = {
    "vsphere": "connectors.vsphere:VSphereConnector",
    "hyperv": "connectors.hyperv:HyperVConnector",
}


def connector_for(endpoint: Endpoint) -> Connector:
    try:
        module_name, _, class_name = CONNECTORS[endpoint.kind].partition(":")
    except KeyError:
        raise Misconfigured(f"no connector for sources of kind {endpoint.kind!r}") from None
    connector: Connector = getattr(importlib.import_module(module_name), class_name)(endpoint)
    return connector
