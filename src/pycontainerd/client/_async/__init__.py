"""The hand-written asynchronous client."""
