"""Lending, the first extension: offers and requests in a gossiped book, contracts
countersigned over ``/p2plend/agree/1.0.0``, receipts, notices and transfers in both
parties' chains, and loan state computed from them.

It is declared here and found through the ``p2pnode.extensions`` entry point like any
third-party extension (pyproject.toml); the core knows it by nothing else. Its rules are in
``protocol/lending/``, its commands in ``cli/lending/``. This module imports no trio and
no libp2p (extension contract, rule 1).
"""

from __future__ import annotations

from protocol import wire
from protocol.lending import agree
from protocol.lending.amendment import AMENDMENT_KINDS
from protocol.lending.contract import LOAN_KINDS
from protocol.lending.reserve import RESERVE_KINDS
from protocol.lending import market
from protocol.lending.offer import TOPIC_OFFERS, check_gossip
from protocol.envelope import MAX_ENVELOPE_SIZE

from p2pnode.extension import Codec, Extension, StreamProtocol, Topic
from p2pnode.lending.methods import METHODS
from p2pnode.lending.settings import SETTINGS

MAX_INBOUND_AGREE = 32  # proposals one peer may have in flight: each is one short stream


def _agree_payload(msg: agree.AgreeMessage) -> bytes:
    """An agree message's frame payload (``agree.encode`` gives the whole frame)."""
    return agree.encode(msg)[wire.FRAME_HEADER:]


EXTENSION = Extension(
    name="lending",
    version="1",
    description="offers, countersigned loans, receipts and loan state",
    kinds=LOAN_KINDS + AMENDMENT_KINDS + RESERVE_KINDS,
    reacts=tuple(k.name for k in LOAN_KINDS + AMENDMENT_KINDS),
    # (each node republishes its live offers, at most 100, every 30 s: 20/s a forwarder is room for
    # many authors, and a burst of 200 for a peer that just joined)
    topics=(Topic(TOPIC_OFFERS, check_gossip, "on_offers", max_size=MAX_ENVELOPE_SIZE, rate=(20.0, 200)),
            # (listings are republished every 30 s like offers; a seller lists each loan once)
            Topic(market.TOPIC_MARKET, market.check_gossip, "on_market", max_size=MAX_ENVELOPE_SIZE,
                  rate=(20.0, 200))),
    streams=(StreamProtocol(agree.AGREE_PROTOCOL, Codec(_agree_payload, agree.decode), "serve_agree",
                            max_per_peer=MAX_INBOUND_AGREE, max_frame=agree.MAX_AGREE_FRAME),),
    methods=METHODS,
    tasks=("book_upkeep", "market_upkeep", "holdings_upkeep", "proposal_retries", "reserve_upkeep", "autoinvest_runs"),
    settings=SETTINGS,
    section="loans",
    service="p2pnode.lending.service:Lending",
    cli="cli.lending:COMMANDS",
    verify="p2pnode.lending.verify:check_book",
    legacy_prefixes=((b"L", "index"), (b"P", "records"), (b"O", "records"), (b"X", "records"), (b"C", "records")),
    # auto_confirm signed the disbursement receipt on the lender's word alone: gone, since
    # a receipt says money arrived, which only the borrower's owner knows. max_rate capped
    # the nominal rate: [policy] apr_cap caps the APR, fees included (settings.py).
    retired_settings=("auto_confirm", "max_rate"),
    index_version=4,  # 2: agreements also index the offer they take and the edge they make; 3: the borrower;
    # 4: loan.amendment entries are indexed by loan (a store that held them as an unknown kind indexes them)
)
