"""Lending on the running node: the offer book, countersigning and loans."""
