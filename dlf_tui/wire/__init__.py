"""The engine's control socket: the protocol, the client and the server."""
