"""What a sweep reports: one row per setting (mean and spread over its seeds),
ranked by loss, as a table; every run as CSV; both as JSON. The figure is
plots.plot_sweep.
"""

from __future__ import annotations

import csv
import json
import statistics


def summarize(results: list[dict]) -> list[dict]:
    """One row per setting: runs, failures, mean and spread (sample standard
    deviation, None with fewer than two ok seeds) of the tail loss (mean loss of
    the last tenth of the steps) and validation loss over its seeds, and seconds per run;
    sorted by validation loss where there is one, else by tail loss, failed
    settings last."""
    by_setting = {}
    for r in results:
        key = json.dumps(r["setting"], sort_keys=True)
        by_setting.setdefault(key, []).append(r)
    rows = []
    for runs in by_setting.values():
        ok = [r for r in runs if r["status"] == "ok"]

        def stats(name):
            values = [r[name] for r in ok if r[name] is not None]
            if not values:
                return None, None
            # a spread needs two seeds: one would show a misleading ± 0
            return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None

        final, final_sd = stats("tail_loss")
        val, val_sd = stats("val_loss")
        seconds = [r["seconds"] for r in runs if r["seconds"] is not None]
        failed = [r for r in runs if r["status"] != "ok"]
        rows.append({"setting": runs[0]["setting"], "runs": len(runs), "ok": len(ok),
                     "tail_loss": final, "tail_loss_sd": final_sd,
                     "val_loss": val, "val_loss_sd": val_sd,
                     "seconds_per_run": statistics.fmean(seconds) if seconds else None,
                     "failure": (f"{failed[0]['status']}: {failed[0]['error']}" if failed
                                 else None)})

    def order(row):
        loss = row["val_loss"] if row["val_loss"] is not None else row["tail_loss"]
        return (loss is None, loss if loss is not None else 0.0)

    return sorted(rows, key=order)


def format_table(rows: list[dict], fields_: list[str]) -> str:
    """summarize's rows as text: rank, the swept fields_, runs ok, the losses
    (mean ± sd), seconds per run and the first failure."""
    def num(x, sd=None):
        if x is None:
            return "-"
        return f"{x:.4f}" + (f" ± {sd:.4f}" if sd is not None else "")

    def value(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    header = ["rank"] + fields_ + ["runs", "tail loss", "val loss", "s/run", "note"]
    lines = []
    for i, row in enumerate(rows):
        lines.append([str(i + 1)] + [value(row["setting"].get(f, "")) for f in fields_]
                     + [f"{row['ok']}/{row['runs']}", num(row["tail_loss"], row["tail_loss_sd"]),
                        num(row["val_loss"], row["val_loss_sd"]),
                        "-" if row["seconds_per_run"] is None else f"{row['seconds_per_run']:.3f}",
                        row["failure"] or ""])
    widths = [max(len(h), *(len(line[j]) for line in lines)) if lines else len(h)
              for j, h in enumerate(header)]
    def join(cells):  # numbers to the right, the note to the left
        return "  ".join([c.rjust(w) for c, w in zip(cells[:-1], widths)]
                         + [cells[-1]]).rstrip()

    out = [join(header)]
    out.append("-" * len(out[0]))
    out += [join(line) for line in lines]
    return "\n".join(out)


def write_csv(path: str, results: list[dict], fields_: list[str]) -> None:
    """Every run, in id order: id, seed, the swept fields_, status, losses, seconds, error."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "seed"] + fields_ + ["status", "tail_loss", "val_loss", "seconds",
                                               "error"])
        for r in sorted(results, key=lambda r: r["id"]):
            w.writerow([r["id"], r["seed"]] + [r["setting"].get(f, "") for f in fields_]
                       + [r["status"], r["tail_loss"], r["val_loss"], r["seconds"],
                          r["error"] or ""])


def write_json(path: str, results: list[dict], rows: list[dict], swept: list[str],
               fixed: dict, elapsed_s: float, data: dict | None = None) -> None:
    """The data ({"data": its name or path, "data_format": the formats read}),
    the swept and fixed fields, the time taken, whether it was interrupted,
    summarize's rows and every run in id order."""
    with open(path, "w") as f:
        json.dump({**(data or {}), "swept": swept, "fixed": fixed, "elapsed_s": elapsed_s,
                   "interrupted": getattr(results, "interrupted", False), "settings": rows,
                   "runs": sorted(results, key=lambda r: r["id"])}, f, indent=1)
        f.write("\n")
