# ruff: noqa: F821  (a cell to paste into the notebook: its names come from the notebook)
# Notebook 04, exercise "perturb less than PPP does": paste into the exercise cell.
first = ["features.0.weight", "features.0.bias"]
clean_layers = ["features.2.weight", "features.2.bias", "classifier.0.encoder.weight", "classifier.0.encoder.bias"]
torch.manual_seed(0)
s_first = perturbed_gradient(pre, x, y, noise_multiplier=1.0, max_grad_norm=1.0, scope=first, seed=0)
ssim_first_layer_only = precode_bypass(pre, s_first, input_shape=x.shape, num_classes=10, iterations=300,
                                       truth=(x, y)).metrics["ssim_mean"]
ssim_adaptive = precode_bypass(pre, s_first, input_shape=x.shape, num_classes=10, iterations=300, truth=(x, y),
                               layers=clean_layers).metrics["ssim_mean"]
torch.manual_seed(0)
s_ppp = perturbed_gradient(pre, x, y, noise_multiplier=1.0, max_grad_norm=1.0, scope="ppp", seed=0)
ssim_ppp = precode_bypass(pre, s_ppp, input_shape=x.shape, num_classes=10, iterations=300,
                          truth=(x, y)).metrics["ssim_mean"]
print(ssim_first_layer_only, ssim_adaptive, ssim_ppp)
# Why: the plain bypass is dominated by the noisy first layer (most of the matched entries), so it fails
# (SSIM about 0.02); an attacker who drops that layer matches the clean second layer and encoder and gets
# more of the digit back (about 0.16). PPP leaves no clean deterministic layer to fall back on (about 0.04).
# (Noise multiplier σ = 1 and clipping bound C = 1: noise std σ·C = 1 on each perturbed entry.)
