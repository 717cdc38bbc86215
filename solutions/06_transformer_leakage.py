# ruff: noqa: F821  (a cell to paste into the notebook: its names come from the notebook)
# Notebook 06, exercise "the order without any optimisation": paste into the exercise cell.
pos = shared["position_embedding.weight"][:length]
cand = torch.nonzero(shared["token_embedding.weight"].norm(dim=1)).flatten()
dist = torch.cdist(pos, shared["token_embedding.weight"][cand])
order_from_rows = [vocab.words[int(cand[k])] for k in dist.argmin(1)]
print(" ".join(order_from_rows))
# Why: row v of dL/dE is the sum of dL/dh_j over the positions holding v, and row j of dL/dP is dL/dh_j, so a
# word that occurs once has exactly its position's row. A repeated word's row is a sum of two positions' rows
# and matches neither: there the identity alone cannot place it, and gradient matching is needed.
