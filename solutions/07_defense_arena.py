# ruff: noqa: F821  (cells to paste into the notebook: their names come from the notebook)
# Notebook 07: one section per exercise cell (tagged exercise:NAME in the notebook).

# %% exercise: ranking
LEVEL = 1.0  # the noise level of the ranking: std 1 for noise, noise multiplier 1 for PPP and the DP defenses
res = full.result
worst_case = {}
for d in arena.DEFENSES:
    worst_case[d] = max(res.row(d, a, LEVEL)["success_rate"] for a in arena.ATTACKS if arena.impossible(a, d) is None)
safe = {d for d, v in worst_case.items() if v == 0}
costs = {s["defense"]: s["accuracy_cost"] for s in res.defense_summary(LEVEL)}
cheapest_safe = min(safe, key=costs.get)
print(worst_case, sorted(safe), cheapest_safe)
# Would you deploy it? The cheapest defense that stops every attack here (DP dynamic) costs about nothing, and
# that is the warning sign: its epsilon is many times DP fixed's and, with a data-dependent clipping bound, not a
# formal guarantee. Noise without clipping (no epsilon at all: one example can move an unclipped gradient
# arbitrarily far) misses `safe` only through GRNN's single generated 3. A 0 in this arena is "not with these
# attacks at these budgets, on these 30 digits" (a true rate up to 11 % fits it). DP fixed costs the most accuracy
# and is the one whose epsilon bounds what any attack can learn.
