//! `pulp-bench`: a load generator that measures the scheduler and checks it
//! stayed correct while doing so.
//!
//! # How it runs
//! Each scenario gets a fresh database (a SQLite file, or a new PostgreSQL
//! database on the server given by `--database-url`) and a fresh
//! `pulp-scheduler` *process* (the real binary, found next to this one, so
//! that its peak RSS is its own); workers run *in-process* (the real worker
//! library, `noop`/`sleep` tasks), and clients are concurrent gRPC
//! connections. Figures: throughput scenarios run `--runs` times and report
//! the median; latency reports percentiles over all samples.
//!
//! # Modules
//! - [`env`]: databases, the scheduler process, workers, clients.
//! - [`scenarios`]: baseline, dispatch, e2e, latency, contention, backlog.
//! - [`verify`]: the reservation check from times measured in task bodies.
//! - [`stats`]: medians and percentiles.

pub mod env;
pub mod scenarios;
pub mod stats;
pub mod verify;

use env::Databases;
use scenarios::Sizes;
use serde_json::json;

/// Settings.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "pulp-bench",
    about = "Benchmark the Pulp scheduler and check its guarantees under load"
)]
pub struct Config {
    /// `sqlite://DIR/any.sqlite` (fresh files are made in DIR) or a
    /// PostgreSQL server URL (fresh databases are made on it). Default: a
    /// SQLite file in a temporary directory.
    #[arg(long, env = "PULP_BENCH_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Scenarios to run, comma-separated: baseline, dispatch, e2e, latency,
    /// contention, backlog.
    #[arg(
        long,
        default_value = "baseline,dispatch,e2e,latency,contention,backlog",
        value_delimiter = ','
    )]
    pub scenarios: Vec<String>,
    /// Repetitions of each throughput scenario (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Multiplies every task count (0.01 for a smoke run).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// A seconds-long run that checks correctness only (scale 0.02, 1 run).
    #[arg(long)]
    pub smoke: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs the scenarios and prints the figures; returns false when a
/// correctness check failed.
pub async fn run(mut config: Config) -> anyhow::Result<bool> {
    if config.smoke {
        config.scale = 0.02;
        config.runs = 1;
    }
    let scratch = tempfile::tempdir()?;
    let dbs = Databases::from_url(config.database_url.as_deref(), scratch.path())?;
    let scaled = |n: usize| ((n as f64 * config.scale).round() as usize).max(1);
    let sizes = Sizes {
        clients: 32,
        tasks: scaled(20_000).max(32),
        contention_tasks: scaled(10_000),
        contention_resources: 100,
        backlog: scaled(100_000),
        latency_samples: scaled(500).max(20),
        workers: 4,
        slots: 8,
    };
    let wanted = |name: &str| config.scenarios.iter().any(|s| s == name);
    let mut figures = serde_json::Map::new();
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let mut peak_rss: u64 = 0;
    let mut ok = true;
    let runs = config.runs.max(1);

    let mut baseline_rate = None;
    if wanted("baseline") || wanted("dispatch") {
        let rate = scenarios::median_of(runs, || scenarios::baseline(&dbs, sizes)).await?;
        baseline_rate = Some(rate);
        figures.insert("baseline".into(), json!({"rows_per_s": rate}));
        rows.push((
            "baseline".into(),
            "single-row commits/s".into(),
            format!("{rate:.0}"),
        ));
    }
    let mut dispatch_rate = None;
    let mut e2e_rate = None;
    if wanted("dispatch") || wanted("backlog") {
        let mut rates = Vec::with_capacity(runs);
        for _ in 0..runs {
            let (rate, rss) = scenarios::dispatch(&dbs, sizes).await?;
            peak_rss = peak_rss.max(rss);
            rates.push(rate);
        }
        let rate = stats::median(&rates);
        dispatch_rate = Some(rate);
        let ratio = baseline_rate.map(|b| rate / b);
        figures.insert(
            "dispatch".into(),
            json!({"dispatches_per_s": rate, "ratio_to_baseline": ratio}),
        );
        rows.push((
            "dispatch".into(),
            "dispatches/s".into(),
            format!("{rate:.0}"),
        ));
        if let Some(ratio) = ratio {
            rows.push((
                "dispatch".into(),
                "ratio to baseline".into(),
                format!("{ratio:.2}"),
            ));
        }
    }
    if wanted("e2e") || wanted("contention") || wanted("backlog") {
        let mut rates = Vec::with_capacity(runs);
        let mut scheduler_cpu = Vec::with_capacity(runs);
        let mut bench_cpu = Vec::with_capacity(runs);
        for _ in 0..runs {
            let (e2e, rss) = scenarios::e2e(&dbs, sizes).await?;
            peak_rss = peak_rss.max(rss);
            rates.push(e2e.tasks_per_s);
            scheduler_cpu.push(e2e.scheduler_cpu_us_per_task);
            bench_cpu.push(e2e.bench_cpu_us_per_task);
        }
        let rate = stats::median(&rates);
        let (scheduler_cpu, bench_cpu) = (stats::median(&scheduler_cpu), stats::median(&bench_cpu));
        e2e_rate = Some(rate);
        figures.insert(
            "e2e".into(),
            json!({"tasks_per_s": rate, "scheduler_cpu_us_per_task": scheduler_cpu,
                   "clients_and_workers_cpu_us_per_task": bench_cpu}),
        );
        rows.push((
            "e2e".into(),
            "completed tasks/s".into(),
            format!("{rate:.0}"),
        ));
        rows.push((
            "e2e".into(),
            "scheduler CPU us/task".into(),
            format!("{scheduler_cpu:.0}"),
        ));
        rows.push((
            "e2e".into(),
            "clients+workers CPU us/task".into(),
            format!("{bench_cpu:.0}"),
        ));
    }
    if wanted("latency") {
        let (lat, rss) = scenarios::latency(&dbs, sizes).await?;
        peak_rss = peak_rss.max(rss);
        figures.insert(
            "latency".into(),
            json!({"dispatch_to_start_ms": {"p50": lat.p50, "p99": lat.p99, "max": lat.max}, "samples": sizes.latency_samples}),
        );
        rows.push((
            "latency".into(),
            "dispatch-to-start p50 ms".into(),
            format!("{:.2}", lat.p50),
        ));
        rows.push((
            "latency".into(),
            "dispatch-to-start p99 ms".into(),
            format!("{:.2}", lat.p99),
        ));
        rows.push((
            "latency".into(),
            "dispatch-to-start max ms".into(),
            format!("{:.2}", lat.max),
        ));
    }
    if wanted("contention") {
        let mut rates = Vec::new();
        let mut worst = verify::Verdict::default();
        for run in 0..runs {
            let (rate, verdict, rss) =
                scenarios::contention(&dbs, sizes, 0xc0de + run as u64).await?;
            peak_rss = peak_rss.max(rss);
            rates.push(rate);
            worst.tasks += verdict.tasks;
            worst.overlaps += verdict.overlaps;
            worst.fifo_violations += verdict.fifo_violations;
            worst.not_completed += verdict.not_completed;
        }
        let rate = stats::median(&rates);
        ok &= worst.ok();
        let ratio = e2e_rate.map(|e| rate / e);
        figures.insert(
            "contention".into(),
            json!({"tasks_per_s": rate, "ratio_to_e2e": ratio, "overlaps": worst.overlaps,
                   "fifo_violations": worst.fifo_violations, "not_completed": worst.not_completed,
                   "tasks_checked": worst.tasks}),
        );
        rows.push(("contention".into(), "tasks/s".into(), format!("{rate:.0}")));
        if let Some(ratio) = ratio {
            rows.push((
                "contention".into(),
                "ratio to e2e".into(),
                format!("{ratio:.2}"),
            ));
        }
        rows.push((
            "contention".into(),
            "overlaps (must be 0)".into(),
            worst.overlaps.to_string(),
        ));
        rows.push((
            "contention".into(),
            "FIFO violations (must be 0)".into(),
            worst.fifo_violations.to_string(),
        ));
        rows.push((
            "contention".into(),
            "not completed (must be 0)".into(),
            worst.not_completed.to_string(),
        ));
    }
    if wanted("backlog") {
        let (b, rss) = scenarios::backlog(&dbs, sizes).await?;
        peak_rss = peak_rss.max(rss);
        let dispatch_ratio = dispatch_rate.map(|d| b.dispatch / d);
        let e2e_ratio = e2e_rate.map(|e| b.e2e / e);
        figures.insert(
            "backlog".into(),
            json!({"waiting": sizes.backlog, "dispatches_per_s": b.dispatch, "dispatch_ratio": dispatch_ratio,
                   "tasks_per_s": b.e2e, "e2e_ratio": e2e_ratio}),
        );
        rows.push((
            "backlog".into(),
            format!("dispatches/s behind {} waiting", sizes.backlog),
            format!("{:.0}", b.dispatch),
        ));
        rows.push((
            "backlog".into(),
            "dispatch ratio".into(),
            dispatch_ratio.map_or("-".into(), |r| format!("{r:.2}")),
        ));
        rows.push((
            "backlog".into(),
            "completed tasks/s".into(),
            format!("{:.0}", b.e2e),
        ));
        rows.push((
            "backlog".into(),
            "e2e ratio".into(),
            e2e_ratio.map_or("-".into(), |r| format!("{r:.2}")),
        ));
    }
    figures.insert(
        "scheduler_peak_rss_mb".into(),
        json!(peak_rss as f64 / 1_048_576.0),
    );
    rows.push((
        "all".into(),
        "scheduler peak RSS MB".into(),
        format!("{:.1}", peak_rss as f64 / 1_048_576.0),
    ));

    if config.json {
        let doc = json!({
            "database": dbs.kind(),
            "runs": runs,
            "scale": config.scale,
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "correct": ok,
            "scenarios": figures,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "pulp-bench on {} ({} runs per throughput figure, scale {})",
            dbs.kind(),
            runs,
            config.scale
        );
        println!("{:<12} {:<36} {:>12}", "SCENARIO", "FIGURE", "VALUE");
        for (scenario, figure, value) in rows {
            println!("{scenario:<12} {figure:<36} {value:>12}");
        }
    }
    Ok(ok)
}
