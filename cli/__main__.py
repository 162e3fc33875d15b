"""``python -m cli``: the same as the ``p2pnode`` console script (cli/entry.py)."""

from cli.entry import main

if __name__ == "__main__":
    main()
