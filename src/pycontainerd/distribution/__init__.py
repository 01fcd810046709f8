"""Distribution: pulling images from registries into a content store, and
pushing them back, as containerd's client ``Pull``/``Fetch``/``Push`` do.

The orchestration works on small protocols (a content store that reads,
writes and labels; an image store that creates and updates records; the
registry resolver, fetcher and pusher of :mod:`pycontainerd.remotes`), so the
client (through its content and images services) and the daemon (on its
own stores, for the Transfer service) share it.  :mod:`.pull` walks and
fetches with progress and the hooks a streaming unpack needs; :mod:`.push`
uploads children first with mounts and skips.  Import the submodules.
"""

from __future__ import annotations

__all__: list[str] = []
