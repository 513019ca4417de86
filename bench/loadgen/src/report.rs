//! `report --dir D`: the summary tables from the raw files `run.sh` wrote into a results directory.
//!
//! Inputs (all CSV with a header line; missing files are treated as empty):
//! - `raw.csv`: one loadgen row per case and figure (see `Row::HEADER`).
//! - `wrk.csv`: `case,figure,concurrency,seconds,requests,req_per_s,p50_ms,p99_ms,non2xx,socket_errors`.
//! - `rss.csv`: `proxy,idle_kib,peak_load_kib,held_conns,held_ok,held_rss_kib,peak_kib`.
//! - `skipped.csv`: `case,reason`.
//! - `cpu.csv`: `case,figure,proxy_cpu_s,upstream_cpu_s` (user + system time during the row's run).
//!
//! Output: Markdown on stdout, one table per figure with ratios to direct and to tinyproxy, the wrk
//! cross-check, memory, and the targets with PASS / MISS / not measured.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

/// Cases in display order. The baseline for a case is the direct / tinyproxy case of the same scheme.
const CASES: [(&str, &str); 7] = [
    ("direct-http", "direct, plain HTTP"),
    ("tinyproxy-http", "tinyproxy, absolute-form HTTP"),
    ("guardian-http", "guardian, inspecting HTTP (absolute-form)"),
    ("direct-https", "direct, TLS"),
    ("tinyproxy-connect", "tinyproxy, CONNECT tunnel + TLS"),
    ("guardian-connect", "guardian, CONNECT tunnel + TLS (no inspection)"),
    ("guardian-mitm", "guardian, inspecting HTTPS (MITM)"),
];

const FIGURES: [(&str, &str); 4] = [
    ("get1k-c1", "1 KiB GET, concurrency 1, keep-alive"),
    ("get1k-c32", "1 KiB GET, concurrency 32, keep-alive"),
    ("get16m-c1", "16 MiB download, one stream"),
    ("post64k-c8", "64 KiB POST (upstream returns the SHA-256 of the body), concurrency 8"),
];

fn is_https(case: &str) -> bool {
    !case.ends_with("-http")
}

fn baseline_direct(case: &str) -> &'static str {
    if is_https(case) {
        "direct-https"
    } else {
        "direct-http"
    }
}

fn baseline_tinyproxy(case: &str) -> &'static str {
    if is_https(case) {
        "tinyproxy-connect"
    } else {
        "tinyproxy-http"
    }
}

/// A CSV file as header-keyed records. No quoting: our files hold none (reasons have commas replaced).
struct Table {
    rows: Vec<HashMap<String, String>>,
}

impl Table {
    fn read(path: &Path) -> Table {
        let Ok(text) = std::fs::read_to_string(path) else {
            return Table { rows: Vec::new() };
        };
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let Some(header) = lines.next() else {
            return Table { rows: Vec::new() };
        };
        let keys: Vec<&str> = header.split(',').collect();
        let rows = lines
            .map(|l| {
                // The last column may hold commas (skip reasons): split at most keys.len() times.
                keys.iter().map(|k| k.to_string()).zip(l.splitn(keys.len(), ',').map(str::to_string)).collect()
            })
            .collect();
        Table { rows }
    }

    fn find(&self, pairs: &[(&str, &str)]) -> Option<&HashMap<String, String>> {
        self.rows.iter().rev().find(|r| pairs.iter().all(|(k, v)| r.get(*k).map(String::as_str) == Some(*v)))
    }
}

fn num(row: &HashMap<String, String>, key: &str) -> Option<f64> {
    row.get(key).and_then(|v| v.parse::<f64>().ok()).filter(|v| v.is_finite())
}

fn fmt_num(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(v) => format!("{v:.digits$}"),
        None => "-".into(),
    }
}

fn ratio(v: Option<f64>, base: Option<f64>) -> Option<f64> {
    match (v, base) {
        (Some(v), Some(b)) if b > 0.0 => Some(v / b),
        _ => None,
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    match r {
        Some(r) => format!("{r:.2}x"),
        None => "-".into(),
    }
}

fn mib(kib: Option<f64>) -> String {
    match kib {
        Some(k) => format!("{:.1}", k / 1024.0),
        None => "-".into(),
    }
}

pub fn report(dir: &Path) -> String {
    let raw = Table::read(&dir.join("raw.csv"));
    let wrk = Table::read(&dir.join("wrk.csv"));
    let rss = Table::read(&dir.join("rss.csv"));
    let skipped = Table::read(&dir.join("skipped.csv"));
    let cpu = Table::read(&dir.join("cpu.csv"));
    let mut out = String::new();
    let skip_reason = |case: &str| -> Option<String> {
        let family = if case.starts_with("guardian-mitm") { "guardian-mitm" } else { case };
        skipped
            .find(&[("case", family)])
            .or_else(|| if case.starts_with("guardian") { skipped.find(&[("case", "guardian")]) } else { None })
            .and_then(|r| r.get("reason").cloned())
    };

    let _ = writeln!(out, "Cases:\n");
    for (case, label) in CASES {
        let _ = writeln!(out, "- `{case}`: {label}");
    }
    let _ = writeln!(out);
    for (figure, title) in FIGURES {
        let _ = writeln!(out, "### {figure}: {title}\n");
        let _ = writeln!(
            out,
            "| case | req/s | MB/s | p50 ms | p99 ms | errors | vs direct | vs tinyproxy | p50 added ms | CPU µs/req proxy / upstream / client |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (case, _) in CASES {
            let Some(row) = raw.find(&[("case", case), ("figure", figure)]) else {
                let why = skip_reason(case).unwrap_or_else(|| "not run".into());
                let _ = writeln!(out, "| {case} | SKIPPED: {why} | | | | | | | | |");
                continue;
            };
            // The throughput that matters for the figure.
            let key = if figure.starts_with("get16m") { "mb_per_s" } else { "req_per_s" };
            let base_d = raw.find(&[("case", baseline_direct(case)), ("figure", figure)]);
            let base_t = raw.find(&[("case", baseline_tinyproxy(case)), ("figure", figure)]);
            let errors = num(row, "errors").unwrap_or(0.0);
            let mark = if errors > 0.0 { " **ERRORS**" } else { "" };
            let added = base_d.and_then(|b| Some(num(row, "p50_ms")? - num(b, "p50_ms")?));
            let n = num(row, "all_ok").filter(|n| *n > 0.0);
            let per_req = |key: &str| -> Option<f64> {
                let c = cpu.find(&[("case", case), ("figure", figure)]).and_then(|r| num(r, key))?;
                Some(c * 1e6 / n?)
            };
            let client_cpu = num(row, "client_cpu_s").and_then(|c| Some(c * 1e6 / n?));
            let proxy_cpu = if case.starts_with("direct") { None } else { per_req("proxy_cpu_s") };
            let _ = writeln!(
                out,
                "| {case}{mark} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} / {} |",
                fmt_num(num(row, "req_per_s"), 0),
                fmt_num(num(row, "mb_per_s"), 1),
                fmt_num(num(row, "p50_ms"), 3),
                fmt_num(num(row, "p99_ms"), 3),
                fmt_num(Some(errors), 0),
                fmt_ratio(ratio(num(row, key), base_d.and_then(|b| num(b, key)))),
                fmt_ratio(ratio(num(row, key), base_t.and_then(|b| num(b, key)))),
                fmt_num(added, 3),
                fmt_num(proxy_cpu, 0),
                fmt_num(per_req("upstream_cpu_s"), 0),
                fmt_num(client_cpu, 0),
            );
        }
        let _ = writeln!(out);
    }

    if !wrk.rows.is_empty() {
        let _ =
            writeln!(out, "### wrk cross-check: 1 KiB GET, plain HTTP (absolute-form Lua script through a proxy)\n");
        let _ = writeln!(out, "| case | concurrency | req/s | p50 ms | p99 ms | non-2xx | socket errors | vs direct |");
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for r in &wrk.rows {
            let case = r.get("case").map(String::as_str).unwrap_or("?");
            let conc = r.get("concurrency").map(String::as_str).unwrap_or("?");
            let base = wrk.find(&[("case", "direct-http"), ("concurrency", conc)]);
            let _ = writeln!(
                out,
                "| {case} | {conc} | {} | {} | {} | {} | {} | {} |",
                fmt_num(num(r, "req_per_s"), 0),
                fmt_num(num(r, "p50_ms"), 3),
                fmt_num(num(r, "p99_ms"), 3),
                fmt_num(num(r, "non2xx"), 0),
                fmt_num(num(r, "socket_errors"), 0),
                fmt_ratio(ratio(num(r, "req_per_s"), base.and_then(|b| num(b, "req_per_s")))),
            );
        }
        let _ = writeln!(out);
    }

    let _ = writeln!(out, "### Memory (VmRSS / VmHWM of the proxy process, MiB)\n");
    let _ = writeln!(
        out,
        "| proxy | idle RSS | peak after the load figures | RSS with N idle connections held | held OK / N | peak after the hold |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    for r in &rss.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} / {} | {} |",
            r.get("proxy").map(String::as_str).unwrap_or("?"),
            mib(num(r, "idle_kib")),
            mib(num(r, "peak_load_kib")),
            mib(num(r, "held_rss_kib")),
            fmt_num(num(r, "held_ok"), 0),
            fmt_num(num(r, "held_conns"), 0),
            mib(num(r, "peak_kib")),
        );
    }
    let _ = writeln!(out);

    out.push_str(&targets(&raw, &rss));
    out
}

/// The targets, evaluated where this run has the figures.
fn targets(raw: &Table, rss: &Table) -> String {
    let get =
        |case: &str, figure: &str, key: &str| raw.find(&[("case", case), ("figure", figure)]).and_then(|r| num(r, key));
    let clean = |case: &str, figure: &str| {
        raw.find(&[("case", case), ("figure", figure)]).and_then(|r| num(r, "errors")).map(|e| e == 0.0)
    };
    let mut out = String::new();
    let _ = writeln!(out, "### Targets (issue 11, guardian inspecting, ratios to direct in this run)\n");
    let _ = writeln!(out, "| figure | target | measured | verdict |");
    let _ = writeln!(out, "|---|---|---|---|");
    let mut line = |figure: &str, target: &str, measured: Option<String>, pass: Option<bool>| {
        let verdict = match pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "not measured",
        };
        let _ = writeln!(out, "| {figure} | {target} | {} | {verdict} |", measured.unwrap_or_else(|| "-".into()));
    };
    let r = ratio(get("guardian-http", "get1k-c32", "req_per_s"), get("direct-http", "get1k-c32", "req_per_s"));
    let ok = clean("guardian-http", "get1k-c32");
    line(
        "HTTP 1 KiB GET, c32, req/s",
        ">= 0.25x direct",
        r.map(|r| format!("{r:.2}x")),
        r.map(|r| r >= 0.25 && ok == Some(true)),
    );
    let added = match (get("guardian-http", "get1k-c1", "p50_ms"), get("direct-http", "get1k-c1", "p50_ms")) {
        (Some(g), Some(d)) => Some(g - d),
        _ => None,
    };
    line(
        "HTTP 1 KiB GET, c1, p50 added latency",
        "<= 0.15 ms over direct",
        added.map(|a| format!("{a:.3} ms")),
        added.map(|a| a <= 0.15 && clean("guardian-http", "get1k-c1") == Some(true)),
    );
    let r = ratio(get("guardian-mitm", "get1k-c32", "req_per_s"), get("direct-https", "get1k-c32", "req_per_s"));
    line(
        "HTTPS (MITM, keep-alive) 1 KiB GET, c32, req/s",
        ">= 0.25x direct TLS",
        r.map(|r| format!("{r:.2}x")),
        r.map(|r| r >= 0.25 && clean("guardian-mitm", "get1k-c32") == Some(true)),
    );
    let r = ratio(get("guardian-http", "get16m-c1", "mb_per_s"), get("direct-http", "get16m-c1", "mb_per_s"));
    line(
        "16 MiB download MB/s, HTTP",
        ">= 0.5x direct",
        r.map(|r| format!("{r:.2}x")),
        r.map(|r| r >= 0.5 && clean("guardian-http", "get16m-c1") == Some(true)),
    );
    let r = ratio(get("guardian-mitm", "get16m-c1", "mb_per_s"), get("direct-https", "get16m-c1", "mb_per_s"));
    line(
        "16 MiB download MB/s, HTTPS (MITM)",
        ">= 0.4x direct",
        r.map(|r| format!("{r:.2}x")),
        r.map(|r| r >= 0.4 && clean("guardian-mitm", "get16m-c1") == Some(true)),
    );
    let r = ratio(get("guardian-http", "post64k-c8", "req_per_s"), get("direct-http", "post64k-c8", "req_per_s"));
    let exact = clean("guardian-http", "post64k-c8");
    line(
        "64 KiB POST, c8, req/s",
        ">= 0.2x direct, bodies byte-exact",
        r.map(|r| format!("{r:.2}x, {}", if exact == Some(true) { "all digests matched" } else { "DIGEST ERRORS" })),
        r.map(|r| r >= 0.2 && exact == Some(true)),
    );
    line("SSE per-event added delay", "median <= 0.5 ms, max <= 2 ms", None, None);
    let mem = |proxy: &str, key: &str| rss.find(&[("proxy", proxy)]).and_then(|r| num(r, key));
    let idle = [mem("guardian", "idle_kib"), mem("guardian-mitm", "idle_kib")].into_iter().flatten().reduce(f64::max);
    line("RSS idle", "<= 8 MiB", idle.map(|k| format!("{:.1} MiB", k / 1024.0)), idle.map(|k| k <= 8.0 * 1024.0));
    let peak = [mem("guardian", "peak_kib"), mem("guardian-mitm", "peak_kib")].into_iter().flatten().reduce(f64::max);
    line(
        "RSS peak (c32 load, 200 open connections)",
        "<= 48 MiB",
        peak.map(|k| format!("{:.1} MiB", k / 1024.0)),
        peak.map(|k| k <= 48.0 * 1024.0),
    );
    line("RSS over a 10-minute soak", "flat (+-10%)", None, None);
    out
}
