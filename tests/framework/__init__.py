"""The one harness of the tests and the benchmarks (as Bitcoin Core's ``test_framework``):
real nodes, acted on through their interfaces, waited on until they agree, every wait
bounded in count and time, every process started here ended by its pid.

- ``wait``: ``wait_until`` (plain code) and ``wait_for`` (trio code), the only waits;
- ``console``: the console script as a subprocess (``run_cli``, ``COMMAND``, ``ROOT``);
- ``inprocess``: nodes in this process, under a trio nursery (``make_node``, ``start``,
  ``start_line``, ``sync_all``, ``stop_all``, ``heads_of``, ``lending``);
- ``process``: ``NodeProcess``, one node as its own process, known by its pid; ``reap_later``,
  a teardown's wait for nodes to exit, in the background (``reap_all`` at the session's end);
- ``network``: ``Network``, node processes under one directory, made by
  `p2pnode testnet up` or one by one, with ``sync_all``;
- ``netns``: ``Lab``, a private network of namespaces where node processes run on
  addresses of their own and can be cut off from each other for real (``lab_or_skip``);
- ``limits``: this machine's own limits that benchmark figures are read against.
- ``chains``: ``signed_chain``, a chain of signed entries made in memory; ``store_chain``, such a
  chain put into a stopped node's store.

The tests import it by adding ``tests/`` to ``sys.path`` (tests/conftest.py); the
scripts under ``bench/`` do the same.
"""
