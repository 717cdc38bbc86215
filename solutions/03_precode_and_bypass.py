# ruff: noqa: F821  (cells to paste into the notebook: their names come from the notebook)
# Notebook 03: each section below replaces the exercise cell tagged with its name.

# %% exercise: victim
def victim_k(width):
    """The photo victim with a PRECODE bottleneck of `width` numbers, and the client's shared gradient of (x, y)."""
    net = models.build_model("mlp", (3, 32, 32), 100, seed=SEED, init="pytorch")
    add_precode(net, bottleneck=width, seed=SEED)  # insert the bottleneck, of this width
    torch.manual_seed(SEED)  # fix the client's sample
    shared = fl.client_gradient(net, x, y)  # the client's shared gradient
    return net, shared

# %% exercise: widths
ssim_by_width = {}
for width in ex.WIDTHS:
    net, shared = victim_k(width)
    result = precode_bypass(net, shared, input_shape=x.shape, num_classes=100, iterations=ITERATIONS, truth=(x, y))
    ssim_by_width[width] = result.metrics["ssim_mean"]
print({k: round(v, 3) for k, v in ssim_by_width.items()})
# Why (question "03.why_width", answer b): the bypass matches the layers before the sample, whose gradient rows
# are (a number) x their input at any width; K only changes the encoder's output size and how many random
# numbers the decoder sees. Neither width stops the bypass.
