"""PyTorch's side of the training-speed benchmark: the same measurement as
bench_train (batch of random 1x28x28 images with a fixed seed, warmup steps,
then timed steps of forward, cross-entropy, backward and SGD momentum 0.9,
weight decay 5e-4) on the same models (bench/torch_models.py), printing the
same RESULT line.

    /usr/bin/python3 bench/torch_train.py --model resnet20 [--threads 2] [--profile]

Debian's torch does its Linear layers through BLIS, which ignores
torch.set_num_threads: BLIS_NUM_THREADS sets it, and it must be set before
torch is imported. This script sets it to --blis-threads (default: --threads)
unless the environment already has it, and prints the value it ran with.
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import time


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="all", choices=("all", "lenet", "resnet20", "mbv2"))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--blis-threads", type=int, default=None,
                    help="BLIS threads for Linear (default: --threads)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", action="store_true", help="per-op table from torch.profiler")
    return ap.parse_args()


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kilobytes on Linux


def run_model(arch, args):
    import torch
    import torch.nn.functional as F
    from torch_models import build_model

    model = build_model(arch, seed=args.seed)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(args.seed + 1)
    images = torch.randn(args.batch, 1, 28, 28, generator=gen)
    labels = torch.randint(0, 10, (args.batch,), generator=gen)

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        opt.step()
        return loss

    step_ms = []
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            faults_at_start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        loss = step()
        ms = (time.perf_counter() - t0) * 1000.0
        if i >= args.warmup:
            step_ms.append(ms)
    med = statistics.median(step_ms)
    faults_per_step = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_at_start) / args.steps
    print(f"{arch}: batch {args.batch}, {args.threads} threads (BLIS {os.environ['BLIS_NUM_THREADS']}), "
          f"{args.steps} timed steps after {args.warmup} warmup: median {med:.1f} ms/step "
          f"(best {min(step_ms):.1f}), {args.batch * 1000.0 / med:.0f} img/s, "
          f"peak RSS {peak_rss_mb():.0f} MB, {faults_per_step:.0f} page faults/step, last loss {loss.item():.3f}")

    if args.profile:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                step()
        print(f"torch.profiler, totals over {args.steps} steps (self CPU time excludes children):")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))

    print(f"RESULT framework=pytorch model={arch} batch={args.batch} threads={args.threads} "
          f"steps={args.steps} median_ms={med:.3f} img_per_s={args.batch * 1000.0 / med:.1f} "
          f"best_ms={min(step_ms):.3f} peak_rss_mb={peak_rss_mb():.1f} "
          f"page_faults_per_step={faults_per_step:.0f} profile={int(args.profile)}", flush=True)


def main():
    args = parse_args()
    if args.model == "all":
        # One process per model, as bench_train does, so the peak RSS is each model's own.
        failed = 0
        for arch in ("lenet", "resnet20", "mbv2"):
            argv = [sys.executable, os.path.abspath(__file__), *sys.argv[1:], "--model", arch]
            failed += subprocess.call(argv) != 0
        sys.exit(1 if failed else 0)

    os.environ.setdefault("BLIS_NUM_THREADS", str(args.blis_threads or args.threads))
    import torch  # after BLIS_NUM_THREADS: BLIS reads it once, when loaded

    torch.set_num_threads(args.threads)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    run_model(args.model, args)


if __name__ == "__main__":
    main()
