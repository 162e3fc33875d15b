"""A simulation of credit with no network: honest borrowers with real histories, a ring of
100 Sybil identities repaying each other, one attacker with 1, 2 and 5 real edges to
honest keys, and backdated histories, graded by one honest viewer.

The numbers are printed (``pytest -s``, or ``python tests/protocol/test_credit_sim.py``)
and recorded in docs/credit.md; the tests assert the bounds, not the numbers."""

from __future__ import annotations

import random
import sys
from collections import Counter
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from creditworld import World, key  # noqa: E402
from protocol.lending.credit import DEFAULT_PARAMS, NONE  # noqa: E402
from protocol.lending.trust import ALPHA_PM, FULL_MASS, bound  # noqa: E402

TODAY = date(2026, 6, 1)
VIEWER = key(0)
HONEST = [key(n) for n in range(1, 41)]
SYBILS = 100


def honest_world(seed: int = 7) -> World:
    """The viewer and 40 honest keys, two years of loans among them: mostly repaid on time,
    some late, a few still open, two defaults."""
    rng = random.Random(seed)
    w = World(TODAY)
    everyone = [VIEWER] + HONEST
    for n in range(160):
        lender = everyone[rng.randrange(0, 12)]  # the first dozen lend most
        borrower = rng.choice([k for k in HONEST if k != lender])
        start = TODAY - timedelta(days=rng.randrange(100, 730))
        r = rng.random()
        pay = "on_time" if r < 0.8 else "late" if r < 0.93 else "open" if r < 0.98 else "default"
        w.lend(lender, borrower, start=start, pay=pay, late_days=rng.choice([3, 10, 35, 70]), term="3m")
    return w


def attach_attacker(w: World, edges: int, identities: int = SYBILS, tag: int = 0) -> tuple[bytes, list[bytes]]:
    """An attacker key that borrowed from ``edges`` honest keys and repaid them (real
    loans), and ``identities`` fresh keys of its own in a ring: it lends to each, and they
    lend to and repay each other, three rounds, with contracts dated years back."""
    attacker = key(10_000 + tag)
    sybils = [key(20_000 + tag * 1000 + i) for i in range(identities)]
    for i in range(edges):
        w.lend(HONEST[i], attacker, start=TODAY - timedelta(days=200 + 10 * i))
    for i, s in enumerate(sybils):
        w.lend(attacker, s, start=TODAY - timedelta(days=1000 + i), seen=TODAY - timedelta(days=30))
    for rnd in range(3):
        for i, s in enumerate(sybils):
            w.lend(s, sybils[(i + 1) % len(sybils)], start=TODAY - timedelta(days=1500 - 200 * rnd),
                   seen=TODAY - timedelta(days=30))
    return attacker, sybils


def gain(w: World, region: list[bytes]) -> dict:
    """What the identities of ``region`` got in the viewer's eyes together: trusted repaid
    loans, grades better than none, and limit above a newcomer's."""
    profiles = [w.profile(VIEWER, k) for k in region]
    newcomer = w.profile(VIEWER, key(99_999)).max_amount["EUR"]
    full = w.masses(VIEWER)
    g = w.graph()
    return {
        "graded": sum(p.grade != NONE for p in profiles),
        "grades": dict(sorted(Counter(p.grade for p in profiles).items())),
        "trusted_repaid": sum(p.trusted_repaid_pm for p in profiles) / 1000,
        "extra_limit_eur": sum(max(0, p.max_amount.get("EUR", 0) - newcomer) for p in profiles) / 100,
        "mass": sum(full.get(k, 0) for k in region),
        "mass_bound": bound(VIEWER, set(region), g.neighbours, full),
        # every unit that reaches a key of the region arrived there once (trust.py, rules 4 and 5)
        "weight_bound": bound(VIEWER, set(region), g.neighbours, full) * 1000 // ALPHA_PM / FULL_MASS,
    }


@lru_cache(maxsize=None)
def run() -> dict:
    out: dict = {}
    w = honest_world()
    out["honest_grades"] = dict(sorted(Counter(w.profile(VIEWER, k).grade for k in HONEST).items()))

    ring_world = honest_world()
    ring = [key(30_000 + i) for i in range(SYBILS)]
    for rnd in range(5):
        for i, s in enumerate(ring):
            ring_world.lend(s, ring[(i + 1) % SYBILS], start=TODAY - timedelta(days=1800 - 300 * rnd), seen=TODAY)
    out["ring"] = gain(ring_world, ring)

    out["attacker"] = {}
    for edges in (1, 2, 5):
        aw = honest_world()
        attacker, sybils = attach_attacker(aw, edges)
        small = honest_world()
        _, few = attach_attacker(small, edges, identities=10, tag=1)
        out["attacker"][edges] = {"attacker_grade": aw.profile(VIEWER, attacker).grade,
                                  "sybils_100": gain(aw, sybils), "sybils_10": gain(small, few)}

    bw = honest_world()
    fresh = key(40_000)
    puppet = key(40_001)
    for n in range(10):
        bw.lend(puppet, fresh, start=TODAY - timedelta(days=5 * 365 - 60 * n), seen=TODAY)
    p = bw.profile(VIEWER, fresh)
    out["backdated_with_puppet"] = {"grade": p.grade, "verified_age_days": p.verified_age_days}
    lender = HONEST[0]
    bw.lend(lender, fresh, start=TODAY - timedelta(days=4 * 365), seen=TODAY)
    p = bw.profile(VIEWER, fresh)
    out["backdated_with_trusted_lender"] = {
        "grade": p.grade, "verified_age_days": p.verified_age_days,
        "lender_known_days": (TODAY - bw.first_seen[lender]).days}
    return out


def test_honest_borrowers_get_grades():
    grades = run()["honest_grades"]
    assert sum(n for g, n in grades.items() if g not in (NONE, "G")) >= 20


def test_a_ring_of_100_sybils_gains_nothing():
    ring = run()["ring"]
    assert ring["graded"] == 0 and ring["trusted_repaid"] == 0 and ring["extra_limit_eur"] == 0 and ring["mass"] == 0


def test_an_attackers_gain_is_bounded_by_its_real_edges_not_its_identities():
    for edges, r in run()["attacker"].items():
        for name in ("sybils_100", "sybils_10"):
            g = r[name]
            assert g["mass"] <= g["mass_bound"]
            assert g["trusted_repaid"] <= g["weight_bound"]
            # a graded identity holds min_trusted_pm of trusted weight: their number is bounded too
            assert g["graded"] <= g["weight_bound"] * 1000 / DEFAULT_PARAMS.min_trusted_pm
        # ten times the identities behind the same edges: far from ten times the weight
        assert r["sybils_100"]["trusted_repaid"] <= 5 * r["sybils_10"]["trusted_repaid"]


def test_backdated_histories_do_not_look_old():
    out = run()
    assert out["backdated_with_puppet"] == {"grade": NONE, "verified_age_days": 0}
    b = out["backdated_with_trusted_lender"]
    assert b["verified_age_days"] <= b["lender_known_days"] < 4 * 365


def test_print_the_numbers():
    print()
    print(report())


def report() -> str:
    out = run()
    lines = [f"honest borrowers (40), grades in the viewer's eyes: {out['honest_grades']}",
             f"ring of {SYBILS} sybils: {out['ring']}"]
    for edges, r in out["attacker"].items():
        lines.append(f"attacker with {edges} real edge(s): its own grade {r['attacker_grade']}")
        for name in ("sybils_100", "sybils_10"):
            g = r[name]
            lines.append(f"  {name}: graded {g['graded']} {g['grades']}, trusted repaid loans {g['trusted_repaid']:.3f} "
                         f"(bound {g['weight_bound']:.3f}), limit above a newcomer's {g['extra_limit_eur']:.2f} EUR, "
                         f"mass {g['mass']} <= {g['mass_bound']}")
    lines.append(f"fresh key, 10 contracts backdated 5 years with a puppet: {out['backdated_with_puppet']}")
    lines.append(f"... and one more backdated 4 years with a trusted lender: {out['backdated_with_trusted_lender']}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
