# ruff: noqa: F821  (cells to paste into the notebook: their names come from the notebook)
# Notebook 08: one section per exercise cell (tagged exercise:NAME in the notebook).

# %% exercise: as_gradient
def as_gradient(update, lr, local_steps):
    """The update read as one gradient: a dict name -> tensor."""
    return {name: u / (-lr * local_steps) for name, u in update.items()}
# Exact for K = 1 (FedSGD, one batch): the update is -lr times the gradient. For K > 1 it is the mean of K
# gradients taken at K different weights, which the attack then matches as one gradient at the global weights.
