# ruff: noqa: F821  (a cell to paste into the notebook: its names come from the notebook)
# Notebook 07, exercise "rank the defenses": paste into the exercise cell.
# 1.0: the noise level (a noise std of 1 for noise, a noise multiplier of 1 for PPP and the DP defenses)
worst_case = {
    d: max(result.row(d, a, 1.0)["success_rate"] for a in arena.ATTACKS if arena.impossible(a, d) is None)
    for d in arena.DEFENSES
}
safe = {d for d, v in worst_case.items() if v == 0}
costs = {s["defense"]: s["accuracy_cost"] for s in result.defense_summary(1.0)}
cheapest_safe = min(safe, key=costs.get)
print(worst_case, sorted(safe), cheapest_safe)
# Why deploy it or not: the cheapest defenses that stop every attack here (DP dynamic, then noise) cost about
# nothing, and that is the warning sign. Noise without clipping has no epsilon (one example can move an
# unclipped gradient arbitrarily far); DP dynamic's epsilon is many times DP fixed's and, with a
# data-dependent clipping bound, not a formal guarantee. A 0 in this arena is "not with these attacks at
# these budgets". DP fixed costs the most accuracy and is the one whose epsilon bounds what any attack can
# learn.
