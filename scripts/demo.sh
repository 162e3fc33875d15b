#!/usr/bin/env bash
# The main job for now: a node in a scratch home, a few entries appended, shown, verified,
# exported and imported into a second node. Every step is a plain p2pnode command.
set -euo pipefail

DIR=${DEMO_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/p2pnode-demo.XXXXXX")}
trap 'rm -rf "$DIR"' EXIT
ALICE="$DIR/alice"; BOB="$DIR/bob"

if [ -t 1 ]; then B=$'\033[1m'; N=$'\033[0m'; else B=; N=; fi
step() { printf '\n%s== %s%s\n$ %s\n' "$B" "$1" "$N" "$2"; }
run()  { step "$1" "p2pnode ${*:2}"; p2pnode "${@:2}"; }

run "Alice creates her node" --home "$ALICE" init --name alice
run "Her identity: a libp2p peer ID" --home "$ALICE" id
run "She appends a note to her signed chain" --home "$ALICE" ledger append --kind note --body '{"text": "ready to lend EUR"}'
run "Bodies are canonical MessagePack: integers exact, no floats" --home "$ALICE" ledger append --kind note --body '{"text": "limit 150000 minor units"}'
step "A float is refused, with the reason" "p2pnode --home $ALICE ledger append --kind note --body '{\"text\": 1.5}'"
p2pnode --home "$ALICE" ledger append --kind note --body '{"text": 1.5}' || echo "(refused, exit $?)"
run "Her chain" --home "$ALICE" ledger show
run "Every signature, link and index re-checked" --home "$ALICE" ledger verify
run "Bob creates his node" --home "$BOB" init --name bob
step "Alice exports her chain; Bob imports it, verifying everything" "p2pnode --home $ALICE ledger export -o alice.jsonl && p2pnode --home $BOB ledger import alice.jsonl"
p2pnode --home "$ALICE" ledger export -o "$DIR/alice.jsonl"
p2pnode --home "$BOB" ledger import "$DIR/alice.jsonl"
run "Bob now holds both chains" --home "$BOB" ledger heads
run "And verifies them" --home "$BOB" ledger verify
printf '\nDemo finished: two nodes, signed chains, verified export and import.\n'
