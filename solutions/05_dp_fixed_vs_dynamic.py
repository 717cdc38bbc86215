# ruff: noqa: F821  (cells to paste into the notebook: their names come from the notebook)
# Notebook 05: one section per exercise cell (tagged exercise:NAME in the notebook).

# %% exercise: dp_step
def dp_sgd_step(per_example_grads, max_grad_norm, noise_multiplier, z):
    """per_example_grads [B, d], one example per row; z [d] ~ N(0, 1). Returns the noisy mean gradient [d]."""
    norms = per_example_grads.norm(dim=1, keepdim=True)  # [B, 1]: each example's L2 norm
    clipped = per_example_grads * torch.clamp(max_grad_norm / norms, max=1.0)  # no row longer than C
    noise = noise_multiplier * max_grad_norm * z  # std σ·C on every entry of the sum
    return (clipped.sum(dim=0) + noise) / len(per_example_grads)

# %% exercise: budget
multipliers = noise_schedule("cyclic", T, 3.0, 0.5, updates=UPDATES)
eps_cyclic_prv = epsilon(history_from_noise_multipliers(multipliers, q), DELTA, "prv")
noise_multiplier_fixed_prv = get_noise_multiplier(eps_cyclic_prv, T, q, DELTA, accountant="prv")
print(f"ε = {eps_cyclic_prv:.3f} (PRV); fixed σ = {noise_multiplier_fixed_prv:.3f}; "
      f"schedule start {multipliers[0]:.2f}, mean {sum(multipliers) / len(multipliers):.2f}, end {multipliers[-1]:.2f}")
# Why (question 05.why-end, answer "b"): the equivalent fixed noise multiplier lies well below the schedule's
# mean, close to its low end: privacy loss per step grows fast as the noise multiplier σ falls (roughly like
# 1 / σ^2 in RDP, faster below σ = 1), so the few low-noise steps at the end cost more than the many high-noise
# steps at the start save. The accountant never sees the model, and the order of the steps does not matter.
