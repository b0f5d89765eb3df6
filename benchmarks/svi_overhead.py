"""SVI step time: ppgen.fit's training loop against a plain Pyro SVI loop on the same model,
guide and ELBO (GMM with enumerated assignments, Gaussian HMM, ProdLDA with minibatches).

Both run the same number of steps on one thread; the table gives milliseconds per step (whole
fit, set-up included, divided by the steps) and the ratio ppgen / Pyro. Run:

    .venv/bin/python benchmarks/svi_overhead.py [--steps 300] [--repeats 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import SVI, TraceEnum_ELBO, TraceMeanField_ELBO, config_enumerate
from pyro.infer.autoguide import AutoDelta
from pyro.infer.autoguide.initialization import init_to_median

import ppgen


def _cases(quick: bool):
    n = 60 if quick else 300
    yield ("gmm (K=3, diag, 272 x 2)", lambda: ppgen.GaussianMixture(3, covariance="diag"),
           ppgen.datasets.load_old_faithful(), {}, None)
    x, *_ = ppgen.datasets.make_hmm(20 if quick else 100, 50, 3, num_features=2, seed=0)
    yield (f"hmm (K=3, {x.shape[0]} x 50 x 2)", lambda: ppgen.HiddenMarkovModel(3), x, {}, None)
    counts, *_ = ppgen.datasets.make_corpus(n, 200, 5, doc_length=60, seed=0)
    yield (f"prodlda (K=5, {n} docs x 200, batch 32)", lambda: ppgen.ProdLDA(5, hidden_size=32),
           counts, {"batch_size": 32, "lr": 0.01}, 32)


def _ppgen(make, data, options, steps):
    model = make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        guide = {} if "batch_size" in options else {"guide": "map"}
        ppgen.fit(model, data, "svi", num_steps=steps, tol=0, seed=0, progress=False,
                  num_samples=1, **guide, **options)
    return time.perf_counter() - start


def _pyro(make, data, options, steps, batch):
    model = make()
    x, kwargs = model.prepare_inputs(data, {})
    pyro.clear_param_store()
    with pyro.settings.context(module_local_params=True), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        if batch is None:  # an automatic MAP guide, assignments summed out
            fn = config_enumerate(model.model, default="parallel")
            values = model.init_values(x, init=None, seed=0)
            from pyro.infer.autoguide.initialization import init_to_value
            guide = AutoDelta(poutine.block(fn, hide_fn=lambda m: m["fn"].support.is_discrete
                                            if hasattr(m["fn"], "support") else False),
                              init_loc_fn=init_to_value(values=values,
                                                        fallback=init_to_median))
            loss = TraceEnum_ELBO(max_plate_nesting=model.max_plate_nesting)
        else:  # the model's own amortized guide, minibatches
            fn, guide = model.model, model.guide
            kwargs = dict(kwargs, subsample_size=batch)
            loss = TraceMeanField_ELBO()
        svi = SVI(fn, guide, pyro.optim.ClippedAdam({"lr": options.get("lr", 0.01),
                                                     "clip_norm": 10.0}), loss)
        for _ in range(steps):
            svi.step(x, **kwargs)
        return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a few steps (for the tests)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    steps = 10 if args.quick else args.steps
    repeats = 1 if args.quick else args.repeats
    rows = []
    for name, make, data, options, batch in _cases(args.quick):
        a, b = [], []
        _ppgen(make, data, options, 2)  # warm-up: lazy imports, first traces
        _pyro(make, data, options, 2, batch)
        for _ in range(repeats):  # interleaved, to cancel drift in the machine's load
            a.append(_ppgen(make, data, options, steps))
            b.append(_pyro(make, data, options, steps, batch))
        ms_a = 1e3 * statistics.median(a) / steps
        ms_b = 1e3 * statistics.median(b) / steps
        rows.append({"case": name, "ppgen_ms": ms_a, "pyro_ms": ms_b, "ratio": ms_a / ms_b})
    print(f"{'case':42s} {'ppgen ms/step':>14s} {'Pyro SVI ms/step':>17s} {'ratio':>7s}")
    for r in rows:
        print(f"{r['case']:42s} {r['ppgen_ms']:14.2f} {r['pyro_ms']:17.2f} {r['ratio']:7.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
