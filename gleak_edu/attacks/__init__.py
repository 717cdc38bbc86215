"""Gradient leakage attacks. Every attack is called the same way::

    result = attack(model, shared, input_shape=(B, C, H, W), num_classes=K, ..., callback=None)

and returns an :class:`AttackResult` (reconstruction, labels, history, timing).
If the callback raises, the attack stops and raises :class:`CallbackError`;
on Ctrl-C it raises :class:`AttackInterrupted` (a KeyboardInterrupt); both
carry the best estimate so far in ``.result``. The model comes back as it went
in (parameters, buffers, train/eval mode).
Text: :func:`text_recovery` reads a sentence off a transformer's gradient and
returns a :class:`TextAttackResult`.
"""

from gleak_edu.attacks._common import AttackInterrupted, AttackResult, AttackState, CallbackError
from gleak_edu.attacks.analytic import analytic_recovery, first_linear_layer
from gleak_edu.attacks.dlg import dlg, idlg, idlg_label
from gleak_edu.attacks.grnn import GRNNGenerator, grnn, total_variation
from gleak_edu.attacks.inverting import inverting_gradients, precode_bypass
from gleak_edu.attacks.text import TextAttackResult, TextState, recovered_token_set, text_metrics, text_recovery

__all__ = [
    "AttackInterrupted",
    "AttackResult",
    "AttackState",
    "CallbackError",
    "GRNNGenerator",
    "TextAttackResult",
    "TextState",
    "analytic_recovery",
    "dlg",
    "first_linear_layer",
    "grnn",
    "idlg",
    "idlg_label",
    "inverting_gradients",
    "precode_bypass",
    "recovered_token_set",
    "text_metrics",
    "text_recovery",
    "total_variation",
]
