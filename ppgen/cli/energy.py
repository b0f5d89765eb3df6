"""``ppgen fit rbm|dbn|dbm``: Boltzmann machines on binary images (the fixed binarized
MNIST, the 8x8 digits or a .npy array), trained by contrastive divergence and evaluated by
an AIS held-out log-likelihood (with its standard error; RAISE for the RBM and DBM);
sampling and scoring images."""

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
    nonnegative_float,
    positive_float,
    positive_int,
)
from ._io import CLIError, check_magic, count, existing_file, load_table, numpy_file_errors
from ._report import Report, convergence_text, json_text

__all__ = ["EnergyFit", "RBMFit", "DBNFit", "DBMFit", "BinaryImages", "load_binary_images"]

#: Data sets of ``ppgen fit rbm|dbn|dbm``.
ENERGY_DATASETS = ("binarized-mnist", "digits")
#: Default subset sizes of the fixed binarized MNIST (kept small so that a default run is
#: quick on a CPU; --num-train etc. take more, up to 50000 / 10000 / 10000).
DEFAULT_MNIST_SIZES = {"train": 5000, "valid": 1000, "test": 1000}
DEFAULT_FRACTION = 0.1
NUM_SAMPLE_IMAGES = 64
NUM_FILTERS = 64
#: RAISE (reverse AIS) draws per held-out image and the held-out images it runs on (it is
#: per datum, so it runs on a subset).
RAISE_SAMPLES = 10
RAISE_IMAGES = 20


@dataclass
class BinaryImages:
    """The binary images of a run: training, validation and held-out rows (tensors)."""

    train: Any
    validation: Any
    heldout: Any
    image_shape: tuple[int, int]
    source: str
    kind: str  # "binarized-mnist", "digits" or "file"
    num_images: int
    split_text: str
    heldout_index: Any = None  # rows of the data (digits, files) or of MNIST's test split

    @property
    def num_features(self) -> int:
        return self.image_shape[0] * self.image_shape[1]


def _split(num: int, heldout: float, validation: float, seed: int):
    perm = np.random.default_rng(seed).permutation(num)
    num_held = max(1, int(round(heldout * num)))
    num_val = max(1, int(round(validation * num)))
    if num_held + num_val >= num:
        raise CLIError(f"--heldout-fraction, --validation-fraction: holding out {heldout:g} and "
                       f"{validation:g} of {count(num, 'image', 'images')} leaves none to fit "
                       "on. Use smaller fractions or more images.")
    return (np.sort(perm[num_held + num_val:]), np.sort(perm[num_held:num_held + num_val]),
            np.sort(perm[:num_held]))


def _read_npy(spec: str) -> tuple[np.ndarray, tuple[int, int]]:
    path = existing_file(spec, ENERGY_DATASETS, (".npy",), lead="--data")
    if path.suffix.lower() != ".npy":
        raise CLIError(f"{spec}: expected a .npy array of binary images (np.save), got a file "
                       f"ending in {path.suffix.lower() or '(no extension)'!r}.")
    what = "a .npy array of binary images, shape (N, D) or (N, height, width)"
    check_magic(path, what, ".npy")
    with numpy_file_errors(path, what):
        arr = np.load(path, allow_pickle=False)
    if arr.dtype.kind not in "biuf" or arr.ndim not in (2, 3) or arr.shape[0] < 3 or \
            math.prod(arr.shape[1:]) < 1:
        raise CLIError(f"{path}: expected {what} (at least 3 images), got shape {arr.shape} "
                       f"of dtype {arr.dtype}.")
    flat = arr.reshape(arr.shape[0], -1).astype(np.float32)
    if arr.ndim == 3:
        shape = (int(arr.shape[1]), int(arr.shape[2]))
    else:
        side = math.isqrt(flat.shape[1])
        shape = (side, side) if side * side == flat.shape[1] else (1, flat.shape[1])
    return flat, shape


def load_binary_images(args: argparse.Namespace) -> BinaryImages:
    """Read ``--data`` and split it: MNIST's own splits (seeded subsets of them), otherwise
    ``--validation-fraction`` and ``--heldout-fraction`` of the rows drawn with ``--seed``."""
    import torch

    import ppgen

    seed = args.seed
    if args.data == "binarized-mnist":
        parts, held_idx = [], None
        for split, key in (("train", "num_train"), ("valid", "num_valid"), ("test", "num_test")):
            try:
                x, _ = ppgen.datasets.load_mnist(split, binarize="fixed")  # type: ignore
            except FileNotFoundError as exc:
                raise CLIError(f"--data binarized-mnist: {exc}") from None
            size = min(getattr(args, key) or DEFAULT_MNIST_SIZES[split], len(x))
            idx = np.sort(np.random.default_rng(seed).permutation(len(x))[:size])
            parts.append(x[torch.as_tensor(idx)])
            held_idx = idx
        train, valid, held = parts
        return BinaryImages(
            train, valid, held, (28, 28), "binarized-mnist (the fixed binarization of "
            "Larochelle & Murray, ../shared/data)", "binarized-mnist", 70000,
            f"train: {len(train)} of the 50000 training images, validation: {len(valid)} of "
            f"the 10000 validation images, held out: {len(held)} of the 10000 test images "
            f"(subsets drawn with seed {seed})", held_idx)
    if args.data == "digits":
        images, _ = ppgen.datasets.load_digits()
        images = (images >= 0.5).to(torch.float32)
        shape, kind = (8, 8), "digits"
        source = "digits (embedded scikit-learn 8x8 digits, binarized at intensity 0.5)"
    else:
        flat, shape = _read_npy(args.data)
        bad = ~((flat == 0) | (flat == 1))
        if bad.any():
            i, j = (int(v) for v in np.argwhere(bad)[0])
            raise CLIError(f"{args.data}: expected binary pixels (0 or 1) for Bernoulli "
                           f"visible units, got {flat[i, j]:g} in image {i}, pixel {j} "
                           "(0-based). Binarize the images first (e.g. x > 0.5).")
        images, kind, source = torch.from_numpy(flat), "file", args.data
    num = len(images)
    tr, va, he = _split(num, args.heldout_fraction, args.validation_fraction, seed)
    return BinaryImages(
        images[torch.as_tensor(tr)], images[torch.as_tensor(va)], images[torch.as_tensor(he)],
        shape, source, kind, num,
        f"train: {len(tr)}, validation: {len(va)}, held out: {len(he)} "
        f"({args.validation_fraction:g} and {args.heldout_fraction:g} of the images, drawn "
        f"with seed {seed})", he)


def _layers(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers (e.g. "
                                         f"500,500), got {text!r}") from None
    if not dims or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return dims


class EnergyFit(FitCommand):
    """The shared part of ``ppgen fit rbm``, ``dbn`` and ``dbm``."""

    data_default = "digits"
    data_help = ("'binarized-mnist' (fixed binarization, ../shared/data), 'digits' (embedded "
                 "8x8 digits, binarized) or a .npy array of 0/1 images (default: %(default)s)")
    seed_help = "random seed of the fit, the splits, AIS and the samples (default: %(default)s)"
    inference_data = False
    run_json_description = "the command, settings and results"
    #: Default hidden layers (--num-hidden / --layers).
    kind_text = ""

    def add_layer_arguments(self, parser: argparse.ArgumentParser) -> None:
        raise NotImplementedError

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        self.add_layer_arguments(parser)
        parser.add_argument("--num-epochs", type=positive_int, default=10, metavar="E",
                            help="passes over the training images (default: %(default)s)")
        parser.add_argument("--batch-size", type=positive_int, default=100, metavar="B",
                            help="images per step (default: %(default)s)")
        parser.add_argument("--lr", type=positive_float, default=0.02, metavar="LR",
                            help="learning rate of the CD updates (default: %(default)s)")
        parser.add_argument("--momentum", type=fraction, default=0.9, metavar="M",
                            help="momentum after the first 5 epochs (0.5 before; default: "
                            "%(default)s)")
        parser.add_argument("--weight-decay", type=nonnegative_float, default=1e-4,
                            metavar="L2", help="L2 weight decay (default: %(default)s)")
        parser.add_argument("--ais-samples", type=positive_int, default=100, metavar="N",
                            help="AIS chains of the held-out log Z (default: %(default)s)")
        parser.add_argument("--ais-betas", type=positive_int, default=500, metavar="K",
                            help="AIS temperatures (default: %(default)s)")
        parser.add_argument("--num-train", type=positive_int, metavar="N",
                            help="binarized-mnist: training images used (default "
                            f"{DEFAULT_MNIST_SIZES['train']}, at most 50000)")
        parser.add_argument("--num-valid", type=positive_int, metavar="N",
                            help="binarized-mnist: validation images (default "
                            f"{DEFAULT_MNIST_SIZES['valid']})")
        parser.add_argument("--num-test", type=positive_int, metavar="N",
                            help="binarized-mnist: held-out test images scored (default "
                            f"{DEFAULT_MNIST_SIZES['test']})")
        parser.add_argument("--heldout-fraction", type=fraction, metavar="F",
                            help=f"digits and files: share held out (default {DEFAULT_FRACTION})")
        parser.add_argument("--validation-fraction", type=fraction, metavar="F",
                            help="digits and files: share whose reconstruction error is "
                            f"tracked every epoch (default {DEFAULT_FRACTION})")

    def model_options(self, args: argparse.Namespace) -> dict[str, Any]:
        return {}

    def fit_options(self, args: argparse.Namespace) -> dict[str, Any]:
        args.method = "svi"
        fractions = (("--heldout-fraction", "heldout_fraction"),
                     ("--validation-fraction", "validation_fraction"))
        sizes = (("--num-train", "num_train"), ("--num-valid", "num_valid"),
                 ("--num-test", "num_test"))
        if args.data == "binarized-mnist":
            given = [flag for flag, key in fractions if getattr(args, key) is not None]
            if given:
                raise CLIError(f"{', '.join(given)}: applies to --data digits and files; "
                               "binarized-mnist has fixed splits (use --num-train, --num-valid "
                               "and --num-test).")
        else:
            given = [flag for flag, key in sizes if getattr(args, key) is not None]
            if given:
                raise CLIError(f"{', '.join(given)}: applies to --data binarized-mnist, got "
                               f"--data {args.data} (use --heldout-fraction and "
                               "--validation-fraction).")
            for flag, key in fractions:
                if getattr(args, key) is None:
                    setattr(args, key, DEFAULT_FRACTION)
                elif getattr(args, key) == 0:
                    raise CLIError(f"{flag}: expected a share in (0, 1), got 0 (the command "
                                   "needs held-out and validation images).")
        return {"num_epochs": args.num_epochs, "batch_size": args.batch_size, "lr": args.lr,
                "momentum": args.momentum, "weight_decay": args.weight_decay,
                **self.model_options(args)}

    def load_data(self, args: argparse.Namespace) -> BinaryImages:
        return load_binary_images(args)

    #: Whether the model's objective scores validation data (the RBM's: reconstruction
    #: error; the DBN's and DBM's stages have no evaluate()).
    validates = False

    def fit_inputs(self, args: argparse.Namespace, data: BinaryImages) -> tuple[Any, dict]:
        return data.train, ({"validation_data": data.validation} if self.validates else {})

    def heldout_log_prob(self, run: FitRun) -> tuple[Any, float]:
        raise NotImplementedError

    def filters(self, model: Any) -> Any:
        return model.weights_0.detach().cpu().T

    def evaluate(self, run: FitRun) -> dict[str, Any]:
        import torch

        args, model, data = run.args, run.model, run.data
        lp, lz_se = self.heldout_log_prob(run)
        lp = lp.detach().double().cpu()
        n = lp.shape[0]
        hist = run.fit.history
        recon = hist.get("eval_reconstruction_error", np.zeros(0))
        with torch.no_grad():
            samples = model.sample(NUM_SAMPLE_IMAGES, seed=args.seed, num_burnin=1000,
                                   mean=True).cpu()
        results = {
            "log_lik": float(lp.mean()),
            "log_lik_se": float(lp.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.nan,
            "log_z_se": lz_se, "num_heldout": n,
            "final_recon": float(recon[-1]) if len(recon) else None,
            "num_steps": int(len(hist.get("objective", []))),
            "samples": samples, "filters": self.filters(model),
            "base_rate": self.base_rate(data),
        }
        results.update(self.extra_results(run))
        return results

    def base_rate(self, data: BinaryImages) -> float:
        """Held-out log-likelihood of independent pixels at the training marginals (a
        baseline on the same nats scale)."""
        import torch

        p = data.train.double().mean(0).clamp(1e-3, 1 - 1e-3)
        x = data.heldout.double()
        return float((x * torch.log(p) + (1 - x) * torch.log1p(-p)).sum(-1).mean())

    def extra_results(self, run: FitRun) -> dict[str, Any]:
        return {}

    def bound_text(self) -> str:
        return "log-likelihood"

    def data_lines(self, run: FitRun) -> list[str]:
        data = run.data
        h, w = data.image_shape
        return [f"{count(data.num_images, 'image', 'images')} of {h}x{w} binary pixels from "
                f"{data.source}", data.split_text]

    def extra_rows(self, run: FitRun) -> list[list[str]]:
        return []

    def report(self, report: Report, run: FitRun) -> None:
        args, res = run.args, run.results
        report.section("Fit")
        held = count(res["num_heldout"], "held-out image", "held-out images")
        rows = [
            [f"held-out {self.bound_text()}", f"{res['log_lik']:.3f} ± {res['log_lik_se']:.3f} "
             f"nats per image (mean over {held} ± its standard error over the images); log Z "
             f"by AIS with {args.ais_samples} chains and {args.ais_betas} temperatures, its "
             f"standard error ± {res['log_z_se']:.3f} nats (shared by all images)"],
            *self.extra_rows(run),
            ["baseline", f"{res['base_rate']:.3f} nats per image: independent pixels at the "
             "training images' marginals"],
        ]
        if res["final_recon"] is not None:
            rows.append(["validation reconstruction error", f"{res['final_recon']:.3f} "
                         "(squared error per image of the mean-field reconstruction, last "
                         "epoch)"])
        rows += [
            ["convergence", convergence_text(run.fit)],
            ["elapsed", f"{run.fit.elapsed:.2f} s"],
        ]
        report.table(["quantity", "value"], rows, numeric=False)

    def figures(self, run: FitRun) -> list[Figure]:
        import matplotlib.pyplot as plt

        from .. import plots

        res, data, fit = run.results, run.data, run.fit
        shape = data.image_shape
        ncols = 8 if shape[0] > 1 else 1
        filt = res["filters"][:NUM_FILTERS]
        lo = filt.amin(1, keepdim=True)
        hi = filt.amax(1, keepdim=True)
        filt = (filt - lo) / (hi - lo).clamp_min(1e-12)
        filters = plots.plot_image_grid(filt, shape, ncols=ncols, cmap="gray", title=(
            f"Filters: weights of the first {len(filt)} hidden units of the bottom layer "
            "(each scaled to [0, 1])"))
        samples = plots.plot_image_grid(res["samples"], shape, ncols=ncols, title=(
            f"{NUM_SAMPLE_IMAGES} samples: block Gibbs, 1000 sweeps of burn-in (visible "
            "probabilities)"))
        hist = fit.history
        fig, ax = plt.subplots(figsize=(6, 3.5))
        if "eval_reconstruction_error" in hist:
            ax.plot(hist["eval_step"], hist["eval_reconstruction_error"], marker="o",
                    label="validation")
        ax.plot(hist["step"], hist["objective"], alpha=0.5, label="training minibatch")
        ax.set_xlabel("step")
        ax.set_ylabel("reconstruction error per image")
        ax.set_title("Reconstruction error over training")
        ax.legend()
        fig.tight_layout()
        return [
            Figure("filters.png", filters, "weights of the bottom layer's hidden units as "
                   "images"),
            Figure("samples.png", samples, f"{NUM_SAMPLE_IMAGES} samples from the model "
                   "(block Gibbs)"),
            Figure("history.png", fig, "reconstruction error per step (training minibatch) "
                   "and per epoch (validation)"),
        ]

    def run_info(self, run: FitRun) -> dict[str, Any]:
        args, res, data, fit = run.args, run.results, run.data, run.fit
        info = {
            "data": data.source, "image_shape": list(data.image_shape), "seed": fit.seed,
            **self.config_info(args), "options": dict(run.options),
            "ais_samples": args.ais_samples, "ais_betas": args.ais_betas,
            "num_heldout": res["num_heldout"],
            "heldout_images": [int(i) for i in data.heldout_index],
            "heldout_of": ("the binarized-mnist test split" if data.kind == "binarized-mnist"
                           else "the data's rows"),
            "log_likelihood": res["log_lik"], "log_likelihood_se": res["log_lik_se"],
            "log_z_se": res["log_z_se"], "base_rate_log_likelihood": res["base_rate"],
            "final_validation_reconstruction_error": res["final_recon"],
            "num_steps_run": res["num_steps"], "converged": fit.converged,
            "elapsed": fit.elapsed,
        }
        for key in ("raise_log_likelihood", "raise_se", "raise_num_images"):
            if key in res:
                info[key] = res[key]
        return info

    def config_info(self, args: argparse.Namespace) -> dict[str, Any]:
        return {}

    def run_json(self, info: dict[str, Any]) -> str:
        return json_text(info)

    def score(self, args: argparse.Namespace, model: Any) -> int:
        """One score per image of a .npy or .csv file: -log p(v) in nats (the DBN's and
        DBM's: minus the variational lower bound), log Z by AIS."""
        import torch

        if Path(args.file).suffix.lower() == ".npy":
            x, _ = _read_npy(args.file)
        else:
            table = load_table(args.file)
            table.check_complete()
            x = np.asarray(table.values, dtype=np.float32)
        if x.shape[1] != model.num_visible:
            raise CLIError(f"{args.file}: expected {model.num_visible} pixels per image, as "
                           f"the model was fitted with, got {x.shape[1]}.")
        if not ((x == 0) | (x == 1)).all():
            raise CLIError(f"{args.file}: expected binary pixels (0 or 1) for the model's "
                           f"Bernoulli visible units, got values from {x.min():g} to "
                           f"{x.max():g}. Binarize the images first (e.g. x > 0.5).")
        emit_scores(model.score(torch.from_numpy(x)), args.out, header=not args.no_header)
        return 0


def add_raise_argument(parser: argparse.ArgumentParser) -> None:
    """``--raise-images`` of the commands whose model has RAISE (the RBM and the DBM)."""
    parser.add_argument("--raise-images", type=int, default=RAISE_IMAGES, metavar="N",
                        help="held-out images also scored by RAISE (reverse AIS, "
                        f"{RAISE_SAMPLES} chains each); 0: none (default: %(default)s)")


def check_raise_argument(args: argparse.Namespace) -> None:
    if args.raise_images < 0:
        raise CLIError(f"--raise-images: expected an integer >= 0, got {args.raise_images}.")


def raise_results(run: FitRun, label: str) -> dict[str, Any]:
    """RAISE on the first ``--raise-images`` held-out images, beside the model's default
    held-out estimate (``label``: "AIS" or "the bound") on the same images."""
    args = run.args
    num = min(args.raise_images, len(run.data.heldout))
    if num == 0:
        return {}
    x = run.data.heldout[:num]
    lp = run.model.log_prob(x, method="raise", num_samples=RAISE_SAMPLES,
                            num_betas=args.ais_betas, seed=args.seed).double().cpu()
    same = run.model.log_prob(x, num_samples=args.ais_samples, num_betas=args.ais_betas,
                              seed=args.seed).double().cpu()
    return {"raise_log_likelihood": float(lp.mean()),
            "raise_se": float(lp.std() / math.sqrt(num)) if num > 1 else math.nan,
            "raise_ais_same_images": float(same.mean()), "raise_num_images": num,
            "raise_compared_with": label}


def raise_rows(run: FitRun) -> list[list[str]]:
    res = run.results
    if "raise_log_likelihood" not in res:
        return []
    return [["RAISE (reverse AIS)", f"{res['raise_log_likelihood']:.3f} ± "
             f"{res['raise_se']:.3f} nats per image on the first "
             f"{res['raise_num_images']} held-out images ({RAISE_SAMPLES} reverse chains "
             f"each; {res['raise_compared_with']} on the same images: "
             f"{res['raise_ais_same_images']:.3f}). " + (
                 "In expectation AIS log Z is low (its log-likelihood high) and RAISE low "
                 "for a model trained towards maximum likelihood, so the two bracket log p; "
                 "after short CD training RAISE can land above it"
                 if res["raise_compared_with"] == "AIS" else
                 "RAISE estimates log p itself (low in expectation for a model trained "
                 "towards maximum likelihood); the bound is below log p up to its AIS log Z, "
                 "so the two do not bracket it")]]


@fit_command
class RBMFit(EnergyFit):
    name = "rbm"
    help = "restricted Boltzmann machine (binary images)"
    description = (
        "Fit a Bernoulli restricted Boltzmann machine by contrastive divergence (CD-k, or\n"
        "PCD-k with --persistent) on the training images. Prints the held-out log-likelihood\n"
        "(log Z by AIS, with its standard error, and RAISE on a subset) and writes report.md,\n"
        "filters.png, samples.png, history.png, model.pt and run.json into --out.")
    epilog = (
        "examples:\n"
        "  ppgen fit rbm --data digits --num-hidden 64 --out runs/rbm\n"
        "  ppgen fit rbm --data binarized-mnist --num-hidden 500 --persistent --lr 0.01 "
        "--num-train 50000\n"
        "  ppgen sample runs/rbm -n 16\n"
        "  ppgen score runs/rbm images.npy")
    model_names = ("rbm",)
    validates = True

    def add_layer_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--num-hidden", type=positive_int, default=100, metavar="H",
                            help="hidden units (default: %(default)s)")
        parser.add_argument("--num-gibbs-steps", type=positive_int, default=1, metavar="K",
                            help="Gibbs steps of CD-k / PCD-k (default: %(default)s)")
        parser.add_argument("--persistent", action="store_true",
                            help="persistent contrastive divergence (PCD-k)")
        add_raise_argument(parser)

    def model_options(self, args: argparse.Namespace) -> dict[str, Any]:
        check_raise_argument(args)
        return {"num_gibbs_steps": args.num_gibbs_steps, "persistent": args.persistent}

    def build_model(self, args: argparse.Namespace, data: BinaryImages) -> Any:
        import ppgen

        return ppgen.RBM(args.num_hidden)

    def filters(self, model: Any) -> Any:
        return model.weights.detach().cpu().T

    def heldout_log_prob(self, run: FitRun) -> tuple[Any, float]:
        args = run.args
        lp, se = run.model.log_prob(run.data.heldout, num_samples=args.ais_samples,
                                    num_betas=args.ais_betas, seed=args.seed,
                                    return_stderr=True)
        return lp, float(se[0])

    def extra_results(self, run: FitRun) -> dict[str, Any]:
        return raise_results(run, "AIS")

    def extra_rows(self, run: FitRun) -> list[list[str]]:
        return raise_rows(run)

    def title(self, run: FitRun) -> str:
        args = run.args
        cd = f"{'PCD' if args.persistent else 'CD'}-{args.num_gibbs_steps}"
        return f"ppgen fit rbm: {args.num_hidden} hidden units, trained by {cd}"

    def settings_extra(self, run: FitRun) -> str:
        return f", {run.args.num_hidden} hidden units"

    def config_info(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"num_hidden": args.num_hidden, "num_gibbs_steps": args.num_gibbs_steps,
                "persistent": args.persistent}


@fit_command
class DBNFit(EnergyFit):
    name = "dbn"
    help = "deep belief network (binary images)"
    description = (
        "Fit a deep belief network by greedy layer-wise CD-k (the run's steps split among\n"
        "the layers). Prints the held-out variational lower bound on the log-likelihood\n"
        "(log Z of the top RBM by AIS, with its standard error) and writes report.md,\n"
        "filters.png, samples.png, history.png, model.pt and run.json into --out.")
    epilog = ("examples:\n"
              "  ppgen fit dbn --data digits --layers 64,64 --out runs/dbn\n"
              "  ppgen sample runs/dbn -n 16")
    model_names = ("dbn",)

    def add_layer_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--layers", type=_layers, default=(100, 100), metavar="H1,H2",
                            help="hidden-layer sizes, bottom first (default: 100,100)")
        parser.add_argument("--num-gibbs-steps", type=positive_int, default=1, metavar="K",
                            help="Gibbs steps of each layer's CD-k (default: %(default)s)")

    def model_options(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"num_gibbs_steps": args.num_gibbs_steps}

    def build_model(self, args: argparse.Namespace, data: BinaryImages) -> Any:
        import ppgen

        return ppgen.DBN(args.layers)

    def bound_text(self) -> str:
        return "log-likelihood lower bound"

    def heldout_log_prob(self, run: FitRun) -> tuple[Any, float]:
        args = run.args
        lp, se = run.model.log_prob(run.data.heldout, ais_samples=args.ais_samples,
                                    num_betas=args.ais_betas, seed=args.seed,
                                    return_stderr=True)
        return lp, float(se.mean())

    def title(self, run: FitRun) -> str:
        return (f"ppgen fit dbn: layers {','.join(map(str, run.args.layers))}, greedy "
                f"CD-{run.args.num_gibbs_steps}")

    def config_info(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"layers": list(args.layers), "num_gibbs_steps": args.num_gibbs_steps}


@fit_command
class DBMFit(EnergyFit):
    name = "dbm"
    help = "deep Boltzmann machine, two or three layers (binary images)"
    description = (
        "Fit a deep Boltzmann machine with two or three hidden layers: greedy pretraining\n"
        "(doubled inputs), then mean-field positive and persistent-chain negative phases.\n"
        "Prints the held-out mean-field lower bound on the log-likelihood (log Z by AIS,\n"
        "with its standard error; RAISE on a subset) and writes report.md, filters.png,\n"
        "samples.png, history.png, model.pt and run.json into --out.")
    epilog = ("examples:\n"
              "  ppgen fit dbm --data digits --layers 64,32 --out runs/dbm\n"
              "  ppgen fit dbm --data digits --layers 64,32,16 --out runs/dbm3\n"
              "  ppgen sample runs/dbm -n 16")
    model_names = ("dbm",)

    def add_layer_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--layers", type=_layers, default=(100, 100),
                            metavar="H1,H2[,H3]", help="the two or three hidden-layer sizes, "
                            "bottom first (default: 100,100)")
        add_raise_argument(parser)

    def model_options(self, args: argparse.Namespace) -> dict[str, Any]:
        check_raise_argument(args)
        if len(args.layers) not in (2, 3):
            raise CLIError(f"--layers: expected two or three hidden-layer sizes, H1,H2 or "
                           f"H1,H2,H3, got {','.join(map(str, args.layers))}.")
        return {}

    def build_model(self, args: argparse.Namespace, data: BinaryImages) -> Any:
        import ppgen

        return ppgen.DBM(args.layers)

    def bound_text(self) -> str:
        return "log-likelihood lower bound"

    def heldout_log_prob(self, run: FitRun) -> tuple[Any, float]:
        args = run.args
        lp, se = run.model.log_prob(run.data.heldout, num_samples=args.ais_samples,
                                    num_betas=args.ais_betas, seed=args.seed,
                                    return_stderr=True)
        return lp, float(se.mean())

    def extra_results(self, run: FitRun) -> dict[str, Any]:
        return raise_results(run, "the bound")

    def extra_rows(self, run: FitRun) -> list[list[str]]:
        return raise_rows(run)

    def title(self, run: FitRun) -> str:
        return f"ppgen fit dbm: layers {','.join(map(str, run.args.layers))}"

    def config_info(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"layers": list(args.layers)}
