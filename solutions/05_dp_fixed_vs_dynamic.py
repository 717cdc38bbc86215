# ruff: noqa: F821  (a cell to paste into the notebook: its names come from the notebook)
# Notebook 05, exercise "spend the same budget differently": paste into the exercise cell.
sig = noise_schedule("cyclic", T, 3.0, 0.5, updates=UPDATES)
eps_cyclic_prv = epsilon(history_from_sigmas(sig, q), DELTA, "prv")
sigma_fixed_prv = match_fixed_sigma(eps_cyclic_prv, T, q, DELTA, "prv")
print(eps_cyclic_prv, sigma_fixed_prv, sum(sig) / len(sig), sig[-1])
# Why: the equivalent fixed sigma lies well below the schedule's mean, close to its low end: privacy loss
# per step grows fast as sigma falls (roughly like 1 / sigma^2 in RDP), so the few low-noise steps at the
# end cost more than the many high-noise steps at the start save.
