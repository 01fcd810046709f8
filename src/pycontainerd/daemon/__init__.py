"""The daemon: configuration, plugin start-up and the gRPC server."""
