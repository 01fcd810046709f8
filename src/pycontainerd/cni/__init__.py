"""CNI networking for tasks: network namespaces and CNI plugins.

``Network.load()`` reads the first configuration of ``/etc/cni/net.d`` (as
``ctr run --cni``); ``setup(container_id, pid)`` gives the task's network
namespace an interface through the plugins and returns their
:class:`NetworkResult`; ``remove(container_id)`` takes it away again.
See :mod:`pycontainerd.cni.network` for the protocol and the bounds.
``resolve_conf_source(data_dir)`` picks the ``resolv.conf`` a container on
such a network should get.

Sits beside ``cio``: it imports only the small helpers, never the client or
the daemon, so pyctr and the service facade both use it.
"""

from __future__ import annotations

from pycontainerd.cni.config import (
    MAX_CONFIG_SIZE,
    MAX_PLUGINS,
    NetworkConfigList,
    PluginConfig,
    load_dir,
    load_file,
    parse_conf,
    parse_conflist,
)
from pycontainerd.cni.network import (
    DEFAULT_BIN_DIRS,
    DEFAULT_CACHE_DIR,
    DEFAULT_CONF_DIR,
    DEFAULT_IFNAME,
    DEFAULT_NETNS_DIR,
    MAX_CACHE_SIZE,
    MAX_OUTPUT_SIZE,
    NETNS_PREFIX,
    PLUGIN_TIMEOUT,
    Network,
    PortMapping,
)
from pycontainerd.cni.resolv import resolve_conf_source
from pycontainerd.cni.result import DNS, Interface, NetworkResult, Route, parse_result

__all__ = [
    "DEFAULT_BIN_DIRS",
    "DEFAULT_CACHE_DIR",
    "DEFAULT_CONF_DIR",
    "DEFAULT_IFNAME",
    "DEFAULT_NETNS_DIR",
    "DNS",
    "MAX_CACHE_SIZE",
    "MAX_CONFIG_SIZE",
    "MAX_OUTPUT_SIZE",
    "MAX_PLUGINS",
    "NETNS_PREFIX",
    "PLUGIN_TIMEOUT",
    "Interface",
    "Network",
    "NetworkConfigList",
    "NetworkResult",
    "PluginConfig",
    "PortMapping",
    "Route",
    "load_dir",
    "load_file",
    "parse_conf",
    "parse_conflist",
    "parse_result",
    "resolve_conf_source",
]
