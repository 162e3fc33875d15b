"""The loan documents of this node's chains: what the chains held here say about a loan
(through lending's index), and recording our own entries about loans once. Shared by
countersigning and the loans' money moves, notices and transfers."""

from __future__ import annotations

from datetime import date
from typing import Any

from protocol.errors import ProtocolError
from protocol.lending.contract import open_agreement, parse_date

from p2pnode.context import Context
from p2pnode.errors import ApiError, id_prefix, unique
from p2pnode.lending.loanview import LoanRecord, loan_ids, read_loan, recorded_by


class LoanDocuments:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.me = ctx.me

    def read(self, loan: bytes) -> LoanRecord:
        """Everything the chains held here say about ``loan``."""
        return read_loan(self.ctx.chains, self.ctx.index, loan)

    def recorded(self, loan: bytes) -> set[bytes]:
        """Ids of the documents about ``loan`` our own chain records (``LoanRecord.recorded_by``)."""
        return recorded_by(self.ctx.chains, self.ctx.index, loan, self.me)

    async def append(self, kind: str, body: dict, *, once: tuple[bytes, bytes] | None = None,
                     records: Any = None) -> Any:
        """Append one entry to our chain (the writer gossips it); with ``once = (loan,
        document id)``, only if our chain does not record that document yet (checked under
        the write lock, so two paths learning of one document at once record it once). The
        entry, or None if it was recorded already. ``records``: the writer's (space, puts,
        deletes), written in the same write as the entry, and written even if it was not."""
        unless = None if once is None else (lambda: once[1] in self.recorded(once[0]))
        return await self.ctx.writer.append_one(kind, body, unless=unless, records=records)

    async def record_agreement(self, agreement: bytes, *, records: Any = None) -> None:
        """Append our ``loan.agreement`` entry for ``agreement`` unless our chain has one
        (``records``: as ``append``'s)."""
        env = open_agreement(agreement)
        if await self.append("loan.agreement", {"contract": agreement}, once=(env.id, env.id),
                             records=records) is not None:
            self.ctx.count("loans.agreed")

    def our_agreement(self, loan: bytes) -> bytes | None:
        """The agreement our own chain records for ``loan``, if any."""
        for e in self.read(loan).entries:
            if e.author == self.me and e.kind == "loan.agreement":
                return e.body["contract"]
        return None

    async def record(self, loan: bytes, doc_id: bytes, kind: str, body: dict) -> None:
        await self.append(kind, body, once=(loan, doc_id))

    def day(self, value: Any) -> date:
        """The day a ``date`` param names (``YYYY-MM-DD``), today if None; ``ApiError``
        (``bad_date``) for one that is not a date or is in the future."""
        today = self.ctx.clock.today()
        if value is None:
            return today
        try:
            d = parse_date(value)
        except ProtocolError as e:
            raise ApiError(e.message, code=e.code) from None
        if d > today:
            raise ApiError(f"date {value} is in the future", code="bad_date")
        return d

    def find(self, ref: Any) -> LoanRecord:
        """The agreed loan an id or unique id prefix (8 hex digits or more) names."""
        ref = id_prefix(ref, "loan")
        loans = [bytes.fromhex(ref)] if len(ref) == 64 else [x for x in loan_ids(self.ctx.index) if x.hex().startswith(ref)]
        records = [r for r in (self.read(x) for x in loans) if r.contract is not None]
        return unique(records, ref, "loan", "unknown_loan")
