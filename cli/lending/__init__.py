"""The lending extension's commands: ``offer``, ``request``, ``loan``, ``market``, ``schedule``, ``policy``, ``credit``, ``portfolio``, ``reserve`` and ``autoinvest``.
Its declaration (p2pnode/lending/__init__.py) names ``COMMANDS``; the CLI adds them like
any extension's commands."""

from __future__ import annotations

from cli.lending.autoinvest import autoinvest
from cli.lending.credit import credit
from cli.lending.loan import loan
from cli.lending.market import market
from cli.lending.offer import offer, request
from cli.lending.policy import policy
from cli.lending.portfolio import portfolio
from cli.lending.reserve import reserve
from cli.lending.schedule import schedule

COMMANDS = [offer, request, loan, market, schedule, policy, credit, portfolio, reserve, autoinvest]
