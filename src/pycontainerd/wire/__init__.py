"""Conversions between protobuf messages and our domain dataclasses.

Shared by the services (daemon side) and the client, so both read and write
the wire the same way; nothing here does I/O.
"""
