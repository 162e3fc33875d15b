"""Lending's control methods, declared (``offer.*``, ``loan.*``, ``market.*``, ``policy.*`` and ``credit.*``): name, params, result and
help in one place (p2pnode/control/methods.py); the service (p2pnode/lending/service.py)
binds each to the handler its ``handler`` names. No trio: the CLI reads these.

Ids of offers, loans and proposals are 64 hex digits, or a unique prefix of at least 8.
Amounts in params are decimal text in the currency (``"250.00"``); amounts in answers are
integers of minor units, with a ``*_text`` twin where a person reads them. Dates are
``YYYY-MM-DD`` (UTC) and default to today; a date in the future is refused (``bad_date``).
"""

from __future__ import annotations

from protocol.lending.offer import MAX_OFFER_MS, SIDES

from p2pnode.control.methods import Method, Param

PROPOSAL_TTL_S = 600  # default life of a proposal: the acceptor must answer within it
MAX_PROPOSAL_TTL_S = 7 * 24 * 3600
DEFAULT_OFFER_EXPIRY_S = 7 * 24 * 3600
MAX_REASON = 1000

OFFER_VIEW = ("offer view `{id, side, author (peer ID), currency, min_amount, max_amount, min_amount_text, "
              "max_amount_text, rate_bp, rate_text, term, period_days, schedule, grace_days, late_fee, late_fee_text, "
              "default_days, min_grade, created, expires}` (amounts in minor units, times in ms)")
PROPOSAL_VIEW = ("proposal view `{loan, role (out|in), state (proposed|held|pending|agreed|refused|expired), code, "
                 "reason, lender, borrower, proposer, principal, principal_text, currency, rate_bp, rate_text, term, "
                 "schedule, start, offer, expires, updated, policy (the policy the contract names, or null)}`")
LOAN_VIEW = ("loan view: `protocol.lending.loanstate.LoanState.to_json()` (state, days past due, bucket, holder, rows "
             "with paid and due parts, totals, counted and rejected documents, disputes) with peers as peer IDs, plus "
             "`loan`, `as_of`, `role` (this node's: lender, borrower, former_lender or null), `shown_state` "
             "(`transferred` for a former lender), `terms`, `declared` (payments declared by the payer, counted or "
             "not), `receipts` (each with `counted`), `transfer_details` (each transfer held: `{id, from, to, after, "
             "date, price (null if none), counted}`), `recorded_by` and `unreadable_entries`. Every node holding both "
             "chains gives the same view for the same `at`, except `role` and `shown_state`")

POLICY_VIEW = ("policy view `{name, description, in_force, overrides, rate_cap_bp, rate_cap_text, apr_cap_bp, "
               "lpr_bp, lpr_text, lpr_multiple, max_principal, max_term_months, refuse_forked, refuse_defaulted, "
               "max_days_past_due, min_grade, allow_ungraded, borrow_cap, lender_cap, new_identity_steps, "
               "exposure_per_borrower, exposure_per_grade, exposure_total}` (limits: whole major units by currency "
               "code, `*` for any other; docs/policy.md)")
LISTING_VIEW = ("listing view `{id, loan, seller, borrower (peer IDs), currency, price, price_text, state, "
                "days_past_due, grade, remaining_principal, remaining_principal_text, remaining_flows, ytm_bp (the "
                "yield to maturity at the price, floored basis points a year, or null), created, expires, mine}`")
CREDIT_SUMMARY = "grade, score, repaid, paid_late, defaulted, days_past_due, owed, verified_age_days, forked"
CREDIT_VIEW = ("credit profile `{peer, as_of, grade (A-G or none), score, max_amount, max_amount_text, min_rate_bp, "
               "owed, owed_text, owed_by_lender, max_days_past_due, days_past_due, loans, active, repaid, "
               "repaid_on_time, paid_late, defaulted, written_off, disputed, counterparties, trusted_counterparties, "
               "top_lender_share_pm, trusted_repaid_pm, trust_pm, forked, verified_age_days}` (amounts by currency "
               "in minor units; docs/credit.md), and with `explain` `factors`: `[{name, value, points, note}]`")

FILL_VIEW = ("`{min_amount, max_amount, funded, remaining, parts, overfilled, exhausted, smallest}`: how far it "
             "is filled, from the agreements its author's chain holds (an offer is taken in parts, each its own "
             "contract, until nothing remains: protocol/lending/fill.py)")

AUTOINVEST_VIEW = ('`{"enabled", "strategy": {budget, per_loan, max_share_bp, min_grade, grade_mix, max_term_months} '
                   'or null, "decisions": [DECISION]}`; a DECISION is `{request, borrower (peer ID), currency, '
                   'grade, amount, amount_text, reason ("fund", or why it was passed over: currency, term, grade, '
                   'too_small, budget, borrower_share, grade_mix), outcome, at_ms}`')

_ID = "an id, or a unique prefix of at least 8 hex digits"


def _loan(required: bool = True) -> Param:
    return Param("loan", "str", f"the loan: {_ID}", required=required, max_len=64)


def _date(what: str) -> Param:
    return Param("date", "str", what, max_len=10)


METHODS = (
    Method(
        "offer.create",
        "Sign an offer to lend (`side` lend) or a request to borrow (`side` borrow), keep it in this node's book "
        "and gossip it, if this node's policy allows its terms. Refusals: `bad_amount`, `bad_currency`, `bad_rate`, "
        "`bad_term`, `bad_offer` (naming the field), `too_many_offers` (100 live per author), `book_full`, and the "
        "policy's: the first rule broken (`rate_cap`, `max_principal`, `max_term`), the message naming every rule "
        "broken with its numbers, `details.rules` listing them.",
        params=(
            Param("side", "str", "lend or borrow", default="lend", choices=SIDES),
            Param("currency", "str", "ISO 4217-style code, e.g. EUR", required=True, max_len=3),
            Param("amount", "str", "the amount, decimal text (or give min_amount and max_amount)", max_len=40),
            Param("min_amount", "str", "the smallest amount a taker may take", max_len=40),
            Param("max_amount", "str", "the largest amount a taker may take", max_len=40),
            Param("rate", "str", 'yearly rate, e.g. "7.5%"', required=True, max_len=20),
            Param("term", "str", 'e.g. "12m", "26w", "90d"', required=True, max_len=8),
            Param("period_days", "int", "days between installments of a day-based term", low=1, high=3660),
            Param("schedule", "str", "annuity, equal-principal, interest-only or bullet", default="annuity",
                  max_len=20),
            Param("grace_days", "int", "days after a due date before an installment is late", default=5, low=0,
                  high=365),
            Param("late_fee", "str", "fee charged once per late installment, decimal text", default="0",
                  max_len=40),
            Param("default_days", "int", "days past due after which the lender may declare a default",
                  default=90, low=1, high=3650),
            Param("min_grade", "str", "the lowest credit grade of a taker, A to G (its first letter; enforced when this node countersigns)", max_len=8),
            Param("expires_in_s", "int", "seconds the offer stays live", default=DEFAULT_OFFER_EXPIRY_S, low=1,
                  high=MAX_OFFER_MS // 1000),
        ),
        result=OFFER_VIEW, handler="offer_create",
    ),
    Method("offer.cancel", "Cancel one of this node's own offers or requests, in every book. Refusals: "
           "`unknown_offer`, `ambiguous_id`, `not_yours`.",
           params=(Param("id", "str", f"the offer: {_ID}", required=True, max_len=64),),
           result="`{id, cancelled: true}`", handler="offer_cancel"),
    Method(
        "offer.list", "The live offers and requests in this node's book, by rate then age. Refusals: `bad_amount`, "
        "`bad_rate`.",
        params=(
            Param("side", "str", "lend or borrow", choices=SIDES),
            Param("currency", "str", "only this currency", max_len=3),
            Param("amount", "str", "only offers whose range holds this amount", max_len=40),
            Param("max_rate", "str", 'at most this rate, e.g. "10%"', max_len=20),
            Param("min_rate", "str", "at least this rate", max_len=20),
            Param("author", "peer", "only this author's"),
            Param("own", "bool", "only this node's own", default=False),
        ),
        result=f'`{{"offers": [{OFFER_VIEW}, and `author_forked` (a fork proof of its author is held) and `grade` '
               f'(its author\'s credit grade in this node\'s eyes, `credit.show`) and `fill` {FILL_VIEW}]}}`',
        handler="offer_list",
    ),
    Method("offer.show", "One offer or request of the book. Refusals: `unknown_offer`, `ambiguous_id`.",
           params=(Param("id", "str", f"the offer: {_ID}", required=True, max_len=64),),
           result=f"{OFFER_VIEW}, and `author_forked` (a fork proof of its author is held), `grade` (its "
                  f"author's credit grade) and `fill` {FILL_VIEW}", handler="offer_show"),
    Method(
        "loan.propose",
        "Take an offer or request: sign a contract on its terms that commits both chain heads as this node holds "
        "them, and send it to its author, who countersigns by its policy or holds it for its owner's review. "
        "Answers once the proposal is stored durably and asked (state agreed, held, refused with `code` and "
        "`reason`, or proposed: the other node is unreachable now and is asked again until the expiry). The "
        "contract names this node's policy (`policy`), which must allow it first; the other node checks it by its "
        "own (refused with code `policy`, the reason naming the rules). An offer is taken in parts, each its own "
        "contract: the author's node admits a part only if it fits what remains after the parts agreed before it "
        "(refused with `offer_exhausted` or `below_minimum`; a last part may be below the minimum if it takes all "
        "that remains). "
        "Refusals: `unknown_offer`, `ambiguous_id`, `own_offer`, `offer_expired`, `bad_amount`, `offer_exhausted`, "
        "`below_minimum` (as this node sees the offer, before anything is sent), `no_chain` (no "
        "copy of the other party's chain yet), `bad_date`, and the policy's as for `offer.create` (with the borrower "
        "rules, `past_due`, `borrow_cap`, ..., when this node lends and knows the borrower's credit).",
        params=(
            Param("offer", "str", f"the offer or request: {_ID}", required=True, max_len=64),
            Param("amount", "str", "the principal (default: all that remains of the offer)", max_len=40),
            Param("start", "str", "the first day of the schedule (default today; may be in the past)", max_len=10),
            Param("ttl_s", "int", "seconds the other node has to countersign", default=PROPOSAL_TTL_S, low=1,
                  high=MAX_PROPOSAL_TTL_S),
        ),
        result=PROPOSAL_VIEW, handler="loan_propose",
    ),
    Method("policy.list", "The lending policies this node knows (presets), and which is in force.",
           result='`{in_force, "policies": [{name, description, in_force}]}`', handler="policy_list"),
    Method("policy.show", "One policy's parameters (default: the one in force, with its overrides). Refusals: "
           "`unknown_policy`.",
           params=(Param("name", "str", "the policy (default: the one in force)", max_len=32),),
           result=POLICY_VIEW, handler="policy_show"),
    Method("policy.set", "Put a policy in force, with overrides of some of its parameters (those not given take "
           "the preset's). Written to the `[policy]` section of config.toml first, so it holds after a restart; "
           "checks made from then on use it. Refusals: `unknown_policy`, `bad_policy`, `save_failed`.",
           params=(Param("name", "str", "the preset: default, permissive or cn-2016", required=True, max_len=32),
                   Param("lpr", "str", 'the one-year LPR, e.g. "3.10%" (cn-2016 caps the APR at 4 x it)', max_len=20),
                   Param("apr_cap", "str", 'the APR cap, e.g. "24%"', max_len=20),
                   Param("min_grade", "str", "the lowest grade lent to, A to G", max_len=4),
                   Param("max_term", "str", 'the longest term, in months, e.g. "120m"', max_len=8)),
           result=POLICY_VIEW, handler="policy_set"),
    Method("loan.proposal", "One proposal this node made or must answer. Refusals: `unknown_proposal`.",
           params=(Param("loan", "str", f"the proposal: {_ID}", required=True, max_len=64),),
           result=PROPOSAL_VIEW, handler="loan_proposal"),
    Method("loan.pending", "Proposals held for this owner's review (a node run with --review), each with the "
           "proposer's credit in this node's eyes.",
           result=f'`{{"pending": [{PROPOSAL_VIEW} and `proposer_credit` `{{{CREDIT_SUMMARY}}}`]}}`',
           handler="loan_pending"),
    Method("loan.accept", "Countersign a proposal held for review. Refusals: `unknown_proposal`, `expired`, "
           "`offer_expired`.", params=(Param("loan", "str", f"the proposal: {_ID}", required=True, max_len=64),),
           result=PROPOSAL_VIEW + " (agreed)", handler="loan_accept"),
    Method("loan.reject", "Refuse a proposal held for review; the proposer sees the reason. Refusals: "
           "`unknown_proposal`.",
           params=(Param("loan", "str", f"the proposal: {_ID}", required=True, max_len=64),
                   Param("reason", "str", "why, for the proposer", default="rejected by the owner",
                         max_len=MAX_REASON)),
           result=PROPOSAL_VIEW + " (refused)", handler="loan_reject"),
    Method("loan.disburse", "The lender says it sent the principal (`loan.declared`); the borrower's receipt "
           "makes it count. Refusals: `not_lender`, `bad_state`.",
           params=(_loan(), _date("the day the money was sent")),
           result="`{loan, declared, amount, amount_text, date, seq}`", handler="loan_disburse"),
    Method("loan.confirm", "The borrower signs the receipt for the principal. Refusals: `not_borrower`, "
           "`bad_state`.", params=(_loan(), _date("the day the money arrived (default: the day the lender "
                                                  "declared)")),
           result="`{loan, receipt, n, what, amount, amount_text, date, seq}`", handler="loan_confirm"),
    Method("loan.repay", "The borrower says it sent a repayment (`loan.declared`); the holder's receipt makes it "
           "count. Refusals: `not_borrower`, `bad_amount`.",
           params=(_loan(), Param("amount", "str", "decimal text in the loan's currency", required=True, max_len=40),
                   _date("the day the money was sent")),
           result="`{loan, declared, amount, amount_text, date, seq}`", handler="loan_repay"),
    Method("loan.receipt", "The lender holding the claim signs the receipt for a repayment. Refusals: "
           "`not_holder`, `bad_state`, `bad_amount`.",
           params=(_loan(), Param("amount", "str", "decimal text in the loan's currency", required=True, max_len=40),
                   _date("the day the money arrived")),
           result="`{loan, receipt, n, what, amount, amount_text, date, seq}`", handler="loan_receipt"),
    Method("loan.default", "The holder declares the loan in default (allowed from the contract's default_days "
           "past due). Refusals: `not_holder`, `default_not_allowed`.", params=(_loan(),),
           result="`{loan, notice, seq, days_past_due}`", handler="loan_default"),
    Method("loan.writeoff", "The holder writes a defaulted loan off. Refusals: `not_holder`, `bad_state`.",
           params=(_loan(),), result="`{loan, notice, seq}`", handler="loan_writeoff"),
    Method("loan.dispute", "A party records its side of a disagreement. Refusals: `not_party`.",
           params=(_loan(), Param("reason", "str", "what is disputed, 1 to 1000 characters", required=True,
                                  max_len=MAX_REASON)),
           result="`{loan, notice, seq}`", handler="loan_dispute"),
    Method("loan.sell", "The holder lists the loan for sale at a price (protocol/lending/market.py): a listing "
           "signed by this node, gossiped, that a buyer takes with `loan.buy`; a new listing of a loan replaces the "
           "old. With `withdraw`, this node stops selling it (others drop the listing when it expires; a buy of it "
           "is refused `not_listed`). Refusals: `not_holder`, `not_for_sale` (not disbursed, repaid or written off; a "
           "defaulted loan may be sold), `bad_amount`, `not_listed`.",
           params=(_loan(), Param("price", "str", "decimal text in the loan's currency, what the buyer pays",
                                  max_len=40),
                   Param("days", "int", "how long the listing lives", default=7, low=1, high=30),
                   Param("withdraw", "bool", "withdraw this node's listing of the loan instead", default=False)),
           result=f"{LISTING_VIEW}; with `withdraw`: `{{loan, withdrawn: [listing id]}}`", handler="loan_sell"),
    Method("loan.buy", "Buy a listed loan: this node signs the transfer of the claim at the listing's price and "
           "sends it to the seller, whose node countersigns it if its listing stands; both chains record it, the "
           "borrower's node records the new holder, and later repayment receipts are this node's to sign. The "
           "money moves outside. Refusals: `unknown_listing`, `own_listing`, `listing_expired`, `not_holder`, "
           "`not_for_sale`, `bad_peer` (the borrower cannot buy its own loan), `unreachable`, and the seller's: "
           "`not_listed`, `wrong_price`, `stale_after`.",
           params=(Param("listing", "str", f"the listing: {_ID}", required=True, max_len=64),),
           result="`{loan, listing, transfer, from, price, price_text, currency, after, date}`", handler="loan_buy"),
    Method("market.list", "The listings of loans for sale that this node holds and that stand for the loan as it "
           "holds its documents, its own first: each with the loan's days past due, the borrower's grade, the "
           "remaining principal and the yield to maturity at the listing's price (protocol/lending/market.py, "
           "rule 3). Listings of loans whose documents are not held here are only counted (`unknown_loans`); "
           "listings sold, expired or otherwise no longer standing, too (`not_standing`).",
           params=(Param("loan", "str", "only listings of loans whose id starts with this", max_len=64),
                   Param("limit", "int", "listings shown at most (own first, then newest)", default=100, low=1,
                         high=1000)),
           result=f'`{{"as_of", "listings": [{LISTING_VIEW}], "unknown_loans", "not_standing", "more"}}` (`more`: '
                  'listings past the limit, not looked at)',
           handler="market_list"),
    Method("loan.reschedule", "New terms for a loan (an amendment, docs/protocol.md: for hardship, as Fineract's "
           "loan reschedule), which the borrower and the lender holding the claim must both sign, each by running "
           "this. The first to run it proposes: its node signs and sends the amendment, and the other node keeps "
           "it for its owner (`loan.show`'s `amendment_pending`). When the other owner runs it with the same terms "
           "(a date, schedule or period not given are the kept proposal's), its node countersigns, records "
           "`loan.amendment` and gives it to the proposer, whose node records it too. From the amendment's date the "
           "outstanding principal is repaid by the new schedule; interest fallen due and unpaid stays owed on that "
           "date. Refusals: `not_party`, `bad_state`, `bad_rate`, `bad_term`, `bad_date`, `bad_schedule`, "
           "`conflict` (amended after the last receipt already), `bad_answer`, and the other node's refusal code.",
           params=(_loan(), Param("rate", "str", 'the new yearly rate, e.g. "4.5%"', required=True, max_len=20),
                   Param("term", "str", 'the new term from the date, e.g. "12m", "26w", "90d"', required=True,
                         max_len=8),
                   Param("schedule", "str", "the new schedule kind (default: the kept proposal's, else the "
                         "contract's)", choices=("annuity", "equal-principal", "interest-only", "bullet")),
                   Param("period_days", "int", "days between installments of a term in days or weeks",
                         low=1, high=3660),
                   _date("the day the new terms start (default: the kept proposal's, else today)")),
           result="`{loan, amendment, state (agreed|proposed), after, date, rate_bp, rate_text, term, schedule, "
                  "period_days, signed_by: [peer ID]}` and, when proposed, `note`: what happens next",
           handler="loan_reschedule"),
    Method("loan.show", "One agreed loan as of a day. Refusals: `unknown_loan`, `ambiguous_id`.",
           params=(_loan(), Param("at", "str", "the day to look at (default today)", max_len=10)),
           result=f"{LOAN_VIEW}; `amendments`: each counted amendment (loan state rule 12: `id, after, date, "
                  "effective, outstanding_principal, arrears, first_row, rows`) with its terms and signers, then those "
                  "held that do not count with `code` and `reason`; `amendment_pending`: the reschedule proposals "
                  "this node keeps, `{theirs, ours}`, or null; and `forked`: the parties (peer IDs) of whom a fork "
                  "proof is held",
           handler="loan_show"),
    Method("loan.list", "Every loan this node holds documents of, and its own proposals never agreed.",
           params=(Param("role", "str", "only loans where this node is", choices=("lender", "borrower",
                                                                                 "former_lender", "any")),
                   Param("state", "str", "only loans in this state", max_len=30),
                   Param("at", "str", "the day to look at (default today)", max_len=10)),
           result='`{"as_of", "loans": [{loan, role, state, days_past_due, bucket, lender, borrower, currency, '
                  'principal, principal_text, outstanding, outstanding_text, start, term, forked}]}` (`forked`: the '
                  'parties of whom a fork proof is held; proposals never agreed have none)',
           handler="loan_list"),
    Method("portfolio.show", "This node's loans as a lender, per currency (protocol/lending/portfolio.py, "
           "docs/portfolio.md): outstanding principal by borrower, by grade (credit's, in this node's eyes) and by "
           "state; concentration (the top borrower's share, HHI); the NPL ratio (90+ days past due or defaulted); "
           "the expected loss by provisioning category; the realized net annualized return (LendingClub's NAR); the "
           "cash flows expected per month. And, as a borrower, what it owes and when. Amounts in minor units; "
           "ratios as exact `p/q` text and floored basis points (`*_bp`). The outstanding principal equals the sum "
           "of `loan.list`'s `outstanding` over the same loans, to the minor unit.",
           params=(Param("at", "str", "the day (default today), YYYY-MM-DD", max_len=10),),
           result='`{"as_of", "lender": {currency: {currency, as_of, loans, by_state, outstanding, written_off, '
                  'by_borrower: {peer ID: int}, by_grade, top_borrower, top_share, top_share_bp, hhi, hhi_bp, npl, '
                  'npl_ratio, npl_bp, expected_loss: {currency, total, outstanding, by_category}, cash_flows: {YYYY-MM: int}, nar, nar_bp, '
                  'interest_received, fees_received, principal_received}}, "borrower": {currency: {currency, '
                  'as_of, due_now, payoff, outstanding, by_month, schedule: [{date, loan, amount}]}}}`',
           handler="portfolio_show"),
    Method("reserve.show", "This node's own loss reserve, per currency (docs/portfolio.md): the balance replayed "
           "from its `reserve.entry` entries, the provisions required now by Fineract's categories over the loans it "
           "holds, the coverage (balance / required, floored basis points) and the shortfall; what was set aside, "
           "topped up, released and drawn, and what write-offs left uncovered. Read only.",
           result='`{"as_of", "share_bp", "release", "provisioning": [{name, min_days, max_days, percent_bp}], '
                  '"reserves": {currency: {balance, required, coverage_bp, shortfall, set_aside, topped_up, released, '
                  'drawn, uncovered, balance_text, required_text, shortfall_text, by_category}}}`',
           handler="reserve_show"),
    Method("reserve.update", "Bring the reserve up to date now (it is after every receipt and write-off this node "
           "signs, and hourly): set aside `[reserve] share` of interest not yet counted, draw on it for each "
           "write-off once, and follow the provisions required. Each movement is a signed `reserve.entry` appended "
           "to this node's chain; a second call with nothing new appends nothing.",
           result='`reserve.show`\'s answer and `"appended": [reserve.entry body]` (docs/protocol.md)',
           handler="reserve_update"),
    Method("autoinvest.set", "Turn auto-invest on or off (written to config.toml's `[autoinvest] enabled` first). "
           "On, the node funds by itself, every 30 s, the requests in its book that its strategy (`[autoinvest]`: "
           "budget, per_loan, max_share, lowest_grade, grade_mix, longest_term) chooses, each by `loan.propose`, "
           "within its policy; turning it on runs once at once. Refusals: `no_strategy` (no budget or per_loan), "
           "`save_failed`.",
           params=(Param("on", "bool", "true: on; false: off", required=True),),
           result=AUTOINVEST_VIEW + ', and `"ran"`: the decisions of the run made when turned on',
           handler="autoinvest_set"),
    Method("autoinvest.status", "Whether auto-invest is on, its strategy, and its last 200 decisions with their "
           "reasons and outcomes.", result=AUTOINVEST_VIEW, handler="autoinvest_status"),
    Method("autoinvest.dry_run", "What auto-invest would do now, decision by decision with its reason "
           "(protocol/lending/autoinvest.py's table), doing nothing: the same book, grades and loans give the same "
           "decisions. Refusals: `no_strategy`.",
           result='`{"enabled", "decisions": [DECISION]}`', handler="autoinvest_dry_run"),
    Method("credit.show", "A peer's credit in this node's eyes, from the loan documents it holds: its grade, the "
           "largest amount and lowest rate it recommends, its debt with every lender, and its history weighted by "
           "how much of this node's trust reaches its lenders (docs/credit.md).",
           params=(Param("peer", "peer", "the peer", required=True),
                   Param("explain", "bool", "list every factor and what it contributed", default=False)),
           result=CREDIT_VIEW, handler="credit_show"),
)
