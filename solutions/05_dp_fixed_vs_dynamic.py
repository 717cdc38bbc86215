# ruff: noqa: F821  (a cell to paste into the notebook: its names come from the notebook)
# Notebook 05, exercise "spend the same budget differently": paste into the exercise cell.
multipliers = noise_schedule("cyclic", T, 3.0, 0.5, updates=UPDATES)
eps_cyclic_prv = epsilon(history_from_noise_multipliers(multipliers, q), DELTA, "prv")
noise_multiplier_fixed_prv = get_noise_multiplier(eps_cyclic_prv, T, q, DELTA, accountant="prv")
print(eps_cyclic_prv, noise_multiplier_fixed_prv, sum(multipliers) / len(multipliers), multipliers[-1])
# Why: the equivalent fixed noise multiplier lies well below the schedule's mean, close to its low end:
# privacy loss per step grows fast as the noise multiplier σ falls (roughly like 1 / σ^2 in RDP), so the few
# low-noise steps at the end cost more than the many high-noise steps at the start save.
