"""Inference speed of PyTorch 1.13 on the reference models, one engine per
process, printing the RESULT line of bench/bench_infer.cpp:
  fp32     the eager fp32 model in eval mode
  onednn   FX post-training static quantization for the onednn (x86) engine
  qnnpack  the same for the qnnpack engine
Weights are bench/torch_models.py's initialization (speed does not depend on
their values); the int8 models are calibrated on 4 batches of Fashion-MNIST
test images. Inputs are fixed random normalized images, as in bench_infer.

Run with Debian's torch (BLIS_NUM_THREADS sets the threads of fp32 Linear):
  BLIS_NUM_THREADS=2 /usr/bin/python3 bench/torch_infer.py --model resnet20 --engine onednn --batch 64
"""
import argparse
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_models  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist"


def calibration_batches(n=4, batch=64):
    images = os.path.join(DATA, "t10k-images-idx3-ubyte.gz")
    labels = os.path.join(DATA, "t10k-labels-idx1-ubyte.gz")
    try:
        x, _ = torch_models.load_idx(images, labels)  # normalized N x 1 x 28 x 28
        return [x[i * batch:(i + 1) * batch] for i in range(n)]
    except OSError:
        g = torch.Generator().manual_seed(2)
        return [(torch.rand(batch, 1, 28, 28, generator=g) - torch_models.MEAN) / torch_models.STD
                for _ in range(n)]


def build(model_name, engine):
    model = torch_models.build_model(model_name).eval()
    if engine == "fp32":
        return model
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    torch.backends.quantized.engine = engine
    example = torch.randn(1, 1, 28, 28)
    prepared = prepare_fx(model, get_default_qconfig_mapping(engine), example_inputs=(example,))
    with torch.inference_mode():
        for x in calibration_batches():
            prepared(x)
    return convert_fx(prepared)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, choices=torch_models.ARCHS)
    ap.add_argument("--engine", required=True, choices=("fp32", "onednn", "qnnpack"))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--min-runs", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(args.model, args.engine)
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(args.batch, 1, 28, 28, generator=g) - torch_models.MEAN) / torch_models.STD
    times = []
    with torch.inference_mode():
        for _ in range(args.warmup):
            model(x)
        start = time.perf_counter()
        while len(times) < args.min_runs or time.perf_counter() - start < args.seconds:
            t0 = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t0) * 1000.0)
    times.sort()
    median, best = times[len(times) // 2], times[0]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"pytorch {args.engine} {args.model}: batch {args.batch}, {args.threads} threads, {len(times)} runs: "
          f"median {median:.3f} ms ({args.batch * 1000.0 / median:.0f} img/s), best {best:.3f} ms, "
          f"peak RSS {rss:.1f} MB")
    print(f"RESULT framework=pytorch engine={args.engine} model={args.model} batch={args.batch} "
          f"threads={args.threads} runs={len(times)} median_ms={median:.4f} "
          f"img_s={args.batch * 1000.0 / median:.1f} best_ms={best:.4f} peak_rss_mb={rss:.1f}")


if __name__ == "__main__":
    main()
