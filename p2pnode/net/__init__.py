"""The node on libp2p: the host, the peer book, and the I/O of sync and peer exchange."""
