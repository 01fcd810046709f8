"""Times as every record of ours holds them: aware datetimes in UTC.

Containers, images, content, snapshots and leases all carry created and
updated times; the stores, the wire converters and the CLI agree on the
zero time through this module, which imports nothing of ours so that
anything, however low, may use it.
"""

from __future__ import annotations

import datetime as dt

__all__ = ["EPOCH"]

#: The zero time (the Unix epoch): what a record that was never stored carries,
#: and the origin every integer or protobuf time is counted from.
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
