"""The `microtopic` command line."""
