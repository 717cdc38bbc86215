"""Exercises, questions and checks of notebook 08 (the leak inside Flower), and the measured results it reads.

The notebook imports this module as ``ex``; the core helpers are re-exported.

**The measured results.** The notebook runs one small federation live; its
tables come from real Flower federations too many to run in three minutes,
shipped as ``notebooks/results/flower_fedavg.json`` (:data:`RESULTS_FILE`)
and made by one command (:data:`RESULTS_COMMAND`; about 25 minutes on a
2-core CPU: Ray's start-up, once per federation, and the attacks)::

    python -m gleak_edu.exercises.nb08 notebooks/results/flower_fedavg.json

Three experiments, each on updates a :class:`gleak_edu.flower.CuriousServer`
recorded inside Flower's simulation engine:

* ``fedavg``: local steps K in :data:`KB_STEPS` x local batch B in
  :data:`KB_BATCHES`, one federation each (10 clients, one round): the simple
  attack (Inverting Gradients on ``update / (-lr K)``) and the unrolled one
  (:func:`gleak_edu.attacks.fedavg_unrolled`) on every update.
* ``dp``: one federation per DP mode (:data:`DP_RUNS`: none, Flower's
  server-side wrapper, Flower's LocalDpMod, Opacus DP-SGD on the client),
  10 clients x 20 rounds: accuracy after every round, epsilon, and the
  unrolled attack on the updates of the first and the last round.
* ``secagg``: what secure aggregation leaves the server, the *sum* of N
  clients' updates, for N in :data:`SECAGG_CLIENTS`, attacked as one batch of N
  digits (the sum of N one-digit FedSGD updates is N times the mean gradient
  of those N digits). The sums are computed from 40 recorded FedSGD updates
  (what SecAgg+ would hand the server), not by running Flower's SecAgg+ protocol.

An attack *succeeds* on a digit at SSIM >= 0.6 (:data:`gleak_edu.metrics.SUCCESS_SSIM`,
the course's rule); every rate comes with its 95 % Wilson interval.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from gleak_edu import __version__, flower, metrics
from gleak_edu.exercises import Feedback, Question, ask, check_function, course_checks, predict, register, reveal
from gleak_edu.fl import update_as_gradient

__all__ = [
    "DP_RUNS",
    "FORMAT",
    "KB_BATCHES",
    "KB_STEPS",
    "RESULTS_COMMAND",
    "RESULTS_FILE",
    "SECAGG_CLIENTS",
    "FlowerResults",
    "ask",
    "check_as_gradient",
    "observed_dp",
    "course_checks",
    "dp_settings",
    "fedavg_settings",
    "load_results",
    "predict",
    "record_results",
    "reveal",
    "secagg_settings",
]

FORMAT = 1
RESULTS_FILE = "notebooks/results/flower_fedavg.json"  # relative to the repository root
RESULTS_COMMAND = "python -m gleak_edu.exercises.nb08 notebooks/results/flower_fedavg.json"
KB_STEPS = (1, 2, 5, 10)
KB_BATCHES = (1, 4)
SECAGG_CLIENTS = (1, 2, 4, 8)
ITERATIONS = 300  # Adam steps of every attack here (Inverting Gradients' recipe, as the arena)
#: The DP federations: (name, FederationSettings fields).
DP_RUNS: tuple[tuple[str, dict], ...] = (
    ("no DP", {"dp": "none"}),
    ("server-side DP (Flower)", {"dp": "server", "clipping_norm": 1.0, "noise_multiplier": 0.1}),
    ("LocalDpMod (Flower)", {"dp": "local", "clipping_norm": 1.0, "epsilon": 0.5}),
    ("DP-SGD on the client (Opacus)", {"dp": "dpsgd", "clipping_norm": 1.0, "noise_multiplier": 1.0}),
)
_REPO = Path(__file__).resolve().parents[2]


def fedavg_settings(local_steps: int, local_batch: int) -> flower.FederationSettings:
    """The K x B experiment's federation: 10 clients with 40 digits each, one round, lr 0.1."""
    return flower.FederationSettings(clients=10, rounds=1, examples=40, local_steps=local_steps,
                                     local_batch=local_batch, lr=0.1)


def dp_settings(**dp) -> flower.FederationSettings:
    """The DP experiment's federation: 10 clients with 50 digits, 20 rounds of K = 5 one-digit steps, lr 0.1."""
    return flower.FederationSettings(clients=10, rounds=20, examples=50, local_steps=5, local_batch=1, lr=0.1, **dp)


def secagg_settings() -> flower.FederationSettings:
    """The secure-aggregation experiment's federation: 40 FedSGD clients (one digit, one step), one round."""
    return flower.FederationSettings(clients=40, rounds=1, examples=4, local_steps=1, local_batch=1, lr=0.1)


def _scores(result) -> dict:
    return {"ssim": [round(float(v), 4) for v in result.metrics["ssim"]],
            "psnr": [round(float(v), 2) for v in result.metrics["psnr"]]}


def _by_partition(observations):
    return sorted(observations, key=lambda o: (o.round, o.partition_id))


def _record_fedavg(say) -> list[dict]:
    cells = []
    for k in KB_STEPS:
        for b in KB_BATCHES:
            s = fedavg_settings(k, b)
            start = time.perf_counter()
            fed = flower.run_federation(s)
            simple, unrolled = [], []
            for obs in _by_partition(fed.observations):
                simple.append(_scores(flower.attack_observation(s, obs, attack="simple", iterations=ITERATIONS)))
                unrolled.append(_scores(flower.attack_observation(s, obs, attack="unrolled", iterations=ITERATIONS)))
            cells.append({"local_steps": k, "local_batch": b, "updates": len(fed.observations),
                          "simple": simple, "unrolled": unrolled, "seconds": round(time.perf_counter() - start, 1)})
            say(f"  K={k} B={b}: mean SSIM simple {_mean(simple):.2f}, unrolled {_mean(unrolled):.2f} "
                f"({time.perf_counter() - start:.0f} s)")
    return cells


def _mean(scores: list[dict]) -> float:
    values = [v for s in scores for v in s["ssim"]]
    return sum(values) / len(values)


def _record_dp(say) -> list[dict]:
    runs = []
    for name, fields in DP_RUNS:
        s = dp_settings(**fields)
        start = time.perf_counter()
        fed = flower.run_federation(s)
        attacked = [o for o in _by_partition(fed.observations) if o.round in (1, s.rounds)]
        scores = [_scores(flower.attack_observation(s, obs, attack="unrolled", iterations=ITERATIONS)) for obs in attacked]
        runs.append({"name": name, "settings": s.as_run_config(), "accuracy": [round(a, 4) for a in fed.accuracy],
                     "epsilon": fed.epsilon, "epsilon_note": fed.epsilon_note, "rounds_attacked": [1, s.rounds],
                     "attacks": scores, "seconds": round(time.perf_counter() - start, 1)})
        say(f"  {name}: accuracy {fed.accuracy[-1]:.3f}, epsilon {fed.epsilon}, mean SSIM {_mean(scores):.2f} "
            f"({time.perf_counter() - start:.0f} s)")
    return runs


def secagg_sums(settings: flower.FederationSettings, observations, clients: int) -> list[tuple]:
    """Group recorded FedSGD updates (round 1, by partition id) into sums of ``clients`` updates.

    Returns:
        ``(summed update, global state, truth images [N, 1, 28, 28], labels [N])`` per group of N clients,
        as many groups as fit (at most 10).
    """
    obs = [o for o in _by_partition(observations) if o.round == 1]
    groups = []
    for g in range(min(10, len(obs) // clients)):
        part = obs[g * clients:(g + 1) * clients]
        total = {n: sum(o.update[n] for o in part) for n in part[0].update}
        truths = [flower.observed_examples(settings, o) for o in part]
        groups.append((total, part[0].global_state, torch.cat([t[0] for t in truths]), torch.cat([t[1] for t in truths])))
    return groups


def _record_secagg(say) -> list[dict]:
    s = secagg_settings()
    start = time.perf_counter()
    fed = flower.run_federation(s)
    rows = []
    for n in SECAGG_CLIENTS:
        scores = [_scores(flower.attack_sum(s, *group, iterations=ITERATIONS)) for group in secagg_sums(s, fed.observations, n)]
        rows.append({"clients": n, "groups": scores})
        say(f"  N={n}: mean SSIM {_mean(scores):.2f}")
    return [{"seconds": round(time.perf_counter() - start, 1), "rows": rows}]


def record_results(*, progress: bool = True) -> dict:
    """Run the three experiments (Flower federations, then the curious server's attacks); a JSON-ready record."""
    import flwr

    say = print if progress else (lambda *a, **k: None)
    start = time.perf_counter()
    torch.set_num_threads(1)
    say("K x B: simple vs unrolled attack ...")
    fedavg = _record_fedavg(say)
    say("DP modes ...")
    dp = _record_dp(say)
    say("secure aggregation ...")
    secagg = _record_secagg(say)
    return {
        "format": FORMAT,
        "command": RESULTS_COMMAND,
        "made": {"seconds": round(time.perf_counter() - start, 1)},
        "versions": {"gleak_edu": __version__, "flwr": flwr.__version__, "torch": torch.__version__.split("+")[0]},
        "iterations": ITERATIONS,
        "success_ssim": metrics.SUCCESS_SSIM,
        "fedavg": {"settings": fedavg_settings(1, 1).as_run_config(), "cells": fedavg},
        "dp": {"settings": dp_settings().as_run_config(), "runs": dp},
        "secagg": {"settings": secagg_settings().as_run_config(), **secagg[0]},
    }


def write_results(path: str | Path = RESULTS_FILE, **kwargs) -> Path:
    """Record (:func:`record_results`) and write the JSON to ``path``; returns the path."""
    path = Path(path)
    record = record_results(**kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=None, separators=(",", ":")) + "\n")
    return path


# --------------------------------------------------------------------------------------------------
# Questions and the exercise


register(
    Question(
        key="08.dp",
        prompt=("Flower offers DP in two places, and a client can run DP-SGD itself. Which of them stop the curious "
                "server from rebuilding the clients' digits: the central wrapper (DifferentialPrivacyServerSideFixedClipping), "
                "local DP (LocalDpMod), DP-SGD on the client?"),
        options={
            "a": "all three: each one adds calibrated noise",
            "b": "only the client-side noise (LocalDpMod, DP-SGD): the central wrapper does not",
            "c": "only the central wrapper: it sees every update and can noise them all",
            "d": "none of them",
        },
        explanation=(
            "who adds the noise decides whom it protects. The central wrapper runs on the server: it receives every "
            "update, clips it (which keeps its direction, all that the cosine attack matches) and noises only the "
            "sum, which is what leaves the server; it protects the clients against whoever sees the global models, "
            "never against the server, whatever its noise multiplier. LocalDpMod and DP-SGD noise the update before it "
            "leaves the client, so the server only ever sees noise on top of it; at the ε stated here the noise "
            "buries the digit, and (the accuracy column) the learning with it."
        ),
    ),
    Question(
        key="08.server",
        prompt="Why does Flower's server-side DP wrapper leave the attack's success unchanged?",
        options={
            "a": ("it runs on the server after the updates have arrived: it clips each one (same direction) and noises "
                  "only their average, which is what the server publishes"),
            "b": "its noise multiplier (0.1) is too small to matter",
            "c": "clipping makes an update easier to invert than no clipping",
            "d": "Flower marks its DP as a preview: the wrapper is not finished",
        },
        answer="a",
        explanation=(
            "the curious server reads each update inside the strategy the wrapper calls, before any noise exists; "
            "clipping only rescales an update, and the attack's cosine objective ignores scale. No noise multiplier "
            "can change that: the noise is added after the server has looked. Central DP assumes a trusted server; "
            "against an untrusted one the noise must be added on the client (LocalDpMod, DP-SGD) or the updates "
            "hidden (secure aggregation)."
        ),
        hints={
            "b": ("raise the multiplier in your head to 100: the server's copy of each update is still noise-free. "
                  "Where in the pipeline is the noise added, and where does the server look?"),
            "c": "clipping rescales an update; the attack compares directions. What does clipping leave unchanged?",
            "d": "the wrapper does what it documents. The question is whom its guarantee is about.",
        },
    ),
    Question(
        key="08.unroll",
        prompt=("With one digit per step (B = 1), reading the update as one gradient works at K = 1 and degrades "
                "as K grows, while replaying the K steps keeps working. Why?"),
        options={
            "a": ("the K gradients are taken at K different weights along the client's path, so the update is not a "
                  "multiple of any one gradient at the global weights; the replay follows the same path"),
            "b": "the update gets smaller with K, so the simple attack has less signal",
            "c": "every local step adds noise to the update",
            "d": "after K steps the client's digits have been averaged into one image",
        },
        answer="a",
        explanation=(
            "w_K - w_0 = -lr (g(w_0) + g(w_1) + ... + g(w_{K-1})): each term is the gradient at the weights the "
            "client had then. The simple attack looks for digits whose gradient at w_0 points like that sum, which no "
            "digit produces exactly once the weights have moved. The unrolled attack computes the same K steps on "
            "its dummy digits, so at the right digits its update equals the client's."
        ),
        hints={
            "b": "the cosine objective ignores the size of the update. What else changes with K?",
            "c": "there is no noise here: plain SGD is deterministic. Where is each local gradient computed?",
            "d": "with B = 1 each step sees one digit; look at the formula of the update as a sum over the steps.",
        },
    ),
)


def observed_dp(results: "FlowerResults", limit: float = 0.1) -> str:
    """The observed option of ``08.dp`` from the measured DP runs: which modes keep the success rate at most ``limit``."""
    stopped = {r["dp"] for r in results.dp_rows() if r["dp"] != "none" and r["success"].rate <= limit}
    if stopped == {"server", "local", "dpsgd"}:
        return "a"
    if stopped == {"local", "dpsgd"}:
        return "b"
    if stopped == {"server"}:
        return "c"
    return "d"


def check_as_gradient(student) -> Feedback:
    """Check the exercise ``as_gradient(update, lr, local_steps)``: the simple attacker's reading of an update
    as one gradient (:func:`gleak_edu.fl.update_as_gradient`), on random updates."""
    gen = torch.Generator().manual_seed(0)
    cases = []
    for lr, k in ((0.1, 1), (0.05, 5), (0.3, 10)):
        update = {"w": torch.randn(3, 4, generator=gen), "b": torch.randn(3, generator=gen)}
        cases.append((update, lr, k))

    def flat(fn):
        def call(update, lr, k):
            out = fn(update, lr, k)
            if out is Ellipsis or out is None:
                return out
            return torch.cat([torch.as_tensor(out[n]).reshape(-1) for n in ("w", "b")])
        return call

    return check_function(flat(student), flat(lambda u, lr, k: update_as_gradient(u, lr=lr, local_steps=k)), cases,
                          what="as_gradient", hint_text=("each update is lr times K gradients, with a minus sign: "
                                                          "divide every tensor by the same number."))


# --------------------------------------------------------------------------------------------------
# Reading the shipped results


def _rate(ssims: list[float], threshold: float = metrics.SUCCESS_SSIM) -> metrics.Rate:
    return metrics.success_rate([v >= threshold for v in ssims])


@dataclass
class FlowerResults:
    """The shipped measurements (:func:`load_results`), with the tables the notebook prints."""

    record: dict
    path: Path

    def fedavg_rows(self) -> list[dict]:
        """One row per (K, B): n digits, success rate (a :class:`gleak_edu.metrics.Rate`) and mean SSIM of each attack."""
        rows = []
        for c in self.record["fedavg"]["cells"]:
            row = {"local_steps": c["local_steps"], "local_batch": c["local_batch"], "updates": c["updates"]}
            for attack in ("simple", "unrolled"):
                ssims = [v for s in c[attack] for v in s["ssim"]]
                row[attack] = _rate(ssims)
                row[f"{attack}_ssim"] = sum(ssims) / len(ssims)
            rows.append(row)
        return rows

    def fedavg_table(self) -> str:
        """The K x B table as text: success [95 % CI] and mean SSIM of both attacks."""
        lines = [f"{'K':>3} {'B':>2} {'digits':>6}   {'simple (update / -lr K)':<34} {'unrolled (K steps replayed)':<34}"]
        for r in self.fedavg_rows():
            cells = [f"{str(r[a]):<22} SSIM {r[a + '_ssim']:.2f}" for a in ("simple", "unrolled")]
            lines.append(f"{r['local_steps']:>3} {r['local_batch']:>2} {r['simple'].n:>6}   {cells[0]:<34} {cells[1]:<34}")
        return "\n".join(lines)

    def dp_rows(self) -> list[dict]:
        """One row per DP run: name, dp mode, accuracy after the last round, epsilon (None without DP), its note,
        the attack's success rate and mean SSIM over the attacked digits."""
        rows = []
        for run in self.record["dp"]["runs"]:
            ssims = [v for s in run["attacks"] for v in s["ssim"]]
            rows.append({"name": run["name"], "dp": run["settings"]["dp"], "accuracy": run["accuracy"][-1],
                         "accuracy_curve": run["accuracy"], "epsilon": run["epsilon"], "epsilon_note": run["epsilon_note"],
                         "success": _rate(ssims), "ssim": sum(ssims) / len(ssims), "settings": run["settings"]})
        return rows

    def dp_table(self) -> str:
        """The DP table as text."""
        lines = [f"{'':32} {'accuracy':>8} {'epsilon':>9}   attack success [95 % CI]   mean SSIM"]
        for r in self.dp_rows():
            eps = "-" if r["epsilon"] is None else f"{r['epsilon']:.3g}"
            lines.append(f"{r['name']:32} {r['accuracy']:8.1%} {eps:>9}   {str(r['success']):<26} {r['ssim']:.2f}")
        return "\n".join(lines)

    def secagg_rows(self) -> list[dict]:
        """One row per N: the clients summed, groups attacked, digits, success rate and mean SSIM."""
        rows = []
        for r in self.record["secagg"]["rows"]:
            ssims = [v for g in r["groups"] for v in g["ssim"]]
            rows.append({"clients": r["clients"], "groups": len(r["groups"]), "success": _rate(ssims),
                         "ssim": sum(ssims) / len(ssims)})
        return rows


def _find(path) -> Path:
    candidates = [Path(path)] if path is not None else [Path("results/flower_fedavg.json"), _REPO / RESULTS_FILE]
    for p in candidates:
        if p.is_file():
            return p
    raise FileNotFoundError(f"no measured results at {[str(p) for p in candidates]}; make them with `{RESULTS_COMMAND}`")


def load_results(path: str | Path | None = None) -> FlowerResults:
    """Read the shipped results (default: ``results/flower_fedavg.json`` next to the notebooks).

    Raises:
        FileNotFoundError: no file (the message gives the command that makes it).
        ValueError: a file of another format.
    """
    path = _find(path)
    record = json.loads(path.read_text())
    if record.get("format") != FORMAT:
        raise ValueError(f"{path}: format {record.get('format')!r}, expected {FORMAT}; regenerate it with "
                         f"`{RESULTS_COMMAND}`")
    return FlowerResults(record=record, path=path)


if __name__ == "__main__":  # python -m gleak_edu.exercises.nb08 [PATH]
    out = write_results(sys.argv[1] if len(sys.argv) > 1 else RESULTS_FILE)
    print(f"wrote {out}")
