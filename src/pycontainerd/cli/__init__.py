"""pyctr, the command line client (console script ``pyctr``).

``main`` runs it; command groups live one per module in ``cli.commands``.
The CLI talks to daemons through :class:`pycontainerd.client.Client` only and
never imports daemon-side code.
"""

from pycontainerd.cli.main import main

__all__ = ["main"]
