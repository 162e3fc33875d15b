#!/usr/bin/env bash
# The main job: a local 3-node network on 127.0.0.1 (three separate node processes) and
# a loan from offer to final repayment. Node 1 lends, node 2 borrows, node 3 takes no
# part and, from the chains alone, shows the same loan history. Every step is a plain
# p2pnode command, printed before it runs.
#
# The loan records a past one: its schedule starts 130 days ago, so that each repayment
# (one of them 10 days late, with the contract's late fee) is dated on its real day and
# the state on every node is computed for today.
set -euo pipefail

DIR=${DEMO_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/p2pnode-demo.XXXXXX")}
NET="$DIR/testnet"
cleanup() { [ -f "$NET/testnet.json" ] && p2pnode testnet down --dir "$NET" >/dev/null 2>&1; rm -rf "$DIR"; }
trap cleanup EXIT

if [ -t 1 ]; then B=$'\033[1m'; N=$'\033[0m'; else B=; N=; fi
step() { printf '\n%s== %s%s\n$ %s\n' "$B" "$1" "$N" "$2"; }
run()  { step "$1" "p2pnode ${*:2}"; p2pnode "${@:2}"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)" "${@:2}"; }
wait_for() {  # wait_for WHAT COMMAND...: retry COMMAND (quietly) for up to 20 s
  local what=$1; shift
  for _ in $(seq 1 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "timed out waiting for $what" >&2; return 1
}

run "Three node processes on 127.0.0.1 form a network" testnet up --nodes 3 --dir "$NET"
L="$NET/node1"; BR="$NET/node2"; W="$NET/node3"
LENDER=$(p2pnode --home "$L" id --json | json 'd["peer_id"]')
BORROWER=$(p2pnode --home "$BR" id --json | json 'd["peer_id"]')

step "Node 1 (the lender) offers 1200.00 EUR at 12% over 3 months, grace 5 days, late fee 15.00" \
     "p2pnode --home $L offer create --amount 1200.00 --currency EUR --rate 12% --term 3m --kind annuity --grace-days 5 --late-fee 15.00"
OFFER=$(p2pnode --home "$L" offer create --amount 1200.00 --currency EUR --rate 12% --term 3m --kind annuity \
        --grace-days 5 --late-fee 15.00 --default-days 60 --json | json 'd["id"]')
echo "offer $OFFER, signed and gossiped on p2plend/1/offers"

wait_for "the offer to reach node 2" sh -c "p2pnode --home '$BR' offer show $OFFER"
run "Node 2 (the borrower) sees it in its offer book" --home "$BR" offer list
run "Before agreeing, the borrower looks at the schedule (no node needed)" \
    schedule --principal 1200.00 --currency EUR --rate 12% --term 3m --kind annuity

START=$(python3 -c 'import datetime; print(datetime.date.today() - datetime.timedelta(days=130))')
step "The borrower takes the offer: a contract committing both chain heads, signed, sent over /p2plend/agree/1.0.0; the lender's node checks and countersigns" \
     "p2pnode --home $BR loan propose $OFFER --start $START"
LOAN=$(p2pnode --home "$BR" loan propose "$OFFER" --start "$START" --json | json 'd["loan"] if d["state"] == "agreed" else sys.exit("not agreed: " + str(d))')
echo "agreed: loan $LOAN, both parties' chains now hold a loan.agreement entry with both signatures"

run "The lender declares the principal sent" --home "$L" loan disburse "$LOAN" --date "$START"
wait_for "the declaration to reach node 2" sh -c "p2pnode --home '$BR' loan show $LOAN --json | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)[\"declared\"] else 1)'"
run "The borrower confirms receipt: receipt #1, signed by the borrower" --home "$BR" loan confirm "$LOAN"

ROWS=$(p2pnode --home "$BR" loan show "$LOAN" --json | json '" ".join(r["due"] + "," + str(r["payment"]) for r in d["rows"])')
i=0
for row in $ROWS; do
  i=$((i + 1)); due=${row%,*}; minor=${row#*,}
  if [ $i -eq 2 ]; then  # the second installment is paid 10 days late, with the 15.00 fee
    day=$(python3 -c "import datetime; print(datetime.date.fromisoformat('$due') + datetime.timedelta(days=10))")
    minor=$((minor + 1500)); note=" (10 days late: installment + 15.00 late fee)"
  else
    day=$due; note=" (on time)"
  fi
  amount=$(python3 -c "print(f'{$minor // 100}.{$minor % 100:02d}')")
  run "Installment $i due $due: the borrower pays $amount EUR on $day$note" \
      --home "$BR" loan repay "$LOAN" --amount "$amount" --date "$day"
  run "The lender signs the receipt for it" --home "$L" loan receipt "$LOAN" --amount "$amount" --date "$day"
done

run "The lender's view: every installment paid, the fee charged and paid, the loan repaid" --home "$L" loan show "$LOAN"
wait_for "node 3 to hold every receipt" sh -c "p2pnode --home '$W' loan show $LOAN --json | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)[\"state\"] == \"repaid\" else 1)'"
run "Node 3 took no part; from the two chains alone it shows the same history" --home "$W" loan show "$LOAN"
step "All three nodes compute the same state for today" "p2pnode --home NODE loan show $LOAN --json (state, fees, principal paid)"
for h in "$L" "$BR" "$W"; do
  p2pnode --home "$h" loan show "$LOAN" --json | json '"  " + sys.argv[1] + ": " + d["state"] + ", principal paid " + str(d["principal_paid"]) + ", interest paid " + str(d["interest_paid"]) + ", fees paid " + str(d["fees_paid"]) + ", receipts counted " + str(len(d["counted"]))' "$(basename "$h")"
done
run "The lender grades the borrower from this history: credit from verifiable history, each factor explained" \
    --home "$L" credit "$BORROWER" --explain
step "The lender's policy (the default preset) refuses, before anything is signed, the loan the platforms failed on" \
     "p2pnode --home $L offer create --amount 9999999999 --currency CNY --rate 1000% --term 12m"
if p2pnode --home "$L" offer create --amount 9999999999 --currency CNY --rate 1000% --term 12m; then
  echo "the policy let it through" >&2; exit 1
fi
run "Every chain on node 3 re-verified: signatures, links, index" --home "$W" ledger verify
run "Stop the network" testnet down --dir "$NET"
printf '\nDemo finished: an offer taken, a contract countersigned, the principal disbursed, three installments repaid (one late, with its fee), a node that took no part agreeing on the loan, the borrower graded from it, and a usurious loan refused by policy.\n'
