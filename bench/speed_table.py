"""Reads the RESULT lines of bench_train and torch_train.py (from files named
on the command line, or stdin) and prints one markdown table row per model:
median images/s over the repetitions, the ratio qforge/PyTorch, and each
side's largest peak RSS. On a machine shared with other work the medians
carry the load; the fastest single step of all repetitions (the "best step"
columns) is the closer estimate of an idle machine.

    python3 bench/speed_table.py results.txt
"""
import fileinput
import statistics


def parse(lines):
    """RESULT key=value ... lines -> list of dicts."""
    runs = []
    for line in lines:
        if line.startswith("RESULT "):
            runs.append(dict(field.split("=", 1) for field in line.split()[1:]))
    return runs


def summarize(runs):
    """-> median img/s, best-step img/s, largest peak RSS MB, number of runs; or None."""
    if not runs:
        return None
    batch = float(runs[0]["batch"])
    return (statistics.median(float(r["img_per_s"]) for r in runs),
            max(batch * 1000.0 / float(r["best_ms"]) for r in runs),
            max(float(r["peak_rss_mb"]) for r in runs), len(runs))


def table(runs):
    models = list(dict.fromkeys(r["model"] for r in runs))  # first-seen order
    rows = ["| model | qforge img/s | PyTorch img/s | ratio qforge/PyTorch "
            "| best step img/s: qforge / PyTorch (ratio) "
            "| qforge peak RSS MB | PyTorch peak RSS MB | runs (qforge, PyTorch) |",
            "|---|---|---|---|---|---|---|---|"]
    for model in models:
        q, p = (summarize([r for r in runs if r["model"] == model and r["framework"] == fw])
                for fw in ("qforge", "pytorch"))
        def cell(s, i, fmt="{:.0f}"):
            return fmt.format(s[i]) if s else "-"
        ratio = f"{q[0] / p[0]:.2f}" if q and p else "-"
        best_ratio = f" ({q[1] / p[1]:.2f})" if q and p else ""
        rows.append(f"| {model} | {cell(q, 0)} | {cell(p, 0)} | {ratio} "
                    f"| {cell(q, 1)} / {cell(p, 1)}{best_ratio} "
                    f"| {cell(q, 2)} | {cell(p, 2)} | {cell(q, 3, '{}')}, {cell(p, 3, '{}')} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table(parse(fileinput.input())))
