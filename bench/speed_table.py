"""Reads the RESULT lines of bench_train and torch_train.py (from files named
on the command line, or stdin) and prints one markdown table row per model:
median images/s over the repetitions, the ratio qforge/PyTorch, and each
side's largest peak RSS.

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


def table(runs):
    models = list(dict.fromkeys(r["model"] for r in runs))  # first-seen order
    rows = ["| model | qforge img/s | PyTorch img/s | ratio qforge/PyTorch | qforge peak RSS MB "
            "| PyTorch peak RSS MB | runs (qforge, PyTorch) |",
            "|---|---|---|---|---|---|---|"]
    for model in models:
        side = {}
        for fw in ("qforge", "pytorch"):
            mine = [r for r in runs if r["model"] == model and r["framework"] == fw]
            if mine:
                side[fw] = (statistics.median(float(r["img_per_s"]) for r in mine),
                            max(float(r["peak_rss_mb"]) for r in mine), len(mine))
        q, p = side.get("qforge"), side.get("pytorch")
        ratio = f"{q[0] / p[0]:.2f}" if q and p else "-"
        cell = lambda s, i, fmt: fmt.format(s[i]) if s else "-"
        rows.append(f"| {model} | {cell(q, 0, '{:.0f}')} | {cell(p, 0, '{:.0f}')} | {ratio} "
                    f"| {cell(q, 1, '{:.0f}')} | {cell(p, 1, '{:.0f}')} "
                    f"| {cell(q, 2, '{}')}, {cell(p, 2, '{}')} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table(parse(fileinput.input())))
