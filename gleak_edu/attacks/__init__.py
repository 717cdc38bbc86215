"""Gradient leakage attacks. Every attack is called the same way::

    result = attack(model, shared, input_shape=(B, C, H, W), num_classes=K,
                    iterations=..., seed=0, truth=(images, labels), callback=None,
                    options=AttackOptions(restarts=4))

and returns an :class:`AttackResult` (reconstruction, labels, loss, history,
timing; a field the attack does not produce is None, never filled from the
truth). :data:`ATTACKS` lists them all (:class:`AttackSpec`: what each needs,
recovers and costs by default). The callback receives an :class:`AttackState`.
If the callback raises, the attack stops and raises :class:`CallbackError`;
on Ctrl-C it raises :class:`AttackInterrupted` (a KeyboardInterrupt); both
carry the best estimate so far in ``.result``. The model comes back as it went
in (parameters, buffers, train/eval mode).

A FedAvg update (weights after K local steps minus the global weights) is
attacked by :func:`fedavg_unrolled`, which repeats the client's K steps on
dummy images. Read :func:`reference_dlg` first: DLG in fifteen plain lines. Text:
:func:`text_recovery` reads a sentence off a transformer's gradient and
returns a :class:`TextAttackResult` (an AttackResult with the words).
"""

from gleak_edu.attacks._common import AttackInterrupted, AttackOptions, AttackResult, AttackState, CallbackError
from gleak_edu.attacks.analytic import analytic_recovery, first_linear_layer
from gleak_edu.attacks.dlg import dlg, idlg, idlg_label
from gleak_edu.attacks.fedavg import fedavg_label, fedavg_unrolled, unrolled_update
from gleak_edu.attacks.grnn import GRNNGenerator, grnn, total_variation
from gleak_edu.attacks.inverting import inverting_gradients, precode_bypass
from gleak_edu.attacks.reference import reference_dlg
from gleak_edu.attacks.registry import ATTACKS, IMAGE_ATTACKS, AttackSpec, attack_spec
from gleak_edu.attacks.text import TextAttackResult, TextState, recovered_token_set, text_metrics, text_recovery

__all__ = [
    "ATTACKS",
    "IMAGE_ATTACKS",
    "AttackInterrupted",
    "AttackOptions",
    "AttackResult",
    "AttackSpec",
    "AttackState",
    "CallbackError",
    "GRNNGenerator",
    "TextAttackResult",
    "TextState",
    "analytic_recovery",
    "attack_spec",
    "dlg",
    "fedavg_label",
    "fedavg_unrolled",
    "first_linear_layer",
    "grnn",
    "idlg",
    "idlg_label",
    "inverting_gradients",
    "precode_bypass",
    "recovered_token_set",
    "reference_dlg",
    "text_metrics",
    "text_recovery",
    "total_variation",
    "unrolled_update",
]
