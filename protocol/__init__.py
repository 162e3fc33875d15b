"""The rules of p2plend, sans-IO: encoding, signatures, entries, chains, kinds, fork proofs.

Nothing in this package opens a socket or a file, reads a clock, or imports libp2p or
plyvel: time and keys are parameters, and every function is a pure rule that can be tested
without a network. Each module states its rules at its top; docs/protocol.md states them
byte by byte.
"""

PROTOCOL_VERSION = "p2plend/1"
