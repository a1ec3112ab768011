"""Parsing of Locust's CSV and the service's /metrics, and the report (report.md + PNG plots)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

# Requests per batch: the service's histogram (label `model`), and stock BentoML's adaptive batcher's
# (label `method_name`, the API) for the baseline server.
BATCH_METRICS = {
    "model_serving_batch_requests": "model",
    "bentoml_service_adaptive_batch_size": "method_name",
}


def locust_stats(stats_csv: Path) -> dict[str, dict]:
    """Rows of Locust's `<prefix>_stats.csv` by request name (the 'Aggregated' row excluded)."""
    rows = {}
    with open(stats_csv, newline="") as f:
        for row in csv.DictReader(f):
            if row["Name"] == "Aggregated":
                continue

            def num(key: str, row: dict = row) -> float:
                value = row.get(key, "")
                return float(value) if value not in ("", "N/A") else float("nan")

            rows[row["Name"]] = {
                "requests": int(row["Request Count"]),
                "failures": int(row["Failure Count"]),
                "rps": num("Requests/s"),
                "p50_ms": num("50%"),
                "p95_ms": num("95%"),
                "p99_ms": num("99%"),
                "max_ms": num("Max Response Time"),
                "avg_ms": num("Average Response Time"),
            }
    return rows


def batch_histogram(metrics_text: str) -> dict[str, tuple[float, float]]:
    """(sum, count) of the requests-per-batch histogram, per model (the service) or per API method
    (stock BentoML), from /metrics."""
    out: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(metrics_text):
        label = BATCH_METRICS.get(family.name)
        if label is None:
            continue
        for sample in family.samples:
            key = sample.labels.get(label, "")
            acc = out.setdefault(key, [0.0, 0.0])
            if sample.name.endswith("_sum"):
                acc[0] += sample.value
            elif sample.name.endswith("_count"):
                acc[1] += sample.value
    return {k: (v[0], v[1]) for k, v in out.items()}


def mean_batch(before: dict, after: dict, key: str) -> float:
    """Mean requests per batch of a model (or API) between two /metrics scrapes (nan when none ran)."""
    s0, c0 = before.get(key, (0.0, 0.0))
    s1, c1 = after.get(key, (0.0, 0.0))
    return (s1 - s0) / (c1 - c0) if c1 > c0 else float("nan")


COLUMNS = [
    ("server", "{}"), ("device", "{}"), ("backend", "{}"), ("workers", "{}"), ("items_per_request", "{}"),
    ("users", "{}"),
    ("rps", "{:,.0f}"), ("items_per_s", "{:,.0f}"), ("offline_pct", "{:.0f}"),
    ("p50_ms", "{:.1f}"), ("p95_ms", "{:.1f}"), ("p99_ms", "{:.1f}"), ("max_ms", "{:.0f}"),
    ("failures", "{}"), ("mean_batch", "{:.1f}"),
    ("queue_ms", "{:.2f}"), ("compute_ms", "{:.2f}"), ("other_ms", "{:.2f}"),
    ("server_cpu_pct", "{:.0f}"), ("generator_cpu_pct", "{:.0f}"),
    ("gpu_util_pct", "{:.0f}"), ("gpu_mem_mb", "{:,.0f}"), ("checked", "{}"),
    ("rss_mb", "{:.0f}"), ("rss_growth_pct", "{:+.1f}"),
]  # fmt: skip


def markdown_table(rows: list[dict]) -> str:
    head = "| " + " | ".join(name for name, _ in COLUMNS) + " |"
    sep = "|" + "---|" * len(COLUMNS)

    def cell(value, fmt: str) -> str:
        return "-" if isinstance(value, float) and math.isnan(value) else fmt.format(value)

    body = ["| " + " | ".join(cell(r.get(name, math.nan), fmt) for name, fmt in COLUMNS) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def is_v2(endpoint: str) -> bool:
    return endpoint.startswith("v2_")


def protocol_table(results: list[dict]) -> str:
    """Each V2 run next to the plain JSON endpoint's run of the same model, server, backend, users
    and items per request: throughput ratio and where the time went."""

    def key(r: dict) -> tuple:
        return (*series_key(r), r.get("model"), r["users"], r.get("items_per_request"))

    compared = {key(r) for r in results if is_v2(r["endpoint"])}
    plain = {
        key(r): r
        for r in results
        if key(r) in compared and not is_v2(r["endpoint"]) and r["endpoint"] != "classify_digit_image"
    }
    lines = [
        "| model | items/request | users | server/device/backend | endpoint | items/s | vs JSON endpoint "
        "| p50 ms | p99 ms | queue ms | compute ms | other ms |",
        "|" + "---|" * 12,
    ]
    rows = sorted(
        (r for r in results if key(r) in plain and (is_v2(r["endpoint"]) or plain[key(r)] is r)),
        key=lambda r: (key(r), is_v2(r["endpoint"]), r["endpoint"]),
    )
    for r in rows:
        base = plain[key(r)]["items_per_s"]
        cells = [
            r["model"], r["items_per_request"], r["users"], "/".join(series_key(r)[:3]), r["endpoint"],
            f"{r['items_per_s']:,.0f}", f"{r['items_per_s'] / base:.2f}x" if base else "-",
            f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}",
            *(f"{r.get(k, math.nan):.2f}" for k in ("queue_ms", "compute_ms", "other_ms")),
        ]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def latency_split_plot(results: list[dict], out_dir: Path) -> Path | None:
    """Mean latency of every run split into queue, compute and the rest (HTTP, parsing, network)."""
    rows = [r for r in results if not math.isnan(r.get("queue_ms", math.nan))]
    if not rows:
        return None
    rows.sort(key=lambda r: (r["endpoint"], *series_key(r), r["users"]))
    labels = [f"{r['endpoint']} {r['backend']} u{r['users']}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(rows) + 2), 4.5))
    bottom = [0.0] * len(rows)
    for part, color in (("queue_ms", "C1"), ("compute_ms", "C0"), ("other_ms", "C7")):
        values = [max(0.0, r[part]) for r in rows]
        ax.bar(labels, values, bottom=bottom, color=color, label=part.removesuffix("_ms"))
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set(ylabel="mean latency (ms)", title="Where the time went (Server-Timing, client mean latency)")
    ax.tick_params(axis="x", labelrotation=60, labelsize=7)
    ax.legend()
    fig.tight_layout()
    path = out_dir / "latency_split.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def series_key(row: dict) -> tuple[str, ...]:
    return row["server"], row["device"], row["backend"], f"w{row['workers']}"


def case_of(row: dict) -> str:
    """An endpoint at one request size: `classify_digits`, `classify_digits-x64` (file names, titles)."""
    items = row.get("items_per_request", 1)
    return row["endpoint"] + (f"-x{items}" if items != 1 else "")


def plots(results: list[dict], out_dir: Path) -> list[Path]:
    """Per endpoint and request size: latency (p50, p99) vs throughput and throughput vs users, a line
    per server/device/backend."""
    paths = []
    for endpoint in sorted({case_of(r) for r in results}):
        rows = [r for r in results if case_of(r) == endpoint]
        fig, (ax_lat, ax_thr) = plt.subplots(1, 2, figsize=(12, 4.5))
        for i, key in enumerate(sorted({series_key(r) for r in rows})):
            series = sorted((r for r in rows if series_key(r) == key), key=lambda r: r["users"])
            label = "/".join(key)
            thr = [r["items_per_s"] for r in series]
            ax_lat.plot(thr, [r["p50_ms"] for r in series], "o-", color=f"C{i}", label=f"{label} p50")
            ax_lat.plot(thr, [r["p99_ms"] for r in series], "s--", color=f"C{i}", label=f"{label} p99")
            ax_thr.plot([r["users"] for r in series], thr, "o-", color=f"C{i}", label=label)
        ax_lat.set(
            xlabel="throughput (items/s)", ylabel="latency (ms)", title=f"{endpoint}: latency vs throughput"
        )
        ax_thr.set(
            xlabel="concurrent users", ylabel="throughput (items/s)", title=f"{endpoint}: throughput vs users"
        )
        for ax in (ax_lat, ax_thr):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"{endpoint}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def write_report(results: list[dict], out_dir: Path, header: str) -> Path:
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    plots(results, out_dir)
    parts = [header]
    for endpoint in sorted({case_of(r) for r in results}):
        rows = sorted(
            (r for r in results if case_of(r) == endpoint),
            key=lambda r: (*series_key(r), r["users"]),
        )
        parts += [f"## {endpoint}", "", markdown_table(rows), "", f"![{endpoint}]({endpoint}.png)", ""]
    comparison = protocol_table(results)
    if comparison:
        parts += ["## Open Inference Protocol vs the JSON endpoints", "", comparison, ""]
    if latency_split_plot(results, out_dir):
        parts += ["## Where the time went", "", "![latency split](latency_split.png)", ""]
    parts.append(
        "Sections: an endpoint at one request size (`-x64`: 64 items per request). "
        "Columns: rps = requests/s; items_per_request = rows or images per request; "
        "items_per_s = rows or images/s; latencies from Locust (client side); "
        "mean_batch = requests per batch of the model (the service's model_serving_batch_requests "
        "histogram, stock BentoML's adaptive_batch_size, delta over the run); "
        "offline_pct = items_per_s as % of the "
        "offline ceiling of the same device/backend (`loadtests.offline`, best batch the service can form); "
        "server_cpu_pct = CPU of the server's process tree and generator_cpu_pct of the Locust process "
        "tree, both over the seconds the load ran (first request to last answer; 100 = one core; rps "
        "is over the same seconds); "
        "gpu_util_pct = NVML's GPU busy % (mean over the run), gpu_mem_mb = GPU memory used at the end; "
        "queue_ms / compute_ms = mean of the answers' `Server-Timing` queue wait and batch run, other_ms = "
        "Locust's mean latency minus both (HTTP, parsing and validation, the generator); "
        "checked = responses the locustfile checked for "
        "status, shape and values (wrong ones count as failures); rss_mb = resident memory of the server's "
        "workers at the end of the run, rss_growth_pct = its change over the run (sampled every 0.5 s, "
        "<prefix>-resources.csv)."
    )
    path = out_dir / "report.md"
    path.write_text("\n".join(parts) + "\n")
    return path
