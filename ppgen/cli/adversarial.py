"""``ppgen fit gan`` and ``ppgen fit cgan``: generative adversarial networks (MLP players) on
the 2-D ring and grid mixtures, the 8x8 digits, MNIST or a .npy array; ``ppgen fit dcgan``,
``fccgan`` and ``stackgan``: the convolutional ones (images only), measured by the
mixture metrics (2-D data), sample grids (images), the loss curves of both players and the
held-out log-likelihood in nats by annealed importance sampling."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._fit import (
    Figure,
    FitCommand,
    FitRun,
    fit_command,
    nonnegative_float,
    positive_float,
    positive_int,
)
from ._io import CLIError, count, csv_text, emit, existing_file
from ._report import Report, json_text
from .latent import _hidden_dims, _read_npy_images, _split

__all__ = ["AdversarialFit", "ConditionalAdversarialFit", "ConvolutionalAdversarialFit",
           "FCCAdversarialFit", "StackAdversarialFit", "AdversarialData"]

#: Data of ``ppgen fit gan|cgan`` besides a .npy file.
DATASETS = ("ring", "grid", "digits", "mnist")
MIXTURES = ("ring", "grid")
#: Held-out data scored by AIS, and the validation points (mixtures).
DEFAULT_EVAL_SIZE = {"ring": 100, "grid": 100, "digits": 100, "mnist": 100, "file": 100}
NUM_VALIDATION_POINTS = 500
DEFAULT_FRACTION = 0.1
NUM_SAMPLE_IMAGES = 64
#: Samples of the mixture metrics (as in VEEGAN and PacGAN).
NUM_METRIC_SAMPLES = 2500


@dataclass
class AdversarialData:
    """The data of a run: training, validation and held-out parts (with labels)."""

    train: Any
    train_labels: Any
    validation: Any
    validation_labels: Any
    heldout: Any
    heldout_labels: Any
    kind: str  # "ring", "grid", "digits", "mnist" or "file"
    source: str
    data_shape: tuple[int, ...]
    image_shape: tuple[int, int] | None
    num_classes: int | None
    modes: Any  # (K, 2) centres of a mixture, else None
    std: float | None
    split_text: str

    @property
    def is_image(self) -> bool:
        return self.kind not in MIXTURES


def _kind(data: str) -> str:
    return data if data in DATASETS else "file"


def load_adversarial_data(args: argparse.Namespace, conditional: bool,
                          command: str = "cgan") -> AdversarialData:
    """Read or draw ``--data`` and split it (module doc)."""
    import torch

    import ppgen

    kind, seed = _kind(args.data), args.seed
    size = args.eval_size
    if kind in MIXTURES:
        make = ppgen.datasets.make_ring if kind == "ring" else ppgen.datasets.make_grid
        total = args.num_data + NUM_VALIDATION_POINTS + size
        x, params = make(total, seed=seed, dtype=torch.float32)
        y = params["labels"]
        a, b = args.num_data, args.num_data + NUM_VALIDATION_POINTS
        num_modes = len(params["modes"])
        what = "ring of 8" if kind == "ring" else "5 x 5 grid of"
        return AdversarialData(
            x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:], kind,
            f"{kind} ({what} Gaussians, standard deviation {params['std']:g}, drawn with seed "
            f"{seed})", (2,), None, num_modes if conditional else None, params["modes"],
            float(params["std"]), f"train: {args.num_data}, validation: "
            f"{NUM_VALIDATION_POINTS}, held out: {size} points (labels: the mode of each)")
    if kind == "mnist":
        try:
            train, train_y = ppgen.datasets.load_mnist("train")
            valid, valid_y = ppgen.datasets.load_mnist("valid")
            test, test_y = ppgen.datasets.load_mnist("test")
        except FileNotFoundError as exc:
            raise CLIError(f"--data mnist: {exc}") from None
        held = torch.as_tensor(np.sort(np.random.default_rng(seed).permutation(len(test))[
            :size]))
        return AdversarialData(
            train, train_y, valid[:1000], valid_y[:1000], test[held], test_y[held], kind,
            "mnist (MNIST intensities, ../shared/data)", (784,), (28, 28),
            10 if conditional else None, None, None,
            f"train: the {len(train)} images of MNIST's 'train' split; "
            f"validation: 1000 of its 'valid' images; held out: {len(held)} test images "
            f"(drawn with seed {seed})")
    if kind == "digits":
        images, labels = ppgen.datasets.load_digits()
        source, shape = "digits (embedded scikit-learn 8x8 digits, intensities pixel/16)", (8, 8)
    else:
        if conditional:
            raise CLIError(f"--data {args.data}: ppgen fit {command} needs labels: use --data "
                           "ring, grid, digits or mnist, or ppgen fit gan for a file.")
        existing_file(args.data, DATASETS, (".npy",), lead="--data")
        flat, shape = _read_npy_images(args.data)
        images, labels, source = torch.from_numpy(flat), None, args.data
    tr, va, he = _split(len(images), args.heldout_fraction, DEFAULT_FRACTION, seed)
    he = he[:size]

    def part(t: Any, idx: np.ndarray) -> Any:
        return None if t is None else t[torch.as_tensor(idx)]

    return AdversarialData(
        part(images, tr), part(labels, tr), part(images, va), part(labels, va),
        part(images, he), part(labels, he), kind, source, (shape[0] * shape[1],), tuple(shape),
        10 if conditional else None, None, None,
        f"train: {len(tr)}, validation: {len(va)}, held out and scored: {len(he)} images "
        f"(drawn with seed {seed})")


@fit_command
class AdversarialFit(FitCommand):
    """``ppgen fit gan``: an MLP GAN through ``ppgen.fit`` (its adversarial objective)."""

    name = "gan"
    help = "generative adversarial network (2-D mixtures, images)"
    conditional = False
    description = (
        "Fit a generative adversarial network (MLP generator and discriminator, PacGAN\n"
        "packing, R1 penalty and a moving average of the generator by default) through the\n"
        "shared training loop. Reports the mixture metrics (ring, grid: modes captured,\n"
        "% high-quality samples, reverse KL over modes), the held-out log-likelihood in\n"
        "nats by annealed importance sampling (Gaussian observation model, its scale\n"
        "chosen on validation data) with its standard error, and writes report.md,\n"
        "history.png (both players' losses), samples.png, model.pt and run.json into --out.")
    epilog = (
        "data:\n"
        "  ring      8 Gaussians on a circle (VEEGAN/PacGAN), --num-data points drawn\n"
        "  grid      5 x 5 Gaussians on a lattice (VEEGAN/PacGAN)\n"
        "  digits    scikit-learn's 1797 8x8 digits (embedded), intensities in [0, 1]\n"
        "  mnist     MNIST from ../shared/data (or PPGEN_DATA_DIR)\n"
        "  FILE.npy  an array (N, D) or (N, height, width) (ppgen fit gan only)\n"
        "\nexamples:\n"
        "  ppgen fit gan --data ring --num-steps 2000 --out runs/gan\n"
        "  ppgen fit cgan --data digits --num-steps 3000 --out runs/cgan\n"
        "  ppgen sample runs/gan -n 100")
    data_default = "ring"
    data_help = "ring, grid, digits, mnist or a .npy array (default: %(default)s)"
    model_names = ("gan",)
    inference_data = False
    run_json_description = "the command, settings and results"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from ppgen.models.adversarial.losses import LOSSES

        parser.add_argument("--latent-dim", type=positive_int, metavar="L",
                            help="dimension of z (default: 2 for ring/grid, 16 for images)")
        parser.add_argument("--hidden-dims", type=_hidden_dims, metavar="H1,H2",
                            help="widths of both players' hidden layers (default: "
                            "128,128,128 for ring/grid, 256,256 for images)")
        parser.add_argument("--pack", type=positive_int, default=4, metavar="P",
                            help="samples per discriminator input (PacGAN; 1: plain GAN; "
                            "default: %(default)s)")
        parser.add_argument("--gan-loss", choices=LOSSES, default="minimax",
                            help="adversarial loss (default: %(default)s, non-saturating)")
        parser.add_argument("--num-steps", type=positive_int, default=2000, metavar="N",
                            help="discriminator updates (default: %(default)s)")
        parser.add_argument("--batch-size", type=positive_int, default=128, metavar="B",
                            help="data per step (default: %(default)s)")
        parser.add_argument("--lr", type=positive_float, metavar="LR",
                            help="Adam learning rate of both players (default 1e-3)")
        parser.add_argument("--num-critic", type=positive_int, metavar="K",
                            help="discriminator steps per generator step (default 1)")
        parser.add_argument("--r1-weight", type=nonnegative_float, metavar="W",
                            help="R1 penalty weight (default 0.1; 0: none)")
        parser.add_argument("--ema-decay", type=nonnegative_float, metavar="D",
                            help="moving average of the generator weights used for sampling "
                            "(default 0.999; 0: the generator itself)")
        parser.add_argument("--num-data", type=positive_int, default=20000, metavar="N",
                            help="ring, grid: training points drawn (default: %(default)s)")
        parser.add_argument("--heldout-fraction", type=positive_float, default=DEFAULT_FRACTION,
                            metavar="F", help="digits and files: share held out (default: "
                            "%(default)s; at most --eval-size of them are scored)")
        parser.add_argument("--eval-size", type=positive_int, metavar="N",
                            help="held-out data scored by AIS (default: 100 points, 100 "
                            "images)")
        parser.add_argument("--ais-chains", type=positive_int, default=16, metavar="C",
                            help="AIS chains per held-out datum (default: %(default)s)")
        parser.add_argument("--ais-steps", type=positive_int, default=100, metavar="T",
                            help="AIS temperatures (default: %(default)s; more: less bias)")

    def fit_options(self, args: argparse.Namespace) -> dict[str, Any]:
        args.method = "svi"
        kind = _kind(args.data)
        mixture = kind in MIXTURES
        if not 0 < args.heldout_fraction < 0.9:
            raise CLIError(f"--heldout-fraction: expected a share in (0, 0.9), got "
                           f"{args.heldout_fraction:g}.")
        if args.ema_decay is not None and args.ema_decay >= 1:
            raise CLIError(f"--ema-decay: expected a number in [0, 1), got {args.ema_decay:g}.")
        if args.latent_dim is None:
            args.latent_dim = 2 if mixture else 16
        if args.hidden_dims is None:
            args.hidden_dims = (128, 128, 128) if mixture else (256, 256)
        if not args.hidden_dims:
            raise CLIError("--hidden-dims: a GAN needs at least one hidden layer, got 'none'.")
        if args.eval_size is None:
            args.eval_size = DEFAULT_EVAL_SIZE[kind]
        options: dict[str, Any] = {"num_steps": args.num_steps, "batch_size": args.batch_size,
                                   "tol": 0, "gan_loss": args.gan_loss}
        for key in ("lr", "num_critic", "r1_weight", "ema_decay"):
            if getattr(args, key) is not None:
                options[key] = getattr(args, key)
        return options

    def load_data(self, args: argparse.Namespace) -> AdversarialData:
        return load_adversarial_data(args, self.conditional, self.name)

    def _model_kwargs(self, data: AdversarialData) -> dict[str, Any]:
        return dict(latent_dim=self._args.latent_dim, hidden_dims=self._args.hidden_dims,
                    pack=self._args.pack, output="sigmoid" if data.is_image else "linear")

    def build_model(self, args: argparse.Namespace, data: AdversarialData) -> Any:
        import ppgen

        self._args = args
        return ppgen.GAN(data.data_shape, **self._model_kwargs(data))

    def fit_inputs(self, args: argparse.Namespace, data: AdversarialData):
        return data.train, {"validation_data": data.validation}

    def _labels(self, data: AdversarialData, which: str) -> dict[str, Any]:
        return {}

    def evaluate(self, run: FitRun) -> dict[str, Any]:
        import torch

        import ppgen

        args, model, data = run.args, run.model, run.data
        lp, se = model.log_prob(data.heldout, num_samples=args.ais_chains,
                                num_steps=args.ais_steps, seed=args.seed, return_stderr=True,
                                **self._labels(data, "heldout"))
        lp, se = lp.detach().double().cpu(), se.detach().double().cpu()
        n = lp.shape[0]
        hist = run.fit.history
        res: dict[str, Any] = {
            "log_lik": float(lp.mean()),
            "log_lik_se": float(lp.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.nan,
            "log_lik_mc_se": float(se.square().sum().sqrt() / n),
            "num_heldout": n, "obs_scale": float(model.obs_scale),
            "num_steps": int(len(hist.get("d_loss", []))),
        }
        with torch.no_grad():
            if data.is_image:
                res["samples"] = self._draw(model, data, NUM_SAMPLE_IMAGES, args.seed)
            else:
                x = self._draw(model, data, NUM_METRIC_SAMPLES, args.seed)
                m = ppgen.evaluation.mixture_metrics(x, data.modes, data.std)
                res.update(samples=x, modes=m.modes_captured, num_modes=m.num_modes,
                           high_quality=m.high_quality, reverse_kl=m.reverse_kl)
        return res

    def _draw(self, model: Any, data: AdversarialData, n: int, seed: int) -> Any:
        return model.sample(n, seed=seed).detach().cpu()

    def title(self, run: FitRun) -> str:
        args = run.args
        return (f"ppgen fit {self.name}: latent dim {args.latent_dim}, hidden "
                f"{','.join(map(str, args.hidden_dims))}, pack {args.pack}, {args.gan_loss} "
                "loss")

    def data_lines(self, run: FitRun) -> list[str]:
        data = run.data
        shape = data.image_shape or data.data_shape
        return [f"{data.source}, shape {'x'.join(map(str, shape))} per datum",
                data.split_text]

    def settings_extra(self, run: FitRun) -> str:
        return f", {sum(p.numel() for p in run.model.parameters())} network weights"

    def report(self, report: Report, run: FitRun) -> None:
        args, res, data = run.args, run.results, run.data
        report.section("Fit")
        rows = []
        if not data.is_image:
            rows += [
                ["modes captured", f"{res['modes']} of {res['num_modes']} (at least one of "
                 f"{NUM_METRIC_SAMPLES} samples within 3 standard deviations)"],
                ["high-quality samples", f"{res['high_quality']:.1f} % (within 3 standard "
                 "deviations of their nearest mode)"],
                ["reverse KL over modes", f"{res['reverse_kl']:.3f} nats (high-quality "
                 "samples' mode distribution against uniform)"],
            ]
        rows += [
            ["held-out log-likelihood", f"{res['log_lik']:.3f} ± {res['log_lik_se']:.3f} "
             "nats per datum (mean over "
             f"{count(res['num_heldout'], 'held-out datum', 'held-out data')}"
             f" ± its standard error; AIS with {args.ais_chains} chains and {args.ais_steps} "
             f"temperatures, Monte Carlo error of the mean ± {res['log_lik_mc_se']:.3f}; "
             f"Gaussian observation model with sigma {res['obs_scale']:.4g} chosen on the "
             "validation data)"],
            ["steps", f"{res['num_steps']} discriminator updates of {args.batch_size} data"],
            ["elapsed", f"{run.fit.elapsed:.2f} s"],
        ]
        report.table(["quantity", "value"], rows, numeric=False)

    def figures(self, run: FitRun) -> list[Figure]:
        from matplotlib.figure import Figure as MplFigure

        from .. import plots

        res, data, hist = run.results, run.data, run.fit.history
        fig = MplFigure(figsize=(9, 3.5))
        ax = fig.add_subplot(1, 2, 1)
        for key, label in (("d_loss", "discriminator"), ("g_loss", "generator")):
            v = np.asarray(hist.get(key, []), dtype=float)
            ax.plot(np.arange(1, len(v) + 1), v, lw=0.7, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend()
        ax.set_title("Losses of both players")
        ax2 = fig.add_subplot(1, 2, 2)
        val = np.asarray(hist.get("eval_val_frechet", []), dtype=float)
        steps = np.asarray(hist.get("eval_step", np.arange(1, len(val) + 1)), dtype=float)
        ax2.plot(steps[:len(val)], val, "o-")
        ax2.set_xlabel("step")
        ax2.set_ylabel("Fréchet distance")
        ax2.set_title("Validation: samples vs validation data")
        fig.tight_layout()
        figures = [Figure("history.png", fig, "losses of the discriminator and the generator "
                          "per step, and the Fréchet distance of samples to the validation "
                          "data")]
        if data.is_image:
            grid = plots.plot_image_grid(res["samples"].reshape(len(res["samples"]), -1),
                                         data.image_shape, ncols=8,
                                         title=f"{NUM_SAMPLE_IMAGES} samples")
            figures.append(Figure("samples.png", grid, f"{NUM_SAMPLE_IMAGES} generated images"))
        else:
            sfig = MplFigure(figsize=(5, 5))
            sax = sfig.add_subplot(1, 1, 1)
            x = res["samples"].numpy()
            modes = np.asarray(data.modes)
            sax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.4, label=f"{len(x)} samples")
            sax.scatter(modes[:, 0], modes[:, 1], marker="x", c="red", s=40, label="true modes")
            sax.set_aspect("equal")
            sax.legend(loc="center")  # the middle of the ring and grid is empty
            sax.set_title(f"{res['modes']}/{res['num_modes']} modes, "
                          f"{res['high_quality']:.1f} % high quality")
            figures.append(Figure("samples.png", sfig, "generated points against the true "
                                  "modes"))
        return figures

    def run_info(self, run: FitRun) -> dict[str, Any]:
        args, res, fit = run.args, run.results, run.fit
        info = {"data": run.data.source, "data_shape": list(run.data.data_shape),
                "seed": fit.seed, "latent_dim": args.latent_dim,
                "hidden_dims": list(args.hidden_dims), "pack": args.pack,
                "options": dict(run.options), "ais_chains": args.ais_chains,
                "ais_steps": args.ais_steps, "log_likelihood": res["log_lik"],
                "log_likelihood_se": res["log_lik_se"],
                "log_likelihood_mc_se": res["log_lik_mc_se"], "obs_scale": res["obs_scale"],
                "num_steps_run": res["num_steps"], "elapsed": fit.elapsed}
        if not run.data.is_image:
            info.update(modes_captured=res["modes"], num_modes=res["num_modes"],
                        high_quality=res["high_quality"], reverse_kl=res["reverse_kl"])
        return info

    def run_json(self, info: dict[str, Any]) -> str:
        return json_text(info)


@fit_command
class ConditionalAdversarialFit(AdversarialFit):
    """``ppgen fit cgan``: a conditional GAN (labels: digit classes or mixture modes)."""

    name = "cgan"
    help = "conditional GAN (labelled 2-D mixtures, digits, MNIST)"
    conditional = True
    description = AdversarialFit.description.replace(
        "Fit a generative adversarial network", "Fit a conditional GAN (labels: the mode of\n"
        "each ring/grid point, the digit class of each image)")
    model_names = ("cgan",)

    def build_model(self, args: argparse.Namespace, data: AdversarialData) -> Any:
        import ppgen

        self._args = args
        return ppgen.ConditionalGAN(data.data_shape, data.num_classes,
                                    **self._model_kwargs(data))

    def fit_inputs(self, args: argparse.Namespace, data: AdversarialData):
        return data.train, {"model_kwargs": {"labels": data.train_labels},
                            "validation_data": (data.validation,
                                                {"labels": data.validation_labels})}

    def _labels(self, data: AdversarialData, which: str) -> dict[str, Any]:
        return {"labels": getattr(data, f"{which}_labels")}

    def _draw(self, model: Any, data: AdversarialData, n: int, seed: int) -> Any:
        import torch

        labels = torch.arange(n) % model.num_classes
        return model.sample(n, labels=labels, seed=seed).detach().cpu()

    def sample(self, args: argparse.Namespace, model: Any) -> int:
        """Rows led by a ``label`` column: labels 0, 1, ..., C-1, 0, 1, ... in turn."""
        import torch

        if args.length is not None:
            raise CLIError("--length: applies to sequence and topic models, got a "
                           f"ConditionalGAN in {args.dir}.")
        if args.out is not None and args.out.lower().endswith(".npz"):
            raise CLIError("--out: write the rows of a ConditionalGAN to a .csv file.")
        labels = torch.arange(args.num_samples) % model.num_classes
        draws = model.sample(args.num_samples, labels=labels, seed=args.seed)
        rows = np.concatenate([labels.numpy()[:, None].astype(float),
                               draws.detach().cpu().reshape(args.num_samples, -1).numpy()], 1)
        names = None if args.no_header else ["label"] + [
            f"x{j}" for j in range(rows.shape[1] - 1)]
        emit(csv_text(rows, names), args.out)
        return 0

    def score(self, args: argparse.Namespace, model: Any) -> int:
        raise CLIError("ppgen score: a conditional GAN scores data given their labels; use "
                       "the Python API, model.score(x, labels=y).")


class _Convolutional:
    """What the convolutional commands share: images only, ``--width``, no packing by
    default, and ``--hidden-dims`` refused (FCC-GAN reads it as its fully connected
    layers)."""

    name: str
    fc_layers = False
    epilog = (
        "data:\n"
        "  digits    scikit-learn's 1797 8x8 digits (embedded), intensities in [0, 1]\n"
        "  mnist     MNIST from ../shared/data (or PPGEN_DATA_DIR)\n"
        "  FILE.npy  an array (N, height, width) (dcgan and fccgan only)\n"
        "\nexamples:\n"
        "  ppgen fit dcgan --data mnist --num-steps 3000 --out runs/dcgan\n"
        "  ppgen fit stackgan --data digits --num-steps 2000 --out runs/stackgan\n"
        "  ppgen sample runs/stackgan -n 20")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)  # type: ignore[misc]
        parser.add_argument("--width", type=positive_int, default=16, metavar="W",
                            help="channels of the first convolution of the discriminator "
                            "(and of the generator's last stage; default: %(default)s)")
        parser.set_defaults(pack=1)

    def fit_options(self, args: argparse.Namespace) -> dict[str, Any]:
        if _kind(args.data) in MIXTURES:
            raise CLIError(f"--data {args.data}: ppgen fit {self.name} draws images; use "
                           "--data digits, mnist or a .npy array of images (ppgen fit gan "
                           "for the 2-D mixtures).")
        given = args.hidden_dims
        if given is not None and not self.fc_layers:
            raise CLIError(f"--hidden-dims: ppgen fit {self.name} has convolutional players "
                           "(no hidden layers to set); use --width.")
        options = super().fit_options(args)  # type: ignore[misc]
        args.hidden_dims = given if given is not None else (
            (64, 512) if self.fc_layers else ())
        return options

    def title(self, run: FitRun) -> str:
        args = run.args
        fc = f", fully connected {','.join(map(str, args.hidden_dims))}" \
            if args.hidden_dims else ""
        return (f"ppgen fit {self.name}: latent dim {args.latent_dim}, width {args.width}"
                f"{fc}, pack {args.pack}, {args.gan_loss} loss")

    def sample(self, args: argparse.Namespace, model: Any) -> int:
        """Rows of flattened images (the conditional command's own rows, led by labels)."""
        if getattr(self, "conditional", False) or args.length is not None or (
                args.out is not None and args.out.lower().endswith(".npz")):
            return super().sample(args, model)  # type: ignore[misc]
        draws = model.sample(args.num_samples, seed=args.seed).detach().cpu()
        rows = draws.reshape(args.num_samples, -1).numpy()
        names = None if args.no_header else [f"x{j}" for j in range(rows.shape[1])]
        emit(csv_text(rows, names), args.out)
        return 0

    def _check_image(self, data: AdversarialData) -> tuple[int, int]:
        if data.image_shape is None:
            raise CLIError(f"--data: ppgen fit {self.name} needs images.")
        return data.image_shape


@fit_command
class ConvolutionalAdversarialFit(_Convolutional, AdversarialFit):
    """``ppgen fit dcgan``: the all-convolutional DCGAN (Radford et al. 2016)."""

    name = "dcgan"
    help = "deep convolutional GAN (digits, MNIST, image arrays)"
    description = AdversarialFit.description.replace(
        "Fit a generative adversarial network (MLP generator and discriminator, PacGAN\n"
        "packing, R1 penalty and a moving average of the generator by default)",
        "Fit a DCGAN (strided convolutions, batch norm, a moving average of the\ngenerator)")
    model_names = ("dcgan",)
    data_default = "digits"
    data_help = "digits, mnist or a .npy array of images (default: %(default)s)"

    def build_model(self, args: argparse.Namespace, data: AdversarialData) -> Any:
        import ppgen

        self._args = args
        return ppgen.DCGAN(self._check_image(data), latent_dim=args.latent_dim,
                           width=args.width, pack=args.pack)


@fit_command
class FCCAdversarialFit(_Convolutional, AdversarialFit):
    """``ppgen fit fccgan``: FCC-GAN (Barua et al. 2019); ``--hidden-dims`` are its fully
    connected layers (default 64,512)."""

    name = "fccgan"
    help = "fully connected + convolutional GAN (digits, MNIST, image arrays)"
    description = ConvolutionalAdversarialFit.description.replace(
        "Fit a DCGAN (strided convolutions, batch norm,",
        "Fit an FCC-GAN (fully connected layers around the convolutions,")
    model_names = ("fccgan",)
    data_default = "digits"
    data_help = ConvolutionalAdversarialFit.data_help
    fc_layers = True

    def build_model(self, args: argparse.Namespace, data: AdversarialData) -> Any:
        import ppgen

        self._args = args
        return ppgen.FCCGAN(self._check_image(data), latent_dim=args.latent_dim,
                            width=args.width, fc_dims=tuple(args.hidden_dims),
                            pack=args.pack)


@fit_command
class StackAdversarialFit(_Convolutional, ConditionalAdversarialFit):
    """``ppgen fit stackgan``: StackGAN with the digit class as its condition (stage I at
    half the resolution for the first half of the steps, then stage II)."""

    name = "stackgan"
    help = "StackGAN, two stages conditioned on the digit class (digits, MNIST)"
    description = ConvolutionalAdversarialFit.description.replace(
        "Fit a DCGAN (strided convolutions, batch norm, a moving average of the\ngenerator)",
        "Fit a StackGAN (stage I at half the resolution, then stage II refining it,\n"
        "both conditioned on the digit class; --latent-dim is stage I's noise)")
    model_names = ("stackgan",)
    data_default = "digits"
    data_help = "digits or mnist (default: %(default)s)"

    def build_model(self, args: argparse.Namespace, data: AdversarialData) -> Any:
        import ppgen

        self._args = args
        return ppgen.StackGAN(self._check_image(data), data.num_classes or 10,
                              noise_dim=args.latent_dim, width=args.width, pack=args.pack)
