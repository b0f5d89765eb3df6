"""Benchmark: LDA on the AP corpus, ppgen (variational EM, SVI; ProdLDA) against scikit-learn.

Run with ``make bench`` or directly::

    .venv/bin/python benchmarks/lda.py            # full run: AP (2,246 docs), K = 20 and 50
    .venv/bin/python benchmarks/lda.py --quick    # smoke run: 300 docs, K = 5, few iterations

Data: Blei's AP corpus (``ppgen.datasets.load_ap_corpus``, 2,246 documents x 10,473
terms, float32 counts). A fixed held-out split: a seeded permutation
(``numpy.random.default_rng(--split-seed)``) puts 10% of the documents aside (225) and
every model is trained on the other 90% (2,021), in corpus order.

Models, fitted side by side in this one process on the same scipy CSR training matrix:

* ppgen ``LDA(K)`` by batch variational EM, ``ppgen.fit(..., "em", num_steps=--em-iters,
  tol=--em-tol)``, started from scikit-learn's own start for ``random_state=--seed``
  (``RandomState(seed).gamma(100, 1/100, (K, V))`` as ``topic_word_concentration``);
* scikit-learn ``LatentDirichletAllocation(learning_method="batch")`` with ``max_iter``
  equal to the EM iterations ppgen ran, ``evaluate_every=-1``, ``random_state=--seed``;
* scikit-learn ``LatentDirichletAllocation(learning_method="online")``, ``batch_size=128``,
  ``max_iter=--online-iters`` passes, default ``learning_offset`` / ``learning_decay``;
* ppgen ``LDA(K)`` by SVI with its amortized Dirichlet guide (``--svi-steps`` steps of
  ``--batch-size`` documents, ``lr=--svi-lr`` (0.05), ``lr_decay=1.0``, ``tol=0``;
  its default objective, ``TraceMeanField_ELBO``);
* ppgen ``ProdLDA(K)`` by SVI (same steps and batch size, ``lr=--prodlda-lr``) when
  ``ppgen`` has it.

All LDA models use the priors alpha = eta = 1/K. Every model is measured by the same rules:

* held-out perplexity by document completion,
  ``ppgen.evaluation.document_completion(topic_word, held_out_docs, doc_topic_prior=1/K,
  observed_fraction=0.5, seed=--split-seed)``, with each model's topic-word matrix
  normalised by rows (scikit-learn: ``components_ / components_.sum(1)``): half of each
  held-out document's tokens fold the topic proportions in, the other half are scored;
* mean NPMI coherence of each topic's top 10 words, counted on the training documents
  (``ppgen.evaluation.npmi_coherence``);
* training wall time of the whole ``fit`` call (input conversion included, evaluation
  not), and the threads it ran on.

For reference the table also has scikit-learn's own ``perplexity()`` on the held-out
documents, a variational bound computed differently (see the notes the script prints);
for ppgen's LDA rows it is the same scikit-learn code applied to ppgen's variational
topic parameters.

torch and the BLAS pools run one thread by default (``--threads``); scikit-learn runs
with ``n_jobs=None`` (one process). Nothing is written to disk unless ``--json PATH``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

try:  # the outside-load meter of the GMM benchmark (same folder)
    from gmm_em import OutsideLoad
except ImportError:  # imported from elsewhere: no outside-load column
    OutsideLoad = None

#: The test checks that ppgen's EM and scikit-learn's batch LDA agree this well at --quick.
AGREEMENT_RTOL = 0.10
#: Pseudo-count per word of the unigram reference model.
UNIGRAM_PSEUDO_COUNT = 0.5


# --------------------------------------------------------------------------- #
# Data
# --------------------------------------------------------------------------- #


@dataclass
class Split:
    train: object  # scipy.sparse CSR (D_train, V)
    test: object  # scipy.sparse CSR (D_test, V)
    train_ids: np.ndarray
    test_ids: np.ndarray
    num_docs: int  # documents used (train + test)
    corpus_docs: int  # documents in the corpus


def load_split(args: argparse.Namespace) -> Split:
    """AP counts; a seeded permutation picks the (optional) subset and the held-out tenth."""
    import ppgen

    counts, _ = ppgen.datasets.load_ap_corpus(dtype=getattr(torch, args.dtype))
    perm = np.random.default_rng(args.split_seed).permutation(counts.shape[0])
    if args.docs is not None:
        perm = perm[: args.docs]
    num_test = max(1, int(round(args.test_fraction * len(perm))))
    test_ids, train_ids = np.sort(perm[:num_test]), np.sort(perm[num_test:])
    return Split(train=counts[train_ids], test=counts[test_ids], train_ids=train_ids,
                 test_ids=test_ids, num_docs=len(perm), corpus_docs=counts.shape[0])


def sklearn_start(seed: int, k: int, v: int) -> np.ndarray:
    """scikit-learn's start of the topics' Dirichlet parameters for ``random_state=seed``."""
    return np.random.RandomState(seed).gamma(100.0, 0.01, (k, v))


# --------------------------------------------------------------------------- #
# Implementations
# --------------------------------------------------------------------------- #


@dataclass
class Trained:
    """What one fit left behind, for the metrics."""

    seconds: float
    topic_word: np.ndarray  # (K, V) float64, rows summing to 1
    iterations: int  # EM iterations, passes or SVI steps actually run
    iterations_text: str
    concentration: np.ndarray | None = None  # variational Dirichlet parameters lambda (K, V)
    sk_model: object | None = None  # a fitted scikit-learn estimator
    model: object | None = None  # a fitted ppgen model
    warnings: list[str] = field(default_factory=list)
    outside: float | None = None


class Runner:
    """One model: ``fit()`` trains it once on the training split and returns a Trained."""

    name = ""
    inference = ""
    threads = ""

    def __init__(self, k: int, split: Split, args: argparse.Namespace) -> None:
        self.k, self.split, self.args = k, split, args
        self.best: Trained | None = None
        self.times: list[float] = []

    def fit(self) -> Trained:
        raise NotImplementedError

    def run_once(self) -> None:
        load = OutsideLoad() if OutsideLoad is not None else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trained = self.fit()
        trained.outside = load.fraction() if load is not None else None
        trained.warnings = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
        self.times.append(trained.seconds)
        if self.best is None or trained.seconds < self.best.seconds:
            self.best = trained


def _rows(topic_word) -> np.ndarray:
    t = np.asarray(topic_word, dtype=np.float64)
    return t / t.sum(1, keepdims=True)


class PpgenEM(Runner):
    name, inference = "ppgen LDA", "variational EM (batch)"

    def __init__(self, k, split, args) -> None:
        super().__init__(k, split, args)
        self.threads = f"torch {args.threads}"
        self.start = sklearn_start(args.seed, k, split.train.shape[1])

    def fit(self) -> Trained:
        import ppgen

        lda = ppgen.LDA(self.k)
        t0 = time.perf_counter()
        fit = ppgen.fit(lda, self.split.train, method="em", num_steps=self.args.em_iters,
                        tol=self.args.em_tol, init={"topic_word_concentration": self.start},
                        seed=self.args.seed, progress=False)
        seconds = time.perf_counter() - t0
        iters = len(fit.history["objective"]) - 1  # the start's bound, then one per iteration
        if self.args.em_tol > 0:
            state = "converged" if fit.converged else "not converged"
            text = f"{iters} ({state}, tol {self.args.em_tol:g})"
        else:
            text = f"{iters} (tol 0)"
        return Trained(seconds, _rows(lda.topic_word), iters, text,
                       concentration=lda.topic_word_concentration.double().numpy(), model=lda)


class SklearnLDA(Runner):
    threads = "1 (n_jobs=None)"

    def __init__(self, k, split, args, method: str, max_iter: int) -> None:
        import sklearn

        super().__init__(k, split, args)
        self.method, self.max_iter = method, max_iter
        self.name = f"scikit-learn {sklearn.__version__} LDA"
        self.inference = ("variational EM (batch)" if method == "batch" else
                          f"online VB (batch_size {args.online_batch_size})")

    def fit(self) -> Trained:
        from sklearn.decomposition import LatentDirichletAllocation

        sk = LatentDirichletAllocation(
            n_components=self.k, doc_topic_prior=1.0 / self.k, topic_word_prior=1.0 / self.k,
            learning_method=self.method, max_iter=self.max_iter,
            batch_size=self.args.online_batch_size, evaluate_every=-1, n_jobs=None,
            random_state=self.args.seed)
        t0 = time.perf_counter()
        sk.fit(self.split.train)
        seconds = time.perf_counter() - t0
        if self.method == "batch":
            text = f"{sk.n_iter_} (max_iter)"
        else:
            batches = math.ceil(self.split.train.shape[0] / self.args.online_batch_size)
            text = f"{sk.n_iter_} passes x {batches} minibatches"
        comp = np.asarray(sk.components_, dtype=np.float64)
        return Trained(seconds, _rows(comp), int(sk.n_iter_), text, concentration=comp,
                       sk_model=sk)


class PpgenSVI(Runner):
    """ppgen's SVI for LDA (``name``) or ProdLDA."""

    def __init__(self, k, split, args, prodlda: bool = False) -> None:
        super().__init__(k, split, args)
        self.prodlda = prodlda
        self.threads = f"torch {args.threads}"
        if prodlda:
            self.name, self.inference = "ppgen ProdLDA", f"SVI (batch {args.batch_size})"
        else:
            self.name, self.inference = "ppgen LDA", f"SVI (batch {args.batch_size})"

    def fit(self) -> Trained:
        import ppgen

        a = self.args
        if self.prodlda:
            model = ppgen.ProdLDA(self.k)
            opts = {"lr": a.prodlda_lr}
        else:
            model = ppgen.LDA(self.k)
            opts = {"lr": a.svi_lr, "lr_decay": a.svi_lr_decay}
        t0 = time.perf_counter()
        fit = ppgen.fit(model, self.split.train, method="svi", num_steps=a.svi_steps,
                        batch_size=a.batch_size, tol=0.0, seed=a.seed, progress=False, **opts)
        seconds = time.perf_counter() - t0
        steps = len(fit.history["objective"])
        epochs = steps * min(a.batch_size, self.split.train.shape[0]) / self.split.train.shape[0]
        text = f"{steps} steps ({epochs:.0f} epochs)"
        if steps < a.svi_steps:
            text = f"{steps} of {a.svi_steps} steps (STOPPED)"
        lam = getattr(model, "topic_word_concentration", None)
        return Trained(seconds, _rows(model.topic_word), steps, text,
                       concentration=None if lam is None else lam.double().numpy(), model=model)


# --------------------------------------------------------------------------- #
# Metrics
# --------------------------------------------------------------------------- #


@dataclass
class Row:
    model: str
    inference: str
    iterations: int
    iterations_text: str
    train_s: float  # best over the repeats
    train_s_all: list[float]
    perplexity: float  # document completion, the same rule for every model
    npmi: float  # mean over topics, top 10 words, training documents
    sk_perplexity: float | None  # scikit-learn's perplexity() on the held-out docs (bound)
    threads: str
    outside_cpu_fraction: float | None
    own_rule_perplexity: float | None = None  # ProdLDA: completion under its own likelihood
    warnings: list[str] = field(default_factory=list)


def sklearn_bound_perplexity(concentration: np.ndarray, test, k: int) -> float:
    """scikit-learn's ``perplexity(test)`` for topics with Dirichlet parameters lambda."""
    from sklearn.decomposition import LatentDirichletAllocation
    from sklearn.decomposition._lda import _dirichlet_expectation_2d

    sk = LatentDirichletAllocation(n_components=k, doc_topic_prior=1.0 / k,
                                   topic_word_prior=1.0 / k, random_state=0)
    dtype = np.float32 if test.dtype == np.float32 else np.float64
    sk._init_latent_vars(concentration.shape[1], dtype)
    sk.components_ = concentration.astype(dtype)
    sk.exp_dirichlet_component_ = np.exp(_dirichlet_expectation_2d(sk.components_))
    return float(sk.perplexity(test))


def prodlda_own_completion(model, test, seed: int) -> float:
    """Document completion under ProdLDA's own likelihood: theta from ``transform`` on the
    observed half (its logistic-normal MAP), held-out tokens scored under
    softmax(theta @ log topic_word), the product of experts."""
    import ppgen

    observed, held = ppgen.evaluation.split_documents(test, observed_fraction=0.5, seed=seed)
    with torch.no_grad():
        theta = model.transform(observed).double()
        log_tw = model.topic_word.double().clamp_min(1e-300).log()
        log_probs = torch.log_softmax(theta @ log_tw, -1)
    held = torch.as_tensor(held.toarray(), dtype=torch.float64)
    return ppgen.evaluation.perplexity(float((held * log_probs).sum()), float(held.sum()))


def unigram_perplexity(split: Split, seed: int) -> float:
    """The completion perplexity of one topic, the smoothed training word frequencies."""
    import ppgen

    freq = np.asarray(split.train.sum(0), dtype=np.float64).ravel() + UNIGRAM_PSEUDO_COUNT
    return float(ppgen.evaluation.document_completion(
        (freq / freq.sum())[None], split.test, doc_topic_prior=1.0, observed_fraction=0.5,
        seed=seed)["perplexity"])


def evaluate(runner: Runner, split: Split, args: argparse.Namespace) -> Row:
    import ppgen

    t, k = runner.best, runner.k
    completion = ppgen.evaluation.document_completion(
        t.topic_word, split.test, doc_topic_prior=1.0 / k, observed_fraction=0.5,
        seed=args.split_seed)
    npmi = float(ppgen.evaluation.npmi_coherence(t.topic_word, split.train, top_n=10).mean())
    sk_ppl = None
    if t.sk_model is not None:
        sk_ppl = float(t.sk_model.perplexity(split.test))
    elif t.concentration is not None:
        try:
            sk_ppl = sklearn_bound_perplexity(t.concentration, split.test, k)
        except Exception as exc:  # scikit-learn's private API moved: leave the cell empty
            t.warnings.append(f"scikit-learn bound not computed: {type(exc).__name__}: {exc}")
    own = None
    if isinstance(runner, PpgenSVI) and runner.prodlda:
        own = prodlda_own_completion(t.model, split.test, args.split_seed)
    return Row(model=runner.name, inference=runner.inference, iterations=t.iterations,
               iterations_text=t.iterations_text, train_s=t.seconds,
               train_s_all=list(runner.times), perplexity=float(completion["perplexity"]),
               npmi=npmi, sk_perplexity=sk_ppl, threads=runner.threads,
               outside_cpu_fraction=t.outside, own_rule_perplexity=own, warnings=t.warnings)


# --------------------------------------------------------------------------- #
# Reporting
# --------------------------------------------------------------------------- #


def format_table(rows: list[Row]) -> str:
    lines = [
        "| model | inference | iterations | train time (s) | held-out perplexity "
        "| mean NPMI (top 10) | sklearn perplexity() (bound) | threads | other processes' CPU |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        sk = "-" if r.sk_perplexity is None else f"{r.sk_perplexity:.4g}"
        out = "?" if r.outside_cpu_fraction is None else f"{100 * r.outside_cpu_fraction:.0f}%"
        lines.append(
            f"| {r.model} | {r.inference} | {r.iterations_text} | {r.train_s:.2f} "
            f"| {r.perplexity:.1f} | {r.npmi:.4f} | {sk} | {r.threads} | {out} |"
        )
    return "\n".join(lines)


def parse_table(text: str) -> list[dict]:
    """The rows of the tables this script prints (used by the tests)."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("| ") or line.startswith("| model ") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 9:
            continue
        rows.append({"model": cells[0], "inference": cells[1], "iterations": cells[2],
                     "train_s": float(cells[3]), "perplexity": float(cells[4]),
                     "npmi": float(cells[5]),
                     "sk_perplexity": None if cells[6] == "-" else float(cells[6])})
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--topics", default=None,
                   help="comma-separated numbers of topics (default 20,50; 5 with --quick)")
    p.add_argument("--docs", type=int, default=None,
                   help="use a seeded subset of this many AP documents (default all 2,246; "
                        "300 with --quick)")
    p.add_argument("--test-fraction", type=float, default=0.1,
                   help="share of the documents held out (default 0.1)")
    p.add_argument("--split-seed", type=int, default=0,
                   help="seed of the document permutation and of the completion split")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of every fit (ppgen seed=, scikit-learn random_state=)")
    p.add_argument("--em-iters", type=int, default=None,
                   help="ppgen EM iterations, and scikit-learn batch max_iter (default 50; 10 "
                        "with --quick)")
    p.add_argument("--em-tol", type=float, default=0.0,
                   help="ppgen EM tolerance (default 0: exactly --em-iters iterations); with "
                        "tol > 0 scikit-learn's batch LDA gets max_iter = the iterations ppgen ran")
    p.add_argument("--online-iters", type=int, default=None,
                   help="scikit-learn online LDA passes, max_iter (default 10; 3 with --quick)")
    p.add_argument("--online-batch-size", type=int, default=128)
    p.add_argument("--svi-steps", type=int, default=None,
                   help="SVI steps for ppgen LDA and ProdLDA (default 500; 20 with --quick)")
    p.add_argument("--batch-size", type=int, default=256, help="SVI minibatch (default 256)")
    p.add_argument("--svi-lr", type=float, default=0.05)
    p.add_argument("--svi-lr-decay", type=float, default=1.0)
    p.add_argument("--prodlda-lr", type=float, default=0.01)
    p.add_argument("--skip-svi", action="store_true", help="skip ppgen's SVI models")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="type of the counts every model is given (default float32)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch and BLAS threads (default 1; scikit-learn runs n_jobs=None)")
    p.add_argument("--repeats", type=int, default=1,
                   help="fit every model this many times, interleaved; best time (default 1)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 300 documents, K=5, 10 EM iterations, 3 online passes, "
                        "20 SVI steps")
    p.add_argument("--json", metavar="PATH", default=None,
                   help="also write the results as JSON to PATH")
    args = p.parse_args(argv)
    defaults = {"topics": ("20,50", "5"), "docs": (None, 300), "em_iters": (50, 10),
                "online_iters": (10, 3), "svi_steps": (500, 20)}
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    try:
        args.topics = [int(s) for s in str(args.topics).split(",") if s.strip()]
    except ValueError:
        p.error(f"--topics: expected comma-separated integers, got {args.topics!r}")
    if not args.topics or min(args.topics) < 2:
        p.error("--topics: expected numbers >= 2")
    if not 0 < args.test_fraction < 1:
        p.error("--test-fraction: expected a number in (0, 1)")
    for name in ("em_iters", "online_iters", "svi_steps", "batch_size", "online_batch_size",
                 "threads", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.docs is not None and args.docs < 10:
        p.error("--docs must be >= 10")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import pyro
    import scipy.sparse  # noqa: F401  (load every BLAS before limiting the pools)
    import sklearn
    import sklearn.decomposition  # noqa: F401
    from threadpoolctl import threadpool_info, threadpool_limits

    import ppgen

    torch.set_num_threads(args.threads)
    _limits = threadpool_limits(args.threads)  # noqa: F841  (kept for the whole run)
    has_prodlda = hasattr(ppgen, "ProdLDA")

    split = load_split(args)
    d_train, v = split.train.shape
    d_test = split.test.shape[0]
    blas = ", ".join(f"{i['internal_api']}:{i['num_threads']}" for i in threadpool_info()
                     if i["user_api"] == "blas")
    subset = (f" (seeded subset of {split.num_docs:,} of the {split.corpus_docs:,} documents)"
              if split.num_docs < split.corpus_docs else "")
    print(f"# LDA on the AP corpus{subset}: train {d_train:,} / held-out {d_test:,} documents "
          f"(split seed {args.split_seed}), V={v:,}, K in {args.topics}, priors 1/K, "
          f"{args.dtype} counts")
    print(f"train tokens {int(split.train.sum()):,}, held-out tokens {int(split.test.sum()):,}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, pyro "
          f"{pyro.__version__}, numpy {np.__version__} (BLAS {blas}), scikit-learn "
          f"{sklearn.__version__}; best of {args.repeats}")
    print(f"threads: torch {torch.get_num_threads()} (--threads {args.threads}), BLAS "
          f"{args.threads}; scikit-learn n_jobs=None (one process)")
    print(f"ppgen EM: num_steps={args.em_iters}, tol={args.em_tol:g}, from scikit-learn's start "
          f"for random_state={args.seed}; scikit-learn online: max_iter={args.online_iters}, "
          f"batch_size={args.online_batch_size}; SVI: "
          + ("skipped (--skip-svi)" if args.skip_svi else
             f"{args.svi_steps} steps of {args.batch_size} documents, LDA lr={args.svi_lr:g} "
             f"lr_decay={args.svi_lr_decay:g}, ProdLDA lr={args.prodlda_lr:g}"))
    load1 = os.getloadavg()[0]
    print(f"load average (1 min) before start: {load1:.2f} on {os.cpu_count()} CPUs")
    if load1 > 0.5:
        print("WARNING: the machine is busy; timings will be noisy.")
    if not has_prodlda:
        print("ProdLDA: not available")
    unigram = unigram_perplexity(split, args.split_seed)
    print(f"reference: a unigram model (one topic: training word frequencies + "
          f"{UNIGRAM_PSEUDO_COUNT:g}) has held-out perplexity {unigram:.1f} by the same rule")

    report: dict = {"config": {k_: v_ for k_, v_ in vars(args).items() if k_ != "json"},
                    "torch_threads": torch.get_num_threads(),
                    "versions": {"torch": torch.__version__, "pyro": pyro.__version__,
                                 "sklearn": sklearn.__version__, "numpy": np.__version__},
                    "split": {"train_docs": d_train, "test_docs": d_test, "vocab": v,
                              "test_ids": split.test_ids.tolist()},
                    "prodlda_available": has_prodlda, "unigram_perplexity": unigram,
                    "runs": {}}
    ok = True
    for k in args.topics:
        em = PpgenEM(k, split, args)
        runners: list[Runner] = [em]
        # interleave the repeats, so that a burst of outside load hits every model; ppgen's EM
        # goes first: with --em-tol > 0 its iterations set scikit-learn's batch max_iter
        for rep in range(args.repeats):
            em.run_once()
            if rep == 0:
                runners += [SklearnLDA(k, split, args, "batch", em.best.iterations),
                            SklearnLDA(k, split, args, "online", args.online_iters)]
                if not args.skip_svi:
                    runners.append(PpgenSVI(k, split, args))
                    if has_prodlda:
                        runners.append(PpgenSVI(k, split, args, prodlda=True))
            for runner in runners[1:]:
                runner.run_once()
        rows = [evaluate(r, split, args) for r in runners]
        pp, sk = rows[0], rows[1]

        print()
        print(f"## K = {k} topics")
        print()
        print(format_table(rows))
        print()
        rel = abs(pp.perplexity - sk.perplexity) / sk.perplexity
        speed = sk.train_s / pp.train_s if pp.train_s > 0 else math.inf
        print(f"ppgen em vs sklearn batch: perplexity {pp.perplexity:.1f} vs "
              f"{sk.perplexity:.1f}, time {pp.train_s:.2f} s vs {sk.train_s:.2f} s "
              f"(K={k}, {pp.iterations} iterations each; ppgen/sklearn perplexity "
              f"{pp.perplexity / sk.perplexity:.3f}, sklearn/ppgen time {speed:.2f}x)")
        ncpu = os.cpu_count() or 1
        ours = min(args.threads, ncpu) / ncpu  # share of the CPUs one fit uses
        loaded = [f"{r.model} {r.inference} ({100 * r.outside_cpu_fraction:.0f}%)" for r in rows
                  if r.outside_cpu_fraction is not None and r.outside_cpu_fraction + ours > 1.05]
        if loaded:
            print(f"- WARNING: other processes left less than {args.threads} of the {ncpu} "
                  f"CPUs free during: {'; '.join(loaded)}; those times are not trustworthy.")
        for r in rows:
            if r.own_rule_perplexity is not None:
                print(f"- {r.model}: its topics are product-of-experts weights, so the fold-in "
                      f"above (a mixture of topics, as LDA) is not its own likelihood. Document "
                      f"completion under its own likelihood (theta = transform(observed half), "
                      f"tokens scored by softmax(theta @ log topic_word)): perplexity "
                      f"{r.own_rule_perplexity:.1f}.")
            for w in r.warnings:
                print(f"- {r.model} {r.inference} warned: {w}")
            if "STOPPED" in r.iterations_text:
                print(f"- WARNING: {r.model} {r.inference} stopped after {r.iterations} of "
                      f"{args.svi_steps} steps (ppgen's SVI NaN guard: a parameter became NaN or "
                      f"inf); its topics are those after the {r.iterations} good step(s).")
        finite = all(math.isfinite(r.perplexity) and r.perplexity > 1 for r in rows)
        ok = ok and finite
        report["runs"][str(k)] = {
            "rows": [asdict(r) for r in rows],
            "verdict": {"ppgen_em_perplexity": pp.perplexity,
                        "sklearn_batch_perplexity": sk.perplexity,
                        "rel_perplexity_diff": rel, "ppgen_em_s": pp.train_s,
                        "sklearn_batch_s": sk.train_s, "sklearn_over_ppgen_time": speed,
                        "iterations": pp.iterations},
        }

    print()
    print("Notes:")
    print("- held-out perplexity: document completion (ppgen.evaluation.document_completion), "
          "the same rule for every model: each held-out document's tokens are split at random "
          f"in halves (seed {args.split_seed}); its topic proportions are folded in on the "
          "first half with the model's topics fixed (LDA's variational fixed point, alpha = "
          "1/K for every model), and the second half is scored, exp(-log-lik / tokens). Only "
          "the row-normalised topic-word matrix enters; lower is better.")
    print("- mean NPMI (top 10): normalised PMI of the pairs of each topic's 10 most probable "
          "words, co-occurrence counted per document on the training split, averaged over "
          "topics; in [-1, 1], higher is better.")
    print("- sklearn perplexity() (bound): scikit-learn's LatentDirichletAllocation."
          "perplexity(held-out docs) = exp(-bound / tokens), where bound is its variational "
          "lower bound (ELBO) on the WHOLE held-out documents (q(theta) fitted to all their "
          "tokens, which are then scored; no completion split) plus the topics' term "
          "E[log p(beta | eta) - log q(beta | lambda)] of the whole model, which is not scaled "
          "to the size of the held-out set and dominates it for a small one. It is a bound, "
          "not a predictive likelihood, and not comparable to the held-out perplexity column. "
          "For ppgen's LDA rows it is the same scikit-learn code run on ppgen's variational "
          "parameters lambda (topic_word_concentration); ProdLDA has no lambda (-).")
    print("- train time: wall-clock seconds of the whole fit call (input conversion included; "
          f"evaluation excluded), best of {args.repeats}; ppgen EM's iterations each also "
          "compute the bound (scikit-learn's batch fit, evaluate_every=-1, does not).")
    print("- ppgen EM starts from the topics scikit-learn starts from (same random_state); "
          "scikit-learn also re-draws each document's start at random in every E-step, ppgen "
          "starts them at 1, so the two runs differ slightly.")
    print("- other processes' CPU: share of the machine's CPUs other processes used during that "
          f"fit (best run); a time is only trustworthy while they leave the {args.threads} "
          "thread(s) of the fit a CPU each.")

    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
