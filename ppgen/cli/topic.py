"""``ppgen fit lda``: LDA (variational EM or SVI) or ProdLDA (SVI) on a document-term count
matrix (the AP corpus or a CSR .npz), evaluated on held-out documents; sampling and scoring
whole documents."""

from __future__ import annotations

import argparse
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._fit import (
    Figure,
    FitCommand,
    FitRun,
    add_num_steps,
    add_tol,
    emit_scores,
    fit_command,
    fraction,
    given_options,
    only_with_method,
    positive_float,
    positive_int,
)
from ._io import (
    CLIError,
    atomic_bytes,
    check_magic,
    count,
    csv_cell,
    emit,
    existing_file,
    load_table,
    npz_bytes,
    numpy_file_errors,
    output_file,
    value_errors,
)
from ._report import Report, convergence_text, fmt_total, json_text

__all__ = ["TopicFit", "CorpusData", "load_corpus", "CORPUS_DATASETS"]

#: Corpora of ``ppgen fit lda``.
CORPUS_DATASETS = ("ap",)
#: SVI defaults of ``ppgen fit lda`` (minibatches: a full-batch step on AP costs ~0.5 s;
#: Srivastava & Sutton train ProdLDA on batches of up to 200 documents).
LDA_SVI_DEFAULTS = {"batch_size": 200}
#: Top words per topic in the report, the figure and the coherence.
LDA_TOP_WORDS = 10
#: Document completion: share of each held-out document's tokens that is observed.
COMPLETION_OBSERVED_FRACTION = 0.5
#: Words per drawn document of ``ppgen sample`` for topic models.
DEFAULT_DOC_LENGTH = 100


@dataclass
class CorpusData:
    """Document-term counts read by the command, with their vocabulary and sources."""

    counts: Any  # scipy.sparse.csr_matrix (documents, vocabulary), float32 (float64 if huge)
    vocabulary: list[str] | None  # None: no vocabulary given (columns shown as w0, w1, ...)
    source: str
    vocab_source: str | None

    @property
    def num_docs(self) -> int:
        return int(self.counts.shape[0])

    @property
    def vocab_size(self) -> int:
        return int(self.counts.shape[1])

    @property
    def num_tokens(self) -> int:
        return int(round(float(self.counts.sum())))

    def words(self) -> list[str]:
        """The word of each column (``w<j>`` without a vocabulary)."""
        if self.vocabulary is not None:
            return self.vocabulary
        return [f"w{j}" for j in range(self.vocab_size)]


_CSR_ARRAYS = ("data", "indices", "indptr", "shape")
_CSR_WHAT = ("a .npz file holding a CSR count matrix (arrays 'data', 'indices', 'indptr' and "
             "'shape', as scipy.sparse.save_npz writes)")


def _read_csr_arrays(path: Path) -> tuple[dict[str, np.ndarray], str | None]:
    """The four CSR arrays of a .npz file, and its 'format' entry (None when absent)."""
    check_magic(path, _CSR_WHAT, ".npz")
    with numpy_file_errors(path, _CSR_WHAT):
        with np.load(path, allow_pickle=False) as loaded:
            names = list(loaded.files)
            missing = [n for n in _CSR_ARRAYS if n not in names]
            if missing:
                hint = (" A dense matrix x converts with scipy.sparse.save_npz(path, "
                        "scipy.sparse.csr_matrix(x)).")
                raise CLIError(f"{path}: expected {_CSR_WHAT}, got arrays "
                               + (", ".join(repr(n) for n in names) or "(none)")
                               + f" (missing {', '.join(repr(n) for n in missing)}).{hint}")
            arrays = {n: loaded[n] for n in _CSR_ARRAYS}
            fmt = loaded["format"] if "format" in names else None
    if fmt is None:
        return arrays, None
    text = fmt.item() if fmt.ndim == 0 else fmt
    return arrays, text.decode() if isinstance(text, bytes) else str(text)


def _read_csr_npz(path: Path) -> Any:
    """A scipy CSR matrix of whole, non-negative counts from a .npz file, checked."""
    import scipy.sparse

    arrays, fmt = _read_csr_arrays(path)
    if fmt is not None and fmt != "csr":
        raise CLIError(f"{path}: expected a CSR matrix (format 'csr'), got format "
                       f"{fmt!r}. Convert it with matrix.tocsr() before saving.")
    data, indices, indptr, shape = (arrays[n] for n in _CSR_ARRAYS)
    for name, arr, kinds in (("data", data, "biuf"), ("indices", indices, "iu"),
                             ("indptr", indptr, "iu"), ("shape", shape, "iu")):
        if arr.dtype.kind not in kinds:
            what = "numbers" if name == "data" else "integers"
            raise CLIError(f"{path}: expected array '{name}' to hold {what}, got dtype "
                           f"{arr.dtype}.")
    if shape.shape != (2,) or (shape < 0).any():
        raise CLIError(f"{path}: expected 'shape' to hold two sizes (documents, vocabulary), "
                       f"got {shape.tolist()}.")
    rows, cols = (int(n) for n in shape)
    if rows == 0 or cols == 0:
        raise CLIError(f"{path}: expected at least one document and one word, got shape "
                       f"({rows}, {cols}).")
    if data.ndim != 1 or indices.shape != data.shape:
        raise CLIError(f"{path}: expected 'data' and 'indices' to be 1-D arrays of one length "
                       f"(one entry per non-zero), got shapes {data.shape} and "
                       f"{indices.shape}.")
    if (indptr.shape != (rows + 1,) or indptr[0] != 0 or indptr[-1] != len(data)
            or (np.diff(indptr) < 0).any()):
        raise CLIError(f"{path}: expected 'indptr' to hold {rows + 1} non-decreasing offsets "
                       f"from 0 to {len(data)} (one per document, then the number of "
                       "non-zeros); the CSR matrix is inconsistent.")
    if len(indices) and (indices.min() < 0 or indices.max() >= cols):
        bad = int(np.nonzero((indices < 0) | (indices >= cols))[0][0])
        raise CLIError(f"{path}: expected column indices in 0..{cols - 1}, got "
                       f"indices[{bad}] = {int(indices[bad])}.")
    values = data.astype(np.float64)
    bad = ~np.isfinite(values) | (values < 0) | (values != np.round(values))
    if bad.any():
        i = int(np.nonzero(bad)[0][0])
        doc = int(np.searchsorted(indptr, i, side="right") - 1)
        raise CLIError(f"{path}: expected word counts (whole numbers >= 0), got "
                       f"{values[i]:g} for document {doc}, column {int(indices[i])} "
                       f"(0-based; {count(int(bad.sum()), 'such entry', 'such entries')} "
                       "in all).")
    dtype = np.float32 if (not len(values) or values.max() < 2**24) else np.float64
    counts = scipy.sparse.csr_matrix((values.astype(dtype), indices.astype(np.int64),
                                      indptr.astype(np.int64)), shape=(rows, cols))
    counts.sum_duplicates()
    counts.eliminate_zeros()
    return counts


def _read_vocabulary(spec: str, vocab_size: int) -> list[str]:
    path = Path(spec)
    if not path.exists():
        raise CLIError(f"{spec}: no such file.")
    if path.is_dir():
        raise CLIError(f"{spec}: expected a text file of words (one per line), got a "
                       "directory.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise CLIError(f"{spec}: expected a UTF-8 text file of words (one per line), got "
                       "bytes that are not UTF-8 text.") from None
    words = text.splitlines()
    while words and not words[-1].strip():  # trailing blank lines
        words.pop()
    if len(words) != vocab_size:
        raise CLIError(f"{spec}: expected {vocab_size} words, one per line (one per column of "
                       f"the counts), got {len(words)} lines.")
    blank = [i for i, w in enumerate(words, start=1) if not w.strip()]
    if blank:
        raise CLIError(f"{spec}, line {blank[0]}: expected a word, got an empty line.")
    return [w.strip() for w in words]


def _prefixed(option: str, read: Any, *args: Any) -> Any:
    """``read(*args)``, with the message of its CLIError led by ``option``."""
    try:
        return read(*args)
    except CLIError as exc:
        raise CLIError(f"{option} {exc}") from None


def load_corpus(spec: str, vocab: str | None = None) -> CorpusData:
    """Read ``ap`` (the embedded AP corpus and its vocabulary) or a ``.npz`` CSR count matrix
    with an optional vocabulary file (one word per line, one per column). Errors start with
    the option they concern (``--data`` or ``--vocab``)."""
    if spec in CORPUS_DATASETS:
        if vocab is not None:
            raise CLIError(f"--vocab: applies to --data FILE.npz, got --data {spec} (which "
                           "has its own vocabulary).")
        import ppgen

        counts, vocabulary = ppgen.datasets.load_ap_corpus()
        return CorpusData(counts, list(vocabulary), "ap (embedded Associated Press "
                          "articles)", "ap")
    counts = _prefixed("--data", _load_corpus_file, spec)
    vocabulary = (None if vocab is None else
                  _prefixed("--vocab", _read_vocabulary, vocab, int(counts.shape[1])))
    return CorpusData(counts, vocabulary, spec, vocab)


def _load_corpus_file(spec: str) -> Any:
    path = existing_file(spec, CORPUS_DATASETS, (".npz",))
    suffix = path.suffix.lower()
    if suffix != ".npz":
        raise CLIError(f"{spec}: expected {_CSR_WHAT}, got a file ending in "
                       f"{suffix or '(no extension)'!r}.")
    return _read_csr_npz(path)


@dataclass
class TopicData:
    """The corpus split into the documents fitted on and those held out."""

    corpus: CorpusData
    train_idx: np.ndarray
    held_idx: np.ndarray
    train_counts: Any = None  # CSR rows of train_idx, and of held_idx (None when empty)
    held_counts: Any = None

    def __post_init__(self) -> None:
        self.train_counts = self.corpus.counts[self.train_idx]
        if len(self.held_idx):
            self.held_counts = self.corpus.counts[self.held_idx]


def _heldout_split(num_docs: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices of the training and held-out documents: round(fraction * D) documents
    (at least one) drawn without replacement by ``numpy.random.default_rng(seed)``."""
    if fraction == 0:
        return np.arange(num_docs), np.arange(0)
    num_held = max(1, int(round(fraction * num_docs)))
    if num_held >= num_docs:
        raise CLIError(f"--heldout-fraction: holding out {fraction:g} of "
                       f"{count(num_docs, 'document', 'documents')} leaves none to fit on. "
                       "Use a smaller fraction (0 holds none out) or more documents.")
    held = np.sort(np.random.default_rng(seed).permutation(num_docs)[:num_held])
    train = np.setdiff1d(np.arange(num_docs), held)
    return train, held


def _top_word_ids(topic_word: np.ndarray, num_words: int) -> np.ndarray:
    """Each topic's most probable columns, ties broken by column (as ``plot_topics``)."""
    return np.argsort(-topic_word, axis=1, kind="stable")[:, :num_words]


def _documents(n: int) -> str:
    return count(n, "document", "documents")


@fit_command
class TopicFit(FitCommand):
    name = "lda"
    help = "topic model (latent Dirichlet allocation, or ProdLDA)"
    description = (
        "Fit a topic model (LDA by variational EM or SVI;\n--model prodlda: ProdLDA by SVI) "
        "on all documents but a held-out fraction.\nPrints the top words and NPMI coherence "
        "of each topic and the held-out\nperplexity by document completion, and writes "
        "report.md, topics.png,\nhistory.png, model.pt and run.json into --out (only once the "
        "fit succeeded).")
    epilog = (
        "data files:\n"
        "  FILE.npz  a CSR matrix of word counts (documents x vocabulary): arrays 'data',\n"
        "            'indices', 'indptr' and 'shape', as scipy.sparse.save_npz writes\n"
        "  --vocab   a UTF-8 text file with one word per line, one per column\n"
        "\nevaluation:\n"
        "  --heldout-fraction of the documents (drawn with --seed) are left out of the fit;\n"
        "  half of each one's tokens are observed, the topic proportions folded in on\n"
        "  them, and the other half scored (ppgen.evaluation.document_completion).\n"
        "\nexamples:\n"
        "  ppgen fit lda --data ap --num-topics 20 --out runs/ap\n"
        "  ppgen fit lda --data counts.npz --vocab words.txt --num-topics 10 --method svi "
        "\\\n      --num-steps 500 --out runs/svi")
    data_default = "ap"
    data_help = ("'ap' (embedded: 2246 Associated Press articles, 10473 words) or a .npz CSR "
                 "count matrix (default: %(default)s)")
    seed_help = ("random seed of the fit and of the held-out documents (default: "
                 "%(default)s)")
    model_names = ("lda", "prodlda")
    length_help = f"topic models: words per document (default {DEFAULT_DOC_LENGTH})"
    inference_data = False
    run_json_description = "the command, settings, results and held-out documents"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--vocab", metavar="FILE",
                            help="with --data FILE.npz: a text file of words, one per line "
                            "(default: columns shown as w0, w1, ...)")
        parser.add_argument("--model", dest="topic_model", choices=("lda", "prodlda"),
                            default="lda", help="lda (Dirichlet topic proportions) or prodlda "
                            "(logistic-normal, product of experts; --method svi only) "
                            "(default: %(default)s)")
        parser.add_argument("--num-topics", type=positive_int, default=10, metavar="K",
                            help="number of topics (default: %(default)s)")
        parser.add_argument("--method", choices=("em", "svi"),
                            help="inference method (default: em for lda, svi for prodlda)")
        add_num_steps(parser)
        add_tol(parser)
        parser.add_argument("--batch-size", type=positive_int, metavar="B",
                            help=f"SVI: documents per step (default "
                            f"{LDA_SVI_DEFAULTS['batch_size']}, or all of them when fewer)")
        parser.add_argument("--lr", type=positive_float, metavar="LR",
                            help="SVI: learning rate of Adam (default 0.01)")
        parser.add_argument("--doc-topic-prior", type=positive_float, metavar="ALPHA",
                            help="concentration of the Dirichlet prior of each document's "
                            "topic proportions (default 1/K for lda; prodlda: 1, through its "
                            "logistic-normal approximation)")
        parser.add_argument("--topic-word-prior", type=positive_float, metavar="ETA",
                            help="LDA: concentration of the Dirichlet prior of each topic's "
                            "words (default 1/K)")
        parser.add_argument("--heldout-fraction", type=fraction, default=0.1, metavar="F",
                            help="share of the documents held out of the fit and scored by "
                            "document completion; 0 holds none out (default: %(default)s)")

    def fit_options(self, args: argparse.Namespace) -> dict[str, Any]:
        """Resolves ``args.method`` (EM for LDA, SVI for ProdLDA by default) and refuses
        options that do not apply."""
        if args.method is None:
            args.method = "svi" if args.topic_model == "prodlda" else "em"
        if args.topic_model == "prodlda":
            if args.method != "svi":
                raise CLIError(f"--method: --model prodlda is fitted by svi only (its topics "
                               f"are network weights, with no closed-form EM), got --method "
                               f"{args.method}. Use --method svi, or --model lda.")
            if args.topic_word_prior is not None:
                raise CLIError("--topic-word-prior: applies to --model lda (ProdLDA's topics "
                               "have no Dirichlet prior).")
            if args.num_topics < 2:
                raise CLIError(f"--num-topics: expected at least 2 topics for --model "
                               f"prodlda, got {args.num_topics}.")
        only_with_method(args, "svi", {"--batch-size": args.batch_size, "--lr": args.lr})
        options = given_options(args, "num_steps", "tol")
        if args.method == "svi":
            options.update({**LDA_SVI_DEFAULTS, **given_options(args, "batch_size", "lr")})
        return options

    def load_data(self, args: argparse.Namespace) -> TopicData:
        corpus = load_corpus(args.data, args.vocab)
        data = TopicData(corpus, *_heldout_split(corpus.num_docs, args.heldout_fraction,
                                                 args.seed))
        if data.train_counts.sum() == 0:
            raise CLIError(f"--data {corpus.source}: expected words in the training "
                           f"documents, got {_documents(len(data.train_idx))} without any.")
        return data

    def build_model(self, args: argparse.Namespace, data: TopicData) -> Any:
        import ppgen

        if args.topic_model == "lda":
            return ppgen.LDA(args.num_topics, doc_topic_prior=args.doc_topic_prior,
                             topic_word_prior=args.topic_word_prior,
                             vocabulary=data.corpus.vocabulary)
        return ppgen.ProdLDA(args.num_topics, doc_topic_prior=args.doc_topic_prior,
                             vocabulary=data.corpus.vocabulary)

    def fit_inputs(self, args: argparse.Namespace, data: TopicData) -> tuple[Any, dict]:
        return data.train_counts, {}

    def model_name(self, args: argparse.Namespace) -> str:
        return args.topic_model

    def evaluate(self, run: FitRun) -> dict[str, Any]:
        import ppgen

        data, model = run.data, run.model
        train_counts, held_counts = data.train_counts, data.held_counts
        topic_word = model.topic_word.detach()
        tw = topic_word.cpu().double().numpy()
        words = data.corpus.words()
        num_top = min(LDA_TOP_WORDS, data.corpus.vocab_size)
        npmi = completion = None
        if num_top >= 2:
            npmi = ppgen.evaluation.npmi_coherence(topic_word, train_counts, top_n=num_top)
            npmi = npmi.cpu().numpy()
        if held_counts is not None:
            held = count(len(data.held_idx), "held-out document", "held-out documents")
            with value_errors(f"--heldout-fraction: cannot evaluate the {held} (",
                              ") Hold out more documents."):
                completion = ppgen.evaluation.document_completion(
                    topic_word, held_counts, doc_topic_prior=model.doc_topic_prior,
                    observed_fraction=COMPLETION_OBSERVED_FRACTION, seed=run.args.seed)
        return {"topic_word": tw, "words": words, "num_top": num_top, "npmi": npmi,
                "completion": completion,
                "top_words": [[words[j] for j in row] for row in _top_word_ids(tw, num_top)],
                "train_tokens": int(round(float(train_counts.sum()))),
                "held_tokens": (0 if held_counts is None else
                                int(round(float(held_counts.sum())))),
                "final": float(run.fit.history["objective"][-1])}

    def title(self, run: FitRun) -> str:
        label = "LDA" if run.args.topic_model == "lda" else "ProdLDA"
        return (f"ppgen fit lda: {label}, {count(run.args.num_topics, 'topic', 'topics')}, "
                f"method {run.args.method}")

    def data_lines(self, run: FitRun) -> list[str]:
        args, res, data = run.args, run.results, run.data
        corpus = data.corpus
        vocab_text = ("no --vocab: words shown as w0, w1, ..." if corpus.vocab_source is None
                      else "the corpus's own" if args.data in CORPUS_DATASETS
                      else f"words from {corpus.vocab_source}")
        lines = [f"{_documents(corpus.num_docs)}, vocabulary of "
                 f"{count(corpus.vocab_size, 'word', 'words')} ({vocab_text}), "
                 f"{corpus.num_tokens} tokens, from {corpus.source}",
                 f"train: {_documents(len(data.train_idx))}, {res['train_tokens']} tokens"]
        if res["completion"] is None:
            return [*lines, "held out: none (--heldout-fraction 0)"]
        return [*lines, f"held out: {_documents(len(data.held_idx))}, {res['held_tokens']} "
                f"tokens ({args.heldout_fraction:g} of the documents, drawn with seed "
                f"{args.seed}; their indices are in run.json)"]

    def settings_extra(self, run: FitRun) -> str:
        prior = getattr(run.model, "topic_word_prior", None)
        return f", doc_topic_prior {run.model.doc_topic_prior:g}" + (
            "" if prior is None else f", topic_word_prior {prior:g}")

    def report(self, report: Report, run: FitRun) -> None:
        args, res, data = run.args, run.results, run.data
        completion, npmi, num_top = res["completion"], res["npmi"], res["num_top"]
        num_train, k = len(data.train_idx), args.num_topics
        report.section("Fit")
        rows = []
        if completion is not None:
            ll, n_tok = completion["log_lik"], completion["num_tokens"]
            rows += [
                ["held-out perplexity", f"{completion['perplexity']:.4f} (document "
                 f"completion: the held-out half of the tokens of "
                 f"{_documents(len(data.held_idx))} given the other half; lower is better"
                 + ("; the topics folded in and scored as a mixture, the rule shared by every "
                    "topic model" if args.topic_model == "prodlda" else "") + ")"],
                ["held-out log-likelihood", f"{fmt_total(ll, run.model.dtype)} nats over "
                 f"{n_tok} tokens "
                 f"({ll / n_tok:.4f} per token)"],
            ]
        else:
            rows.append(["held-out perplexity", "not computed (--heldout-fraction 0)"])
        if npmi is not None:
            rows.append(["mean NPMI coherence", f"{float(npmi.mean()):.4f} (top {num_top} "
                         f"words of each topic, co-occurrence in the {num_train} training "
                         "documents; -1 to 1, higher is better)"])
        if args.method == "em":
            rows.append(["final EM objective", f"{fmt_total(res['final'], run.model.dtype)} "
                         "(evidence lower bound, nats)"])
        else:
            batch = run.options.get("batch_size")
            how = (f", estimated from minibatches of {min(batch, num_train)} documents"
                   if batch is not None and batch < num_train else "")
            rows.append(["final SVI loss", f"{fmt_total(res['final'], run.model.dtype)} "
                         f"(negative ELBO{how})"])
        rows += [["convergence", convergence_text(run.fit)],
                 ["elapsed", f"{run.fit.elapsed:.2f} s"]]
        report.table(["quantity", "value"], rows, numeric=False)

        what = ("point estimates" if args.method == "em" else
                "softmax of the decoder weights" if args.topic_model == "prodlda" else
                "posterior means of the topics")
        report.section(f"Topics ({what})")
        report.both(f"The {num_top} most probable words of each topic, most probable first, "
                    "and the topic's NPMI coherence on the training documents.")
        report.both("")
        report.table(["topic", "NPMI", f"top {num_top} words"],
                     [[str(t), "n/a" if npmi is None else f"{npmi[t]:.3f}",
                       ", ".join(res["top_words"][t])] for t in range(k)], numeric=False)

    def figures(self, run: FitRun) -> list[Figure]:
        from .. import plots

        res, npmi = run.results, run.results["npmi"]
        titles = [f"topic {t}" + ("" if npmi is None else f" (NPMI {npmi[t]:.2f})")
                  for t in range(run.args.num_topics)]
        topics = plots.plot_topics(res["topic_word"], vocabulary=res["words"],
                                   num_words=res["num_top"], ncols=5, titles=titles)
        history = plots.plot_history(run.fit, objective_label="evidence lower bound (nats)"
                                     if run.args.method == "em" else None)
        return [Figure("topics.png", topics, "the top words of each topic and their "
                       "probabilities"),
                Figure("history.png", history, "objective per iteration/step")]

    def run_info(self, run: FitRun) -> dict[str, Any]:
        args, res, data, fit, model = run.args, run.results, run.data, run.fit, run.model
        corpus, completion, npmi = data.corpus, res["completion"], res["npmi"]
        return {
            "data": corpus.source, "vocabulary": corpus.vocab_source,
            "num_documents": corpus.num_docs, "vocab_size": corpus.vocab_size,
            "num_tokens": corpus.num_tokens, "seed": fit.seed, "num_topics": args.num_topics,
            "doc_topic_prior": model.doc_topic_prior,
            "topic_word_prior": getattr(model, "topic_word_prior", None),
            "options": run.options, "heldout_fraction": args.heldout_fraction,
            "heldout_documents": [int(i) for i in data.held_idx],
            "heldout_seed": args.seed,
            "completion": None if completion is None else {
                "observed_fraction": COMPLETION_OBSERVED_FRACTION, "seed": args.seed,
                "perplexity": completion["perplexity"], "log_lik": completion["log_lik"],
                "num_tokens": completion["num_tokens"]},
            "npmi_top_n": res["num_top"] if npmi is not None else None,
            "npmi": None if npmi is None else [float(x) for x in npmi],
            "mean_npmi": None if npmi is None else float(npmi.mean()),
            "top_words": res["top_words"],
            "final_objective": res["final"], "converged": fit.converged,
            "num_steps_run": len(fit.history["objective"]) - (args.method == "em"),
            "elapsed": fit.elapsed,
        }

    def run_json(self, info: dict[str, Any]) -> str:
        return json_text(info)

    def sample(self, args: argparse.Namespace, model: Any) -> int:
        """``--length`` words per document: CSV rows of word counts, or a CSR .npz."""
        length = DEFAULT_DOC_LENGTH if args.length is None else args.length
        counts = model.sample(args.num_samples, doc_length=length, seed=args.seed)
        counts = np.rint(counts.detach().cpu().double().numpy()).astype(np.int64)
        if args.out is not None and args.out.lower().endswith(".npz"):
            import scipy.sparse

            path = output_file(args.out)
            m = scipy.sparse.csr_matrix(counts)
            atomic_bytes(path, npz_bytes(data=m.data, indices=m.indices, indptr=m.indptr,
                                         shape=np.array(m.shape, dtype=np.int64)))
            return 0
        out = io.StringIO()
        if not args.no_header:
            vocabulary = getattr(model, "vocabulary", None)
            words = vocabulary or [f"w{j}" for j in range(counts.shape[1])]
            out.write(",".join(csv_cell(w) for w in words) + "\n")
        for row in counts:
            out.write(",".join(str(int(c)) for c in row) + "\n")
        emit(out.getvalue(), args.out)
        return 0

    def score(self, args: argparse.Namespace, model: Any) -> int:
        """One score per document of a CSR .npz, a CSV or .npy count matrix, or 'ap'."""
        spec = args.file
        if spec in CORPUS_DATASETS:
            counts = load_corpus(spec).counts
        elif spec.lower().endswith(".npz"):
            counts = _load_corpus_file(spec)
        else:
            table = load_table(spec)
            table.check_complete()
            counts = table.values
        vocab_size = model.vocab_size
        if vocab_size is not None and counts.shape[1] != vocab_size:
            raise CLIError(f"{spec}: expected {vocab_size} columns (the vocabulary the model "
                           f"was fitted with), got {counts.shape[1]}.")
        with value_errors(f"{spec}: "):  # e.g. fractional or negative counts in a CSV file
            scores = model.score(counts)
        emit_scores(scores, args.out, header=not args.no_header)
        return 0
