# ruff: noqa: F821  (cells to paste into notebook 01: their names come from the notebook)
# Notebook 01 (DLG and iDLG). Each section below replaces the exercise cell of the same name.

# %% exercise: matching-loss
def dlg_matching_loss(model, dummy_x, dummy_label, shared):
    """DLG's objective for one dummy image dummy_x [1, 3, 32, 32] and its soft label dummy_label [1, 100]."""
    loss = torch.sum(-dummy_label * torch.log_softmax(model(dummy_x), dim=-1))   # soft-label cross-entropy
    dummy_grads = torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
    shared_grads = [shared[name] for name, _ in model.named_parameters()]       # the same order
    return sum(((g - t) ** 2).sum() for g, t in zip(dummy_grads, shared_grads))
# Squared differences summed entry by entry and layer by layer: no square root (that would be a norm) and no
# mean. The package computes the same number (gleak_edu.attacks._chain.matching_fn) without forming the
# output layer's [100, 768] gradient, which is why the course's dlg is faster than reference_dlg.

# %% exercise: label-rule
def my_idlg_label(model, shared):
    g = shared["classifier.weight"]   # [100 classes, 768 features]: row c is (p_c - [c = y]) * h
    return int(g.sum(dim=1).argmin())
# One sum per class (dim=1 sums over the 768 features of a row); the true class is the only negative one,
# so it is also the smallest. (argmin still picks the most negative row when noise makes several negative.)

# %% exercise: label-noise
candidates = [1e-2, 1e-1, 1.0, 3.0, 10.0, 30.0]
wrong = {noise_std: sum(idlg_label(model, gaussian_noise(shared, noise_std, seed=k)) != y.item() for k in range(20))
         for noise_std in candidates}
answer = next(noise_std for noise_std in candidates if wrong[noise_std] >= 10)
print(wrong, "->", answer)
# Why: the rule compares row sums of the output layer's weight gradient; the true row's sum is the only
# negative one, and its size is set by the softmax error times the (positive) features. Noise of absolute
# std noise_std on each of the row's n = 768 entries moves the row's sum by about noise_std * sqrt(n)
# (about 28 x noise_std), so the label survives until that spread, over the 100 rows, reaches the true row's
# margin: far more noise than the image survives (section 7's table loses the image already at 0.01-0.1).
