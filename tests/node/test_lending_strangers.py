"""Nothing enters a node's own chain on a stranger's word (issue 9, item 2): receipts and
transfers that merely name the node, and a stranger's declared disbursement, leave its
chain as it was — over real libp2p hosts on 127.0.0.1 and real LevelDB."""

from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path

import pytest
import trio

from framework.inprocess import lending, make_node, start, stop_all, sync_all
from framework.wait import wait_for
from protocol.envelope import countersign, seal
from protocol.keys import SigningKey
from protocol.lending.contract import make_receipt

pytestmark = pytest.mark.trio

START = (date.today() - timedelta(days=10)).isoformat()


def chain_length(node) -> int:
    return node.store.head(node.key.public_key).seq


async def test_a_strangers_documents_that_name_the_node_never_enter_its_chain(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        lender, borrower, stranger = nodes = [
            await start(nursery, make_node(tmp_path / n, n, pex=False, **kw))
            # the borrower's config is one written before auto_confirm was retired
            for n, kw in (("l", {}), ("b", {"loans": {"auto_confirm": True}}), ("s", {}))]
        for i, a in enumerate(nodes):
            for b in nodes[i + 1:]:
                await b.connect(a.listen_addrs()[0])
        await sync_all(nodes)
        oid = (await lender.call("offer.create", {"amount": "1200.00", "currency": "EUR", "rate": "12%",
                                                  "term": "3m"}))["id"]
        await wait_for(lambda: lending(borrower).book.get(bytes.fromhex(oid)) is not None, 10, "the offer")
        loan = bytes.fromhex((await borrower.call("loan.propose", {"offer": oid, "start": START}))["loan"])
        await sync_all(nodes)
        before = chain_length(borrower)

        async def stranger_appends(kind: str, body: dict) -> None:
            await stranger.call("ledger.append", {"kind": kind, "body": body})

        b, s, x = borrower.key.public_key, stranger.key.public_key, SigningKey.generate()
        today = date.today()
        # a receipt for a loan that does not exist, naming the borrower as payer
        junk = make_receipt(stranger.key, loan=os.urandom(32), n=1, what="disbursement", amount=100, day=today, payer=b)
        await stranger_appends("loan.receipt", {"receipt": {"$bin": junk.raw.hex()}})
        # a receipt for the real loan, paid by the borrower to the stranger: it counts for nothing
        wrong = make_receipt(stranger.key, loan=loan, n=1, what="disbursement", amount=120000, day=today, payer=b)
        await stranger_appends("loan.receipt", {"receipt": {"$bin": wrong.raw.hex()}})
        # a transfer of the real loan between two keys of the stranger's: it never held the claim
        t = countersign(seal({"type": "transfer", "loan": loan, "from": s, "to": x.public_key, "after": 0,
                              "date": today.isoformat()}, stranger.key), x)
        await stranger_appends("loan.transfer", {"transfer": {"$bin": t.raw.hex()}})
        # a disbursement declared by the stranger
        await stranger_appends("loan.declared", {"loan": {"$bin": loan.hex()}, "what": "disbursement",
                                                 "amount": 120000, "date": today.isoformat()})
        await sync_all(nodes)
        await trio.sleep(0.5)  # what the borrower's node would do, it does on the ingest of these
        assert chain_length(borrower) == before
        view = await borrower.call("loan.show", {"loan": loan.hex()})
        assert view["state"] == "awaiting_disbursement" and view["counted"] == []

        # nor on the lender's word: a receipt says the money arrived, which only the
        # borrower's owner knows (issue 9, item 2: the retired auto_confirm signed one here)
        await lender.call("loan.disburse", {"loan": loan.hex(), "date": START})
        await sync_all(nodes)
        await trio.sleep(0.5)
        assert chain_length(borrower) == before
        await borrower.call("loan.confirm", {"loan": loan.hex()})
        assert chain_length(borrower) == before + 1
        await sync_all(nodes)
        assert (await lender.call("loan.show", {"loan": loan.hex()}))["state"] != "awaiting_disbursement"
        await stop_all(nodes)
