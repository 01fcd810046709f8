"""Thin gRPC servicers, one module per containerd API service."""
