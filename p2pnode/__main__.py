"""``python -m p2pnode``: run a node in the foreground (p2pnode/daemon.py)."""

from p2pnode.daemon import main

if __name__ == "__main__":
    main()
