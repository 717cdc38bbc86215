# ruff: noqa: F821  (a cell to paste into the notebook: its names come from the notebook)
# Notebook 03, exercise "does a wider bottleneck help the defense?": paste into the exercise cell.
ssims = {}
for k in (16, 1024):
    net = models.build_model("mlp", (3, 32, 32), 100, seed=0, init="pytorch")
    add_precode(net, bottleneck=k, seed=0)
    torch.manual_seed(0)
    s = fl.client_gradient(net, x, y)
    ssims[k] = precode_bypass(net, s, input_shape=x.shape, num_classes=100, iterations=300, truth=x).metrics["ssim_mean"]
ssim_k16, ssim_k1024 = ssims[16], ssims[1024]
print(ssims)
# Why: the bypass matches the layers before the bottleneck and its encoder; the bottleneck's width changes
# only the encoder's output size, not the first layers' gradients, which carry the image. Neither K helps.
