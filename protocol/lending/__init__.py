"""Lending's rules, sans-IO: money, repayment schedules, offers, loan documents, the
countersigning conversation and loan state. Built on the core of ``protocol/``; nothing in
the core imports this package."""
