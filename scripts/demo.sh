#!/usr/bin/env bash
# The main job for now: a node in a scratch home, a few entries appended, shown, verified,
# exported and imported into a second node; then a local 3-node network over libp2p where
# an entry appended on one node reaches the others. Every step is a plain p2pnode command.
set -euo pipefail

DIR=${DEMO_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/p2pnode-demo.XXXXXX")}
NET="$DIR/testnet"
cleanup() { [ -f "$NET/testnet.json" ] && p2pnode testnet down --dir "$NET" >/dev/null 2>&1; rm -rf "$DIR"; }
trap cleanup EXIT
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

run "A local network: three node processes on 127.0.0.1" testnet up --nodes 3 --dir "$NET"
N1="$NET/node1"; N3="$NET/node3"
run "Node 1 appends an entry while running" --home "$N1" ledger append --kind note --body '{"text": "offer soon: 500.00 EUR"}'
ME=$(p2pnode --home "$N1" id --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["peer_id"])')
step "Node 3 receives it by gossip (sync would bring it too)" "p2pnode --home $N3 ledger show --author $ME"
for _ in $(seq 1 50); do
  p2pnode --home "$N3" ledger show --author "$ME" --json | grep -q "offer soon" && break
  sleep 0.2
done
p2pnode --home "$N3" ledger show --author "$ME"
run "Each node's peers and chains" testnet status --dir "$NET"
run "Stop them all" testnet down --dir "$NET"
printf '\nDemo finished: signed chains, verified export and import, and a network that shares them.\n'
