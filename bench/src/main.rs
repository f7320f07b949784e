//! `pulp-bench`: parse settings, run the scenarios, print the figures.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = pulp_bench::Config::parse();
    let ok = pulp_bench::run(config).await?;
    if !ok {
        eprintln!("correctness check failed: see the table");
        std::process::exit(1);
    }
    Ok(())
}
