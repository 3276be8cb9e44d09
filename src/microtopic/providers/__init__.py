"""Providers: the clients that send one chat completion to one key."""
