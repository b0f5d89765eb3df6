"""``ppgen fit vae``: a variational autoencoder on images (the 8x8 digits, MNIST or a .npy
array), trained on the ELBO or an IWAE bound and evaluated by importance-sampled held-out
log-likelihood; sampling and scoring images."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._fit import (
    Figure,
    FitCommand,
    FitRun,
    emit_scores,
    fit_command,
    fraction,
    positive_float,
    positive_int,
)
from ._io import CLIError, check_magic, count, existing_file, load_table, numpy_file_errors
from ._report import Report, convergence_text, json_text

__all__ = ["LatentFit", "ImageData", "load_images", "IMAGE_DATASETS"]

#: Image data sets of ``ppgen fit vae``.
IMAGE_DATASETS = ("digits", "mnist")
#: Default epochs: the digits (1,437 training images) are cheap, MNIST (50,000) is not.
DEFAULT_EPOCHS = {"digits": 100, "mnist": 10, "file": 100}
#: Importance samples per held-out image of the log-likelihood estimate, and held-out MNIST
#: test images scored (a seeded subset: 1,000 images x 1,000 samples is a minute on a CPU).
DEFAULT_EVAL_SAMPLES = {"digits": 500, "mnist": 1000, "file": 500}
DEFAULT_MNIST_EVAL_SIZE = 1000
#: Shares of the digits (or a file's images) held out and used for validation.
DEFAULT_FRACTION = 0.1
#: Images shown in samples.png and reconstructions.png.
NUM_SAMPLE_IMAGES = 64
NUM_RECONSTRUCTIONS = 12
#: Draws per datum of the held-out ELBO in the report.
ELBO_PARTICLES = 10


@dataclass
class ImageData:
    """The images of a run, split into training, validation and held-out images.

    ``train`` is what ``ppgen.fit`` gets: a tensor, or a DynamicBinarized source (fresh
    binary pixels every minibatch) when intensities are fitted with the Bernoulli
    likelihood; ``validation`` and ``heldout`` are tensors (binarized once, with the seed, in
    that case), so their scores are those of fixed binary images.
    """

    train: Any
    validation: Any
    heldout: Any
    heldout_labels: Any  # LongTensor or None
    image_shape: tuple[int, int]
    source: str
    kind: str  # "digits", "mnist" or "file"
    num_images: int
    binarized: bool
    heldout_index: np.ndarray  # rows of the source (digits, file) or of the MNIST test split
    split_text: str

    @property
    def num_features(self) -> int:
        return self.image_shape[0] * self.image_shape[1]


def _image_shape_of(num_features: int) -> tuple[int, int]:
    side = math.isqrt(num_features)
    return (side, side) if side * side == num_features else (1, num_features)


def _read_npy_images(spec: str) -> tuple[np.ndarray, tuple[int, int]]:
    path = existing_file(spec, IMAGE_DATASETS, (".npy",), lead="--data")
    if path.suffix.lower() != ".npy":
        raise CLIError(f"{spec}: expected a .npy array of images (np.save), got a file ending "
                       f"in {path.suffix.lower() or '(no extension)'!r}.")
    what = "a .npy array of images, shape (N, D) or (N, height, width)"
    check_magic(path, what, ".npy")
    with numpy_file_errors(path, what):
        arr = np.load(path, allow_pickle=False)
    if arr.dtype.kind not in "biuf":
        raise CLIError(f"{path}: expected numeric pixels, got an array of dtype {arr.dtype}.")
    if arr.ndim not in (2, 3) or arr.shape[0] < 1 or math.prod(arr.shape[1:]) < 1:
        raise CLIError(f"{path}: expected {what}, got shape {arr.shape}.")
    shape = tuple(arr.shape[1:]) if arr.ndim == 3 else _image_shape_of(arr.shape[1])
    flat = arr.reshape(arr.shape[0], -1).astype(np.float32)
    bad = ~np.isfinite(flat)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise CLIError(f"{path}: expected finite pixel values, got {flat[i, j]} in image {i}, "
                       f"pixel {j} (0-based; {count(int(bad.sum()), 'such entry', 'such entries')}"
                       " in all).")
    return flat, (int(shape[0]), int(shape[1]))


def _split(num: int, heldout: float, validation: float, seed: int):
    """Sorted training, validation and held-out rows: round(fraction * num) each (at least
    one), drawn without replacement by ``numpy.random.default_rng(seed)``."""
    perm = np.random.default_rng(seed).permutation(num)
    num_held = max(1, int(round(heldout * num)))
    num_val = max(1, int(round(validation * num)))
    if num_held + num_val >= num:
        raise CLIError(f"--heldout-fraction, --validation-fraction: holding out {heldout:g} and "
                       f"{validation:g} of {count(num, 'image', 'images')} leaves none to fit "
                       "on. Use smaller fractions or more images.")
    held = np.sort(perm[:num_held])
    val = np.sort(perm[num_held:num_held + num_val])
    train = np.sort(perm[num_held + num_val:])
    return train, val, held


def load_images(args: argparse.Namespace) -> ImageData:
    """Read ``--data`` (``digits``, ``mnist`` or a .npy file) and split it (module doc)."""
    import torch

    import ppgen
    from ppgen.datasets import DynamicBinarized

    seed, likelihood = args.seed, args.likelihood
    if args.data == "mnist":
        try:
            train, _ = ppgen.datasets.load_mnist("train")
            valid, _ = ppgen.datasets.load_mnist("valid")
            test, test_labels = ppgen.datasets.load_mnist("test")
        except FileNotFoundError as exc:
            raise CLIError(f"--data mnist: {exc}") from None
        size = min(args.eval_size or DEFAULT_MNIST_EVAL_SIZE, len(test))
        held_idx = np.sort(np.random.default_rng(seed).permutation(len(test))[:size])
        index = torch.as_tensor(held_idx)
        held, labels = test[index], test_labels[index]
        kind, source, shape = "mnist", "mnist (MNIST intensities, ../shared/data)", (28, 28)
        split = (f"train: the 50000 images of MNIST's 'train' split; validation: its 10000 "
                 f"'valid' images; held out: {size} of the 10000 test images (drawn with seed "
                 f"{seed}; their indices are in run.json)")
        num = 70000
    else:
        if args.eval_size is not None:
            raise CLIError("--eval-size: applies to --data mnist (the held-out images of "
                           f"--data {args.data} are set by --heldout-fraction).")
        if args.data == "digits":
            images, all_labels = ppgen.datasets.load_digits()
            kind, source, shape = "digits", ("digits (embedded scikit-learn 8x8 digits, "
                                             "intensities pixel/16)"), (8, 8)
        else:
            flat, shape = _read_npy_images(args.data)
            images, all_labels = torch.from_numpy(flat), None
            kind, source = "file", args.data
        num = len(images)
        train_idx, val_idx, held_idx = _split(num, args.heldout_fraction,
                                              args.validation_fraction, seed)
        train, valid = images[torch.as_tensor(train_idx)], images[torch.as_tensor(val_idx)]
        held = images[torch.as_tensor(held_idx)]
        labels = None if all_labels is None else all_labels[torch.as_tensor(held_idx)]
        split = (f"train: {len(train_idx)}, validation: {len(val_idx)}, held out: "
                 f"{len(held_idx)} ({args.validation_fraction:g} and "
                 f"{args.heldout_fraction:g} of the images, drawn with seed {seed}; the "
                 "held-out indices are in run.json)")
    x = torch.cat([train, valid, held])
    binary = bool(((x == 0) | (x == 1)).all())
    if likelihood != "gaussian" and not bool(((x >= 0) & (x <= 1)).all()):
        raise CLIError(f"--data {args.data}: expected pixel values in [0, 1] for --likelihood "
                       f"{likelihood}, got values from {float(x.min()):g} to "
                       f"{float(x.max()):g}. Scale them to [0, 1], or use --likelihood "
                       "gaussian.")
    binarize = likelihood == "bernoulli" and not binary
    if binarize:
        # Dynamic binarization for training; the validation and held-out images are drawn
        # once (seeded), so that every score is that of fixed binary images.
        train = DynamicBinarized(train)
        valid = DynamicBinarized(valid).fixed(seed)
        held = DynamicBinarized(held).fixed(seed + 1)
    return ImageData(train, valid, held, labels, shape, source, kind, num, binarize,
                     held_idx, split)


def _hidden_dims(text: str) -> tuple[int, ...]:
    if text.strip() in ("", "none"):
        return ()
    try:
        dims = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers (e.g. "
                                         f"200,200) or 'none', got {text!r}") from None
    if any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return dims


def _bound_name(args: argparse.Namespace) -> str:
    return "ELBO" if args.iwae_k is None else f"IWAE-{args.iwae_k} bound"


def _run_json_value(run_dir: str, key: str) -> Any:
    import json

    path = Path(run_dir)
    info = path / "run.json" if path.is_dir() else path.with_name("run.json")
    try:
        return json.loads(info.read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError):
        return None


@fit_command
class LatentFit(FitCommand):
    name = "vae"
    help = "variational autoencoder (images)"
    description = (
        "Fit a variational autoencoder by SVI on its ELBO (or, with --iwae-k, on the\n"
        "importance-weighted bound) on all images but a validation and a held-out part.\n"
        "Prints the held-out log-likelihood (importance-sampled, with its standard error)\n"
        "and writes report.md, history.png, samples.png, reconstructions.png, latent.png,\n"
        "model.pt and run.json into --out (only once the fit succeeded).")
    epilog = (
        "data:\n"
        "  digits    scikit-learn's 1797 8x8 digits (embedded), intensities in [0, 1]\n"
        "  mnist     MNIST from ../shared/data (or PPGEN_DATA_DIR): 50000 train, 10000\n"
        "            validation, --eval-size test images held out\n"
        "  FILE.npy  an array of shape (N, D) or (N, height, width); square D are drawn as\n"
        "            square images\n"
        "With --likelihood bernoulli (the default) intensities are binarized: afresh for\n"
        "every minibatch (dynamic binarization), once (seeded) for the validation and\n"
        "held-out images.\n"
        "\nevaluation:\n"
        "  log p(x) of each held-out image is estimated by importance sampling from the\n"
        "  encoder (the IWAE bound with --eval-samples draws); the report gives the mean,\n"
        "  its standard error over the images and the Monte Carlo error of that mean.\n"
        "\nexamples:\n"
        "  ppgen fit vae --data digits --latent-dim 2 --num-epochs 100 --out runs/vae\n"
        "  ppgen fit vae --data mnist --latent-dim 16 --iwae-k 5 --checkpoint ckpt "
        "--out runs/mnist\n"
        "  ppgen sample runs/vae -n 16\n"
        "  ppgen score runs/vae images.npy")
    data_default = "digits"
    data_help = ("'digits' (embedded 8x8 digits), 'mnist' (../shared/data) or a .npy array of "
                 "images (default: %(default)s)")
    seed_help = "random seed of the fit, the splits and the evaluation (default: %(default)s)"
    model_names = ("vae",)
    inference_data = False
    run_json_description = "the command, settings, results and held-out images"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--latent-dim", type=positive_int, default=16, metavar="D",
                            help="dimension of z (default: %(default)s)")
        parser.add_argument("--hidden-dims", type=_hidden_dims, default=(200, 200),
                            metavar="H1,H2", help="widths of the encoder's hidden layers, "
                            "comma separated (the decoder's are reversed); 'none' for linear "
                            "networks (default: 200,200)")
        parser.add_argument("--likelihood", choices=("bernoulli", "continuous_bernoulli",
                                                     "gaussian"), default="bernoulli",
                            help="p(x | z) (default: %(default)s; intensities are binarized, "
                            "see below)")
        parser.add_argument("--num-epochs", type=positive_int, metavar="E",
                            help="most passes over the training images; training stops "
                            "earlier once the validation ELBO has not improved in 5 epochs "
                            "(default: 100, mnist 10)")
        parser.add_argument("--batch-size", type=positive_int, default=100, metavar="B",
                            help="images per step (default: %(default)s)")
        parser.add_argument("--lr", type=positive_float, default=1e-3, metavar="LR",
                            help="learning rate of Adam (default: %(default)s)")
        parser.add_argument("--iwae-k", type=positive_int, metavar="K",
                            help="train the importance-weighted bound with K samples per "
                            "image (Burda et al. 2016) instead of the ELBO")
        parser.add_argument("--eval-samples", type=positive_int, metavar="K",
                            help="importance samples per held-out image of the log-likelihood "
                            "(default: 500, mnist 1000)")
        parser.add_argument("--eval-size", type=positive_int, metavar="N",
                            help=f"mnist: test images held out and scored (default "
                            f"{DEFAULT_MNIST_EVAL_SIZE}, drawn with --seed)")
        parser.add_argument("--heldout-fraction", type=fraction, metavar="F",
                            help="digits and files: share of the images held out and scored "
                            f"(default {DEFAULT_FRACTION})")
        parser.add_argument("--validation-fraction", type=fraction, metavar="F",
                            help="digits and files: share of the images whose ELBO is tracked "
                            f"every epoch, for early stopping (default {DEFAULT_FRACTION})")
        parser.add_argument("--checkpoint", metavar="DIR", help="write a checkpoint "
                            "(DIR/checkpoint.pt) every epoch and at the end")
        parser.add_argument("--resume", metavar="DIR", help="continue an interrupted run from "
                            "the checkpoint in DIR (same data and settings)")

    def fit_options(self, args: argparse.Namespace) -> dict[str, Any]:
        args.method = "svi"
        kind = args.data if args.data in IMAGE_DATASETS else "file"
        fractions = (("--heldout-fraction", "heldout_fraction"),
                     ("--validation-fraction", "validation_fraction"))
        if kind == "mnist":
            given = [flag for flag, key in fractions if getattr(args, key) is not None]
            if given:
                raise CLIError(f"{', '.join(given)}: applies to --data digits and files; "
                               "MNIST has fixed splits (use --eval-size for the number of "
                               "held-out test images).")
        else:
            for flag, key in fractions:
                if getattr(args, key) is None:
                    setattr(args, key, DEFAULT_FRACTION)
                elif getattr(args, key) == 0:
                    raise CLIError(f"{flag}: expected a share in (0, 1), got 0 (the command "
                                   "needs held-out and validation images).")
        if args.num_epochs is None:
            args.num_epochs = DEFAULT_EPOCHS[kind]
        if args.eval_samples is None:
            args.eval_samples = DEFAULT_EVAL_SAMPLES[kind]
        if args.resume is not None:
            from ppgen.inference.checkpoint import checkpoint_file

            if not checkpoint_file(args.resume).is_file():
                raise CLIError(f"--resume: expected a directory holding a checkpoint "
                               f"(checkpoint.pt, written by --checkpoint), got "
                               f"{args.resume!r}.")
        if args.checkpoint is not None and Path(args.checkpoint).is_file():
            raise CLIError(f"--checkpoint: expected a directory, got {args.checkpoint!r}, "
                           "which is a file.")
        options: dict[str, Any] = {"num_epochs": args.num_epochs,
                                   "batch_size": args.batch_size, "lr": args.lr}
        if args.iwae_k is not None:
            options.update(iwae=True, num_particles=args.iwae_k)
        for key in ("checkpoint", "resume"):
            if getattr(args, key) is not None:
                options[key] = getattr(args, key)
        return options

    def load_data(self, args: argparse.Namespace) -> ImageData:
        return load_images(args)

    def build_model(self, args: argparse.Namespace, data: ImageData) -> Any:
        import ppgen

        return ppgen.VAE(data.num_features, latent_dim=args.latent_dim,
                         hidden_dims=args.hidden_dims, likelihood=args.likelihood)

    def fit_inputs(self, args: argparse.Namespace, data: ImageData) -> tuple[Any, dict]:
        return data.train, {"validation_data": data.validation}

    def evaluate(self, run: FitRun) -> dict[str, Any]:
        import torch

        args, model, data = run.args, run.model, run.data
        held = data.heldout
        lp, se = model.log_prob(held, num_samples=args.eval_samples, seed=args.seed,
                                return_stderr=True)
        lp, se = lp.detach().double().cpu(), se.detach().double().cpu()
        n = lp.shape[0]
        elbo = model.elbo(held, num_particles=ELBO_PARTICLES, seed=args.seed)
        elbo = elbo.detach().double().cpu()
        hist = run.fit.history
        val = hist.get("eval_val_elbo", np.zeros(0))
        with torch.no_grad():
            z = model.transform(held).cpu()
            recon = model.reconstruct(held[:NUM_RECONSTRUCTIONS]).cpu()
            samples = model.sample(NUM_SAMPLE_IMAGES, seed=args.seed, mean=True).cpu()
        return {
            "log_lik": float(lp.mean()),
            "log_lik_se": float(lp.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.nan,
            "log_lik_mc_se": float(se.square().sum().sqrt() / n),
            "elbo": float(elbo.mean()),
            "num_heldout": n,
            "final_loss": float(hist["objective"][-1]) if len(hist.get("objective", [])) else
            math.nan,
            "final_val_elbo": float(val[-1]) if len(val) else None,
            "best_val_elbo": float(np.max(val)) if len(val) else None,
            "num_steps": int(len(hist.get("objective", []))),
            "z": z, "recon": recon, "samples": samples,
        }

    def title(self, run: FitRun) -> str:
        args = run.args
        return (f"ppgen fit vae: latent dim {args.latent_dim}, hidden "
                f"{','.join(map(str, args.hidden_dims)) or 'none'}, {args.likelihood} "
                f"likelihood, trained on the {_bound_name(args)}")

    def data_lines(self, run: FitRun) -> list[str]:
        data = run.data
        h, w = data.image_shape
        lines = [f"{count(data.num_images, 'image', 'images')} of {h}x{w} pixels from "
                 f"{data.source}", data.split_text]
        if data.binarized:
            lines.append("binarized: training images afresh for every minibatch (dynamic "
                         "binarization), validation and held-out images once (seeded)")
        return lines

    def settings_extra(self, run: FitRun) -> str:
        return f", {sum(p.numel() for p in run.model.parameters())} network weights"

    def report(self, report: Report, run: FitRun) -> None:
        args, res = run.args, run.results
        n, k = res["num_heldout"], args.eval_samples
        report.section("Fit")
        ll, se, mc = res["log_lik"], res["log_lik_se"], res["log_lik_mc_se"]
        rows = [
            ["held-out log-likelihood", f"{ll:.3f} ± {se:.3f} nats per image (mean over "
             f"{count(n, 'held-out image', 'held-out images')} ± its standard error over "
             f"the images; importance sampling with {k} samples per image from the encoder, "
             f"Monte Carlo error of the mean ± {mc:.3f})"],
            ["held-out ELBO", f"{res['elbo']:.3f} nats per image ({ELBO_PARTICLES} draws per "
             f"image; the gap to the log-likelihood, {ll - res['elbo']:.3f} nats, is the "
             "mean KL(q(z | x) || p(z | x)) of the encoder's approximation, up to the "
             "estimators' errors)"],
        ]
        if res["final_val_elbo"] is not None:
            rows.append(["validation ELBO", f"{res['final_val_elbo']:.3f} nats per image at "
                         f"the last epoch (best {res['best_val_elbo']:.3f})"])
        rows += [
            ["final training loss", f"{res['final_loss']:.3f} (negative {_bound_name(args)} "
             f"of the last minibatch, nats per image)"],
            ["convergence", convergence_text(run.fit).replace(
                "SVI steps", f"SVI steps (at most {count(args.num_epochs, 'epoch', 'epochs')}"
                f" of {args.batch_size} images per step; early stopping on the validation "
                "ELBO)")],
            ["elapsed", f"{run.fit.elapsed:.2f} s"],
        ]
        if args.resume is not None:
            rows.append(["resumed", f"from the checkpoint in {args.resume} (the history "
                         "above includes the steps before it)"])
        report.table(["quantity", "value"], rows, numeric=False)

    def figures(self, run: FitRun) -> list[Figure]:
        import torch

        from .. import plots

        args, res, data = run.args, run.results, run.data
        shape = data.image_shape
        history = plots.plot_elbo_history(run.fit, train_label=f"training {_bound_name(args)}")
        ncols = 8 if shape[0] > 1 else 1
        samples = plots.plot_image_grid(res["samples"], shape, ncols=ncols, title=(
            f"{NUM_SAMPLE_IMAGES} samples: decoder means E[x | z], z ~ N(0, I)"))
        originals = data.heldout[:NUM_RECONSTRUCTIONS].detach().cpu()
        pair = torch.cat([originals.reshape(len(originals), -1),
                          res["recon"].reshape(len(originals), -1)])
        recon = plots.plot_image_grid(pair, shape, ncols=len(originals),
                                      row_labels=["held-out", "reconstructed"],
                                      title="Held-out images and their reconstructions")
        latent = plots.plot_latent_space(
            res["z"], data.heldout_labels, label_name="digit" if data.kind != "file" else
            "label", title=f"Encoder means of the {len(res['z'])} held-out images" + (
                " (first two principal components)" if args.latent_dim > 2 else ""))
        return [
            Figure("history.png", history, "training bound per step and validation ELBO per "
                   "epoch (nats per image)"),
            Figure("samples.png", samples, f"{NUM_SAMPLE_IMAGES} new images (decoder means "
                   "at z drawn from the prior)"),
            Figure("reconstructions.png", recon, "held-out images (top) and their "
                   "reconstructions E[x | z = encoder mean] (bottom)"),
            Figure("latent.png", latent, "encoder means of the held-out images" + (
                ", coloured by label" if data.heldout_labels is not None else "") + (
                "; first two principal components" if args.latent_dim > 2 else "")),
        ]

    def run_info(self, run: FitRun) -> dict[str, Any]:
        args, res, data, fit = run.args, run.results, run.data, run.fit
        options = {k: v for k, v in run.options.items()}
        return {
            "data": data.source, "image_shape": list(data.image_shape),
            "binarized": data.binarized, "seed": fit.seed, "latent_dim": args.latent_dim,
            "hidden_dims": list(args.hidden_dims), "likelihood": args.likelihood,
            "objective": _bound_name(args), "options": options,
            "heldout_fraction": None if data.kind == "mnist" else args.heldout_fraction,
            "validation_fraction": None if data.kind == "mnist" else args.validation_fraction,
            "heldout_images": [int(i) for i in data.heldout_index],
            "heldout_of": "mnist test split" if data.kind == "mnist" else "the data's rows",
            "eval_samples": args.eval_samples,
            "log_likelihood": res["log_lik"], "log_likelihood_se": res["log_lik_se"],
            "log_likelihood_mc_se": res["log_lik_mc_se"], "heldout_elbo": res["elbo"],
            "final_validation_elbo": res["final_val_elbo"],
            "num_steps_run": res["num_steps"], "converged": fit.converged,
            "elapsed": fit.elapsed,
        }

    def run_json(self, info: dict[str, Any]) -> str:
        return json_text(info)

    def score(self, args: argparse.Namespace, model: Any) -> int:
        """One score per image of a .npy ((N, D) or (N, height, width)) or .csv file: the
        negative log-likelihood estimated with the run's ``--eval-samples`` draws."""
        if Path(args.file).suffix.lower() == ".npy":
            x, _ = _read_npy_images(args.file)
        else:
            table = load_table(args.file)
            table.check_complete()
            x = table.values
        if x.shape[1] != model.num_features:
            raise CLIError(f"{args.file}: expected {model.num_features} pixels per image, as "
                           f"the model was fitted with, got {x.shape[1]}.")
        if model.likelihood != "gaussian" and ((x < 0) | (x > 1)).any():
            raise CLIError(f"{args.file}: expected pixel values in [0, 1] for the model's "
                           f"{model.likelihood} likelihood, got values from {x.min():g} to "
                           f"{x.max():g}.")
        num_samples = _run_json_value(args.dir, "eval_samples")
        if not isinstance(num_samples, int) or num_samples < 1:
            num_samples = DEFAULT_EVAL_SAMPLES["file"]
        emit_scores(model.score(x, num_samples=num_samples), args.out,
                    header=not args.no_header)
        return 0
