"""Benchmark: an RBM with 500 hidden units on fixed binarized MNIST, ppgen against
scikit-learn's ``BernoulliRBM``.

Run directly::

    .venv/bin/python benchmarks/rbm_mnist.py            # the default run (minutes, 2 cores)
    .venv/bin/python benchmarks/rbm_mnist.py --quick    # smoke run (tiny subset, seconds)

Everyone gets the same data (the first ``--train-images`` rows of a fixed random permutation
of Larochelle's fixed binarized MNIST "train", ``load_mnist("train", binarize="fixed")``),
float32, 500 hidden units (``--hidden``), ``--epochs`` epochs of minibatches of
``--batch-size`` and learning rate ``--lr``:

(a) ppgen PCD-1: ``ppgen.fit(ppgen.RBM(500), x, "svi", persistent=True, num_gibbs_steps=1,
    momentum=0, initial_momentum=0, weight_decay=0, lr=lr, batch_size=B, num_epochs=E)``:
    plain PCD-1 with the update scikit-learn makes (no momentum, no weight decay);
(b) ppgen CD-k (``--cd-k``, default 1) with ppgen's defaults otherwise (momentum 0.5 then
    0.9, weight decay 1e-4), the same lr;
(c) scikit-learn ``BernoulliRBM(n_components=500, learning_rate=lr, batch_size=B,
    n_iter=E)``: PCD-1 with one persistent chain per minibatch row.

Measured: time per epoch (wall seconds of one-epoch fits, interleaved in rotating order over
``--timing-rounds`` rounds, median; each on ``--threads`` threads for torch and for numpy's
BLAS, set with threadpoolctl), and the test log-likelihood
in nats of each model on the first ``--test-images`` images of the fixed binarized test set,
by one estimator: ``ppgen.RBM.log_prob`` with log Z from AIS (``--ais-samples`` chains,
``--ais-betas`` linear inverse temperatures, the base-rate model from the same training data,
seed 0), scikit-learn's weights loaded with ``RBM.set_params``. The AIS standard error of log
Z is printed beside each number. Published anchor: an RBM with 500 hidden units trained by
CD-25 on the full 50,000 images (hundreds of epochs) has -86.34 nats (Salakhutdinov & Murray
2008); a run of a few epochs on a subset is far from that. A last row trains ``ppgen.DBM``
(``--dbm-layers``, default 500,1000; greedy pretraining then joint training, the same
epochs, batch and lr) and reports its mean-field bound with AIS log Z (anchor: -84.62 nats,
Salakhutdinov & Hinton 2009). Last, the products an RBM step makes with a 0/1 side
(x W + c and x^T P, x of shape (``--batch-size``, 784), P of ``--hidden`` columns) are timed
dense (one GEMM) against sparse (sums of rows, index extraction included) at densities from
0.03 to 0.3: the measurement behind ``ppgen.models.energy.ops.SPARSE_MAX_DENSITY``; with the
density of the training data and of samples of the PCD-1 model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import ppgen
from ppgen.models.energy import ops


def _threads(n: int):
    from threadpoolctl import threadpool_limits

    # ppgen's own rule (one thread for small steps, ppgen/_threads.py) would otherwise
    # override n when n is torch's default count: every library gets exactly n threads.
    ppgen._threads.user_choice = True
    torch.set_num_threads(n)
    return threadpool_limits(n)


def product_timings(num_rows: int, num_visible: int, num_hidden: int, densities, reps: int,
                    seed: int = 0) -> list[dict]:
    """Milliseconds of the products with a 0/1 side that an RBM step makes, dense (GEMM)
    against sparse (sums of rows, index extraction included;
    ``ops.binary_matmul``/``ops.binary_t_matmul``), at several densities: x W + c and
    x^T P for x (num_rows, num_visible). Interleaved, median of ``reps`` rounds of 10."""
    g = torch.Generator().manual_seed(seed)
    w = 0.01 * torch.randn(num_visible, num_hidden, generator=g)
    c = torch.zeros(num_hidden)
    p = torch.rand(num_rows, num_hidden, generator=g)
    out = []
    for density in densities:
        x = (torch.rand(num_rows, num_visible, generator=g) < density).float()
        fns = {"xw_dense": lambda x=x: ops.binary_matmul(x, w, c, sparse=False),
               "xw_sparse": lambda x=x: ops.binary_matmul(x, w, c, sparse=True),
               "xtp_dense": lambda x=x: ops.binary_t_matmul(x, p, sparse=False),
               "xtp_sparse": lambda x=x: ops.binary_t_matmul(x, p, sparse=True)}
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(reps):
            for k, f in fns.items():
                t = time.perf_counter()
                for _ in range(10):
                    f()
                times[k].append((time.perf_counter() - t) / 10 * 1e3)
        out.append({"density": density, **{k: statistics.median(v) for k, v in times.items()}})
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--train-images", type=int, default=10000)
    p.add_argument("--test-images", type=int, default=2000)
    p.add_argument("--hidden", type=int, default=500)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--cd-k", type=int, default=1)
    p.add_argument("--ais-samples", type=int, default=100)
    p.add_argument("--ais-betas", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--timing-rounds", type=int, default=3)
    p.add_argument("--dbm-layers", default="500,1000",
                   help="hidden sizes of the DBM row ('' to skip it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if a.quick:
        a.train_images, a.test_images, a.hidden, a.epochs = 1000, 200, 50, 1
        a.ais_samples, a.ais_betas, a.timing_rounds = 20, 100, 1
        a.dbm_layers = "20,20"
    from sklearn.neural_network import BernoulliRBM

    limits = _threads(a.threads)
    x, _ = ppgen.datasets.load_mnist("train", binarize="fixed")
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(a.seed))
    train = x[perm[:a.train_images]].contiguous()
    test = ppgen.datasets.load_mnist("test", binarize="fixed")[0]
    test = test[torch.randperm(len(test), generator=torch.Generator().manual_seed(1))
                [:a.test_images]]
    common = dict(batch_size=a.batch_size, num_epochs=a.epochs, lr=a.lr, seed=a.seed,
                  progress=False, tol=0)
    rows = []

    def evaluate(name, rbm, seconds):
        lz = rbm.log_partition("ais", num_samples=a.ais_samples, num_betas=a.ais_betas,
                               data=train, seed=0)
        ll = float((-rbm.free_energy(test).double()).mean()) - lz.estimate
        rows.append({"model": name, "sec_per_epoch": seconds / a.epochs, "test_ll": ll,
                     "log_z_se": lz.stderr})

    pcd = ppgen.RBM(a.hidden)
    t = time.perf_counter()
    ppgen.fit(pcd, train, "svi", persistent=True, momentum=0.0, initial_momentum=0.0,
              weight_decay=0.0, **common)
    evaluate("ppgen PCD-1 (sklearn's update)", pcd, time.perf_counter() - t)
    cd = ppgen.RBM(a.hidden)
    t = time.perf_counter()
    ppgen.fit(cd, train, "svi", persistent=False, num_gibbs_steps=a.cd_k, **common)
    evaluate(f"ppgen CD-{a.cd_k} (momentum, weight decay)", cd, time.perf_counter() - t)
    sk = BernoulliRBM(n_components=a.hidden, learning_rate=a.lr, batch_size=a.batch_size,
                      n_iter=a.epochs, random_state=a.seed)
    t = time.perf_counter()
    sk.fit(train.numpy())
    seconds = time.perf_counter() - t
    peer = ppgen.RBM(a.hidden)
    peer.set_params(weights=torch.from_numpy(sk.components_.T.copy()),
                    visible_bias=torch.from_numpy(sk.intercept_visible_.copy()),
                    hidden_bias=torch.from_numpy(sk.intercept_hidden_.copy()))
    evaluate("scikit-learn BernoulliRBM (PCD-1)", peer, seconds)
    # Time per epoch: one-epoch fits of the three, interleaved in rotating order over
    # --timing-rounds rounds, median (the machine is shared; one long fit each is noisier).
    fits = [
        lambda: ppgen.fit(ppgen.RBM(a.hidden), train, "svi", persistent=True, momentum=0.0,
                          initial_momentum=0.0, weight_decay=0.0, **dict(common, num_epochs=1)),
        lambda: ppgen.fit(ppgen.RBM(a.hidden), train, "svi", persistent=False,
                          num_gibbs_steps=a.cd_k, **dict(common, num_epochs=1)),
        lambda: BernoulliRBM(n_components=a.hidden, learning_rate=a.lr,
                             batch_size=a.batch_size, n_iter=1,
                             random_state=a.seed).fit(train.numpy()),
    ]
    times: list[list[float]] = [[], [], []]
    for r in range(a.timing_rounds):
        for i in [(r + j) % 3 for j in range(3)]:
            t = time.perf_counter()
            fits[i]()
            times[i].append(time.perf_counter() - t)
    for row, ts in zip(rows, times, strict=True):
        row["sec_per_epoch_of_long_fit"] = row["sec_per_epoch"]
        row["sec_per_epoch"] = sorted(ts)[len(ts) // 2]
    products = product_timings(a.batch_size, train.shape[1], a.hidden,
                               (0.03, 0.06, 0.1, 0.13, 0.2, 0.3), 3 if a.quick else 30)
    model_density = float(pcd.sample(a.batch_size, seed=0, num_burnin=100).mean())
    limits.unregister() if hasattr(limits, "unregister") else None

    if a.dbm_layers:
        sizes = tuple(int(n) for n in a.dbm_layers.split(","))
        dbm = ppgen.DBM(sizes)
        t = time.perf_counter()
        ppgen.fit(dbm, train, "svi", **common)
        seconds = time.perf_counter() - t
        bound, se = dbm.log_prob(test, num_samples=a.ais_samples, num_betas=a.ais_betas,
                                 return_stderr=True)
        rows.append({"model": f"ppgen DBM {sizes} (bound, one fit; not interleaved)",
                     "sec_per_epoch": seconds / a.epochs, "test_ll": float(bound.mean()),
                     "log_z_se": float(se[0])})
    print(f"RBM {a.hidden} hidden, {a.train_images} train / {a.test_images} test images, "
          f"{a.epochs} epochs, batch {a.batch_size}, lr {a.lr}, {a.threads} thread(s); "
          f"test LL by AIS ({a.ais_samples} chains, {a.ais_betas} betas)")
    print("| model | s / epoch | test LL (nats) | AIS se of log Z |")
    print("| --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['model']} | {r['sec_per_epoch']:.2f} | {r['test_ll']:.2f} | "
              f"{r['log_z_se']:.3f} |")
    ratio = rows[2]["sec_per_epoch"] / rows[0]["sec_per_epoch"]
    print(f"time per epoch, scikit-learn / ppgen PCD-1: {ratio:.2f}x (goal >= 2x)")
    print(f"test LL, ppgen PCD-1 - scikit-learn: {rows[0]['test_ll'] - rows[2]['test_ll']:+.2f}"
          f" nats; ppgen CD-{a.cd_k} - scikit-learn: "
          f"{rows[1]['test_ll'] - rows[2]['test_ll']:+.2f} nats (goal >= 0)")
    print("anchors: RBM 500 hidden, CD-25, full data: -86.34 nats (Salakhutdinov & Murray "
          "2008); DBM 500-1000, variational bound with AIS: -84.62 (Salakhutdinov & Hinton "
          "2009)")
    print(f"products with a 0/1 side, ({a.batch_size} x {train.shape[1]}) 0/1 times "
          f"({train.shape[1]} x {a.hidden}), ms (median of interleaved rounds; sparse: sums "
          f"of rows, index extraction included; the fit takes the sparse path below density "
          f"{ops.SPARSE_MAX_DENSITY}):")
    print("| density | x W dense | x W sparse | x^T P dense | x^T P sparse |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for r in products:
        print(f"| {r['density']:.2f} | {r['xw_dense']:.3f} | {r['xw_sparse']:.3f} | "
              f"{r['xtp_dense']:.3f} | {r['xtp_sparse']:.3f} |")
    print(f"density of the training data {float(train.mean()):.3f}; of samples of the PCD-1 "
          f"model (its chains' distribution) {model_density:.3f}")
    out = {"args": vars(a), "rows": rows, "speed_ratio": ratio, "products": products,
           "data_density": float(train.mean()), "model_sample_density": model_density}
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return out


if __name__ == "__main__":
    main()
