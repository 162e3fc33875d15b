"""Endorsements: peers vouch for each other ("I vouch for PEER: text"). An example
extension of p2pnode; docs/extensions.md walks through it part by part.

This module is the whole declaration the node and the CLI read (the entry point
``p2pnode.extensions: endorse`` names ``EXTENSION``). It imports no trio and no libp2p
(extension contract, rule 1): the service, the commands and the verify check are named
as ``"module:attribute"`` and imported only by whoever runs them.
"""

from __future__ import annotations

from protocol.kinds import Kind

from p2pnode.extension import Codec, Extension, StreamProtocol, Topic

from p2pnode_endorse import rules
from p2pnode_endorse.methods import METHODS
from p2pnode_endorse.records import NAME
from p2pnode_endorse.settings import SETTINGS

EXTENSION = Extension(
    name=NAME,
    version="1.0.0",
    description="peers endorse each other: I vouch for PEER",
    kinds=(Kind(rules.KIND, "an endorsement: {peer: bin 32, text}; nobody endorses themselves",
                rules.validate, rules.index),),
    reacts=(rules.KIND,),
    topics=(Topic(rules.TOPIC, rules.check_ask, "on_ask", max_size=rules.MAX_ASK_SIZE),),
    streams=(StreamProtocol(rules.PROTOCOL, Codec(rules.encode, rules.decode), "serve_want", max_per_peer=2,
                            max_frame=rules.MAX_FRAME),),
    methods=METHODS,
    tasks=("upkeep",),
    settings=SETTINGS,
    service="p2pnode_endorse.service:Endorse",
    cli="p2pnode_endorse.cli:endorse",
    verify="p2pnode_endorse.verify:check_records",
)
