# ruff: noqa: F821  (a cell to paste into the notebook: its names come from the notebook)
# Notebook 01, exercise "when does the label rule break?": paste into the exercise cell.
candidates = [1e-2, 1e-1, 1.0, 3.0, 10.0, 30.0]
wrong = {s: sum(idlg_label(model, gaussian_noise(shared, s, seed=k)) != y.item() for k in range(20)) for s in candidates}
answer = next(s for s in candidates if wrong[s] >= 10)
print(wrong, "->", answer)
# Why: the rule compares row sums of the output layer's weight gradient; the true row's sum is the only
# negative one, and its size is set by the softmax error times the (positive) features. Noise of std sigma
# on each of the row's entries moves a sum of n entries by about sigma * sqrt(n), so the label survives
# until that spread reaches the true row's margin: far more noise than the image survives.
