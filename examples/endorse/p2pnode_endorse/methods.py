"""The ``endorse.*`` control methods, declared: name, params, result and help in one place
(p2pnode/control/methods.py). The service (service.py) has a method of each ``handler``
name. No trio: the CLI reads these to check params before it calls the node."""

from __future__ import annotations

from p2pnode.control.methods import Method, Param

from p2pnode_endorse.rules import MAX_ANSWER, MAX_NOTE, MAX_TEXT

MAX_LIST = 1000  # endorsements in one endorse.list answer

ENDORSEMENT = "`{author, peer, seq, ts, text, id}` (peers as peer IDs, ts in ms)"

METHODS = (
    Method(
        "endorse.add",
        "Sign an endorsement of a peer (\"I vouch for PEER: text\") into this node's chain, as an entry of kind "
        "`endorse.v1`, and gossip it like any entry. Refusals: `self_endorsement`, `bad_text` (blank), "
        "`duplicate_endorsement` (this node endorsed that peer with that text already).",
        params=(Param("peer", "peer", "the peer endorsed", required=True),
                Param("text", "str", f"what you vouch for, 1 to {MAX_TEXT} characters", required=True,
                      max_len=MAX_TEXT)),
        result=ENDORSEMENT, handler="endorse_add",
    ),
    Method(
        "endorse.list",
        "The endorsements of a peer (default: this node) in every chain this node holds, newest author first, "
        "found by one prefix scan of the extension's index. Entries whose body the rules refuse are stored "
        "but never indexed, so never listed.",
        params=(Param("peer", "peer", "whose endorsements (default: this node's)"),
                Param("limit", "int", "at most this many", default=100, low=1, high=MAX_LIST)),
        result=f"`{{peer, endorsements: [{ENDORSEMENT} + received_ms (when this node learned it was endorsed, "
               "or null)], more: bool}`",
        handler="endorse_list",
    ),
    Method(
        "endorse.ask",
        "Sign an ask (\"please endorse me\") and gossip it on `p2plend/x/endorse/1/asks`; the node republishes it "
        "while it lives (`ask_ttl_s`). A new ask replaces the last one.",
        params=(Param("note", "str", f"a word for whoever reads it, at most {MAX_NOTE} characters", default="",
                      max_len=MAX_NOTE),),
        result="`{author, ts, note}`", handler="endorse_ask",
    ),
    Method(
        "endorse.asks", "The asks of other peers this node keeps (the newest of each peer, while it lives).",
        result="`{accepting: bool, asks: [{author, ts, note}]}`", handler="endorse_asks",
    ),
    Method(
        "endorse.fetch",
        "Ask a connected peer, over `/p2plend/x/endorse/1.0.0`, for the endorsements it holds of someone "
        "(default: of itself); each one is verified here, and `held` says whether this node holds it too. "
        "Refusals: `not_connected`, `unreachable` (no answer in 10 s), `bad_answer` (the peer broke the "
        "protocol).",
        params=(Param("peer", "peer", "the peer to ask", required=True),
                Param("of", "peer", "whose endorsements (default: the peer asked)"),
                Param("limit", "int", "at most this many", default=MAX_ANSWER, low=1, high=MAX_ANSWER)),
        result=f"`{{peer, of, endorsements: [{ENDORSEMENT} + held: bool]}}`", handler="endorse_fetch",
    ),
)
