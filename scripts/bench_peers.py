#!/usr/bin/python3
"""ninbatch vs ONNX Runtime vs PyTorch on the NIN presets, interleaved in one run.

Uses the peers kit in ../shared/peers (read-only) as a library: its PyTorch engines, its onnxruntime-node
worker and its sgemm/FMA probes. ninbatch runs as one more engine: a `ninbatch bench --serve` process that
answers calib/time JSON lines (timing inside Go), so its reps share the machine's noise with the others.
Every (threads, model, batch) config: warm-up + calibration per engine, then --reps rounds, each timing one
rep of every engine in rotated order, with the peers' anti-spin waits between reps.

  /usr/bin/python3 scripts/bench_peers.py [--models ..] [--batches 1,16,64] [--threads 1,2] [--reps 5]
        [--engines ofi,ort] [--tuning '{}'] [--out results.json]

Prints one Markdown table: img/s of ninbatch, ORT and the best PyTorch variant, the ratios, and ninbatch's
effective GFLOP/s as a share of this run's sgemm ceiling and FMA peak (same thread count).
"""
import sys

sys.dont_write_bytecode = True
import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PEERS = os.environ.get("PEERS_DIR", os.path.join(ROOT, "..", "shared", "peers"))
sys.path.insert(0, PEERS)
os.environ.setdefault("PEERS_CACHE", os.path.expanduser("~/.cache/ninbatch-peers"))

import bench as peers_bench  # noqa: E402
import bench_infer as bi  # noqa: E402
import sgemm_bench  # noqa: E402
import torch  # noqa: E402


class NinbatchWorker:
    def __init__(self, binary, tuning):
        self.p = subprocess.Popen([binary, "--log-format", "json", "bench", "--serve"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        self.tuning = json.loads(tuning)

    def call(self, **msg):
        self.p.stdin.write(json.dumps(msg) + "\n")
        self.p.stdin.flush()
        res = json.loads(self.p.stdout.readline())
        if "error" in res:
            raise RuntimeError(res["error"])
        return res

    def runner(self, model, batch, threads, target, precision="fp32"):
        args = dict(preset=model, batch=batch, threads=threads, tuning=self.tuning, precision=precision)
        inner = self.call(cmd="calib", target=target, **args)["inner"]
        return inner, (lambda n: self.call(cmd="time", inner=n, **args)["sec"])

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=30)


LOW = ("ninbatch-bf16", "ninbatch-int8")  # reduced-precision ninbatch engines


def bench_config(model_name, batch, threads, engines, reps, target, ort, nb):
    bi.set_threads(threads)
    model, shape = bi.build(model_name)
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(7))
    runners, inner = {}, {}
    for e in engines:
        if e == "ninbatch":
            inner[e], runners[e] = nb.runner(model_name, batch, threads, target)
        elif e in LOW:  # --precision bf16 or int8, against the same fp32 peers
            inner[e], runners[e] = nb.runner(model_name, batch, threads, target, e.split("-")[1])
        elif e == "ort":
            inner[e], runners[e] = bi.ort_runner(ort, model_name, threads, batch, shape, target)
        else:
            inner[e], runners[e] = bi.torch_runner(e, model, x, target)
    samples = {e: [] for e in runners}
    order, prev = list(runners), None
    for r in range(reps):
        for e in order[r % len(order):] + order[:r % len(order)]:
            # ORT workers spin ~50 ms after a run, OpenBLAS workers ~0.1 s: let them settle
            time.sleep(bi.SETTLE_AFTER_ORT if prev in ("ort", "ninbatch") + LOW else bi.SETTLE_AFTER_TORCH)
            samples[e].append(batch * inner[e] / runners[e](inner[e]))
            prev = e
    return {e: statistics.median(s) for e, s in samples.items()}, samples


def cpu_flags():
    """The SIMD flags of /proc/cpuinfo, printed with every figure."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                fl = line.split(":", 1)[1].split()
                keep = [f for f in fl if f.startswith(("avx", "fma", "amx"))]
                return " ".join(sorted(set(keep)))
    except OSError:
        pass
    return "unknown"


def ninbatch_isa(binary):
    out = subprocess.run([binary, "info", "--preset", "nin-mnist"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("kernels"):
            return line.split()[1]
    return "unknown"


def fma_peak_isa():
    try:
        out = subprocess.run([sgemm_bench.FMA_BIN, "0.05", "1"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    for tok in out.split():
        if tok.startswith("isa="):
            return tok[4:]
    return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="nin-mnist,nin-cifar10,nin-imagenet")
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--engines", default="ninbatch,ort,eager_cl,ofi")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--target", type=float, default=0.15)
    ap.add_argument("--tuning", default="{}", help='ninbatch engine tuning as JSON, e.g. {"mode":"streams"} (default: the default engine)')
    ap.add_argument("--binary", default=os.path.join(ROOT, "bin", "ninbatch"))
    ap.add_argument("--out", default=None, help="also write all samples as JSON")
    a = ap.parse_args()
    engines = a.engines.split(",")
    threads = [int(t) for t in a.threads.split(",")]
    t0 = time.time()
    models = a.models.split(",")
    if "ort" in engines:  # a fresh machine has no ONNX exports yet
        peers_bench.prepare_onnx(models, max(threads))
    flags = cpu_flags()
    nb_isa = ninbatch_isa(a.binary)
    fma_isa = fma_peak_isa()
    bi.log("sgemm ceiling and FMA peak")
    ceil = sgemm_bench.ceiling(tuple(threads))
    fma = {r["threads"]: r["gflops_max"] for r in sgemm_bench.fma_peak()}
    ort = bi.OrtWorker() if "ort" in engines else None
    nb = NinbatchWorker(a.binary, a.tuning)
    rows, dump = [], []
    try:
        for t in threads:
            for m in models:
                for b in [int(x) for x in a.batches.split(",")]:
                    med, samples = bench_config(m, b, t, engines, a.reps, a.target, ort, nb)
                    dump.append(dict(model=m, batch=b, threads=t, median=med, samples=samples))
                    bi.log(f"  {m} b={b} t={t} " + "  ".join(f"{e}={v:.1f}" for e, v in med.items()))
                    rows.append((m, b, t, med))
    finally:
        nb.close()
        if ort:
            ort.close()
    print(f"ninbatch vs peers, interleaved ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}), "
          f"medians of {a.reps} reps; ninbatch tuning {a.tuning}\n")
    print(f"CPU flags: {flags}. ninbatch kernels: {nb_isa}; ONNX Runtime: MLAS, its own run-time choice "
          f"(AVX512F kernels on AVX-512 CPUs); FMA peak measured with {fma_isa}.\n")
    low = [e for e in LOW if e in engines]
    print("| model | batch | threads | ninbatch img/s | ORT img/s | torch-best img/s | nb/ORT | nb/torch | "
          "nb GFLOP/s | % sgemm ceil | % FMA peak |" +
          "".join(f" nb {e[9:]} img/s | {e[9:]}/fp32 | {e[9:]}/ORT |" for e in low))
    print("|---|---|---|---|---|---|---|---|---|---|---|" + "---|---|---|" * len(low))
    for m, b, t, med in rows:
        fl = bi.flops_per_image(m)
        nbv = med.get("ninbatch", float("nan"))
        ortv = med.get("ort", float("nan"))
        tb = max((v for e, v in med.items() if e not in ("ninbatch", "ort") + LOW), default=float("nan"))
        g = nbv * fl / 1e9
        extra = "".join(f" {med[e]:.1f} | {med[e] / nbv:.2f}x | {med[e] / ortv:.2f}x |" for e in low)
        print(f"| {m} | {b} | {t} | {nbv:.1f} | {ortv:.1f} | {tb:.1f} | {nbv / ortv:.2f}x | {nbv / tb:.2f}x | "
              f"{g:.1f} | {100 * g / ceil['ceiling'][t]:.0f}% | {100 * g / fma.get(t, float('nan')):.0f}% |" + extra)
    print("\n" + ", ".join(f"sgemm ceiling {t} thr {ceil['ceiling'][t]:.1f} GFLOP/s (median {ceil['median'][t]:.1f})"
                           for t in threads) + "; " + ", ".join(f"FMA peak {t} thr {v:.1f}" for t, v in fma.items()) +
          f". Total {time.time() - t0:.0f} s.")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(dict(rows=dump, sgemm=ceil, fma=fma), f, indent=1)


if __name__ == "__main__":
    main()
