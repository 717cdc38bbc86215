# ruff: noqa: F821  (cells to paste into the notebook: their names come from the notebook)
# Notebook 06: each section below replaces the exercise cell tagged with its name.

# %% exercise: order-from-rows
def order_from_rows(shared, length, vocab):
    """The sentence's words in order, read off the embedding gradients alone (no optimisation)."""
    pos_rows = shared["position_embedding.weight"][:length]  # row j: dL/dh_j
    tok_rows = shared["token_embedding.weight"]  # row v: the sum of dL/dh_j over the places j of word v
    candidates = torch.nonzero(tok_rows.norm(dim=1)).flatten()  # the words that occur (section 2)
    # for each place j: the candidate whose token row is nearest to position row j (a once-occurring
    # word's row is *equal* to it); cosine similarity, argmax, works as well
    nearest = torch.cdist(pos_rows, tok_rows[candidates]).argmin(dim=1)
    return [vocab.words[int(candidates[k])] for k in nearest]


print(" ".join(order_from_rows(shared, length, vocab)))
# Why a repeated word breaks it: row v of dL/dE is the sum of dL/dh_j over the places holding v, and row j of
# dL/dP is dL/dh_j, so a word that occurs once has exactly its place's row. A repeated word's row is the sum
# of two places' rows and matches neither: there the identity alone cannot place it, and gradient matching
# (section 3) is needed.
