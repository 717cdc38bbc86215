# ruff: noqa: F821  (cells to paste into notebook 04: their names come from the notebook)
# Notebook 04 (PPP), exercise "perturb less than PPP does". One section per exercise cell.

# %% exercise: attack-scope
def attack_scope(scope, layers=None):
    """SSIM of the bypass on `layers` when the client clips and noises `scope` (σ = 1, C = 1)."""
    torch.manual_seed(SEED)  # PRECODE's sample in the client's step
    shared = perturbed_gradient(pre, x, y, noise_multiplier=1.0, max_grad_norm=1.0, scope=scope, seed=SEED)
    result = precode_bypass(pre, shared, input_shape=x.shape, num_classes=10, iterations=300, truth=(x, y),
                            layers=layers)
    return result.metrics["ssim_mean"]

# %% exercise: scope-table
ssim_encoder_noised = attack_scope(ex.ENCODER, ex.FIRST_LAYER + ex.SECOND_LAYER)
ssim_first_noised = attack_scope(ex.FIRST_LAYER, ex.SECOND_LAYER + ex.ENCODER)
ssim_ppp = attack_scope("ppp")
print(f"{ssim_encoder_noised:.3f} {ssim_first_noised:.3f} {ssim_ppp:.3f}")
# Why: a single digit's first-layer weight gradient has rows proportional to the digit, so a clean first layer hands
# it over (the adaptive attacker succeeds when only the encoder is noised: SSIM about 0.9). With the first layer
# noised, the clean second layer and encoder see only the 128 numbers h1 = tanh(W1 x + b1), too few to pin down
# 784 pixels: a faint trace (about 0.15, below 0.3). PPP leaves no clean deterministic layer (about 0.04).
# Answer of the why question "04.scope": "b". Of "04.why-rise": "b". Prediction "04.trend": "c" (it rises).
