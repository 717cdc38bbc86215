# ruff: noqa: F821  (a cell to paste into the notebook: its names come from the notebook)
# Notebook 01, exercise "when does the label rule break?": paste into the exercise cell.
candidates = [1e-2, 1e-1, 1.0, 3.0, 10.0, 30.0]
wrong = {noise_std: sum(idlg_label(model, gaussian_noise(shared, noise_std, seed=k)) != y.item() for k in range(20))
         for noise_std in candidates}
answer = next(noise_std for noise_std in candidates if wrong[noise_std] >= 10)
print(wrong, "->", answer)
# Why: the rule compares row sums of the output layer's weight gradient; the true row's sum is the only
# negative one, and its size is set by the softmax error times the (positive) features. Noise of absolute
# std noise_std on each of the row's n entries moves the row's sum by about noise_std * sqrt(n), so the label
# survives until that spread reaches the true row's margin: far more noise than the image survives.
