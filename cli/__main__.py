"""``python -m cli``: the same as the ``p2pnode`` console script."""

from cli.main import main

if __name__ == "__main__":
    main()
