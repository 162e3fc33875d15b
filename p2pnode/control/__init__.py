"""The control API: the JSON-RPC server on the node's Unix socket."""
