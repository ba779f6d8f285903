//! `update-ranges`: download each cloud provider's official range feed, validate it and write
//! it atomically to a directory that `jurisdiction.cloud_dir` names.
//!
//! A feed is refused, with one line naming the provider and the reason, and the file already in
//! the directory kept, when it cannot be fetched in time, is not the provider's format (a
//! truncated download fails here), holds fewer prefixes than the provider's minimum, or has
//! shrunk by more than `--max-shrink` against the file it would replace (unless `--force`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use residency_proxy::jurisdiction::cloud::{Provider, Validation};
use residency_proxy::jurisdiction::fetch::Fetcher;
use residency_proxy::jurisdiction::update;

/// `update-ranges` options.
#[derive(Args)]
pub struct UpdateRangesArgs {
    /// Directory to write the feeds to (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Providers to fetch (aws, azure, gcp, oracle, digitalocean, cloudflare; default: all).
    /// Repeatable or comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "NAME")]
    provider: Vec<String>,
    /// Accept a feed that shrank by more than --max-shrink.
    #[arg(long)]
    force: bool,
    /// Largest accepted shrink against the file it replaces, in percent.
    #[arg(long, default_value_t = 20.0, value_name = "PERCENT")]
    max_shrink: f64,
    /// Fewest prefixes a feed must hold (default: a per-provider minimum).
    #[arg(long, value_name = "N")]
    min_prefixes: Option<usize>,
    /// Time limit for each provider's download, in seconds.
    #[arg(long, default_value_t = 120.0, value_name = "SECONDS")]
    timeout: f64,
    /// Fetch PROVIDER's feed from URL instead of its official address. Repeatable.
    #[arg(long, value_name = "PROVIDER=URL")]
    url: Vec<String>,
    /// Extra trusted CA certificates (PEM), e.g. an inspecting proxy's.
    #[arg(long, value_name = "PATH")]
    ca_file: Option<PathBuf>,
}

fn providers(args: &UpdateRangesArgs) -> Result<Vec<Provider>, String> {
    if args.provider.is_empty() {
        return Ok(Provider::ALL.to_vec());
    }
    args.provider
        .iter()
        .map(|n| {
            Provider::from_name(n).ok_or_else(|| {
                format!(
                    "--provider {n}: unknown provider (expected one of {})",
                    Provider::ALL.map(Provider::name).join(", ")
                )
            })
        })
        .collect()
}

fn urls(args: &UpdateRangesArgs) -> Result<Vec<(Provider, String)>, String> {
    args.url
        .iter()
        .map(|u| {
            let (name, url) = u
                .split_once('=')
                .ok_or_else(|| format!("--url {u}: expected PROVIDER=URL"))?;
            let p = Provider::from_name(name)
                .ok_or_else(|| format!("--url {u}: unknown provider '{name}'"))?;
            Ok((p, url.to_string()))
        })
        .collect()
}

/// Run `update-ranges`. Exit 0 when every provider was written, 1 when any was refused.
pub fn run(args: &UpdateRangesArgs) -> Result<ExitCode, String> {
    let providers = providers(args)?;
    let urls = urls(args)?;
    if !(0.0..=100.0).contains(&args.max_shrink) {
        return Err(format!(
            "--max-shrink {}: expected a percentage from 0 to 100",
            args.max_shrink
        ));
    }
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        return Err(format!(
            "--timeout {}: expected seconds above 0",
            args.timeout
        ));
    }
    std::fs::create_dir_all(&args.out).map_err(|e| format!("--out {}: {e}", args.out.display()))?;
    let fetcher = Fetcher::new(
        args.ca_file.as_deref(),
        Duration::from_secs_f64(args.timeout),
    )?;
    let validation = Validation {
        min_prefixes: args.min_prefixes,
        max_shrink: args.max_shrink / 100.0,
        force: args.force,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let mut failed = false;
    for p in providers {
        let url = urls
            .iter()
            .rev()
            .find(|(q, _)| *q == p)
            .map_or_else(|| p.feed_url().to_string(), |(_, u)| u.clone());
        let path = args.out.join(p.file_name());
        match runtime.block_on(update_one(&fetcher, p, &url, &args.out, &validation)) {
            Ok(line) => println!("{}: {line}", p.name()),
            Err(reason) => {
                failed = true;
                let kept = if path.exists() {
                    format!("kept {}", path.display())
                } else {
                    "nothing written".to_string()
                };
                eprintln!(
                    "residency-proxy: update-ranges {}: refused: {reason}; {kept}",
                    p.name()
                );
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn update_one(
    fetcher: &Fetcher,
    p: Provider,
    url: &str,
    out: &std::path::Path,
    v: &Validation,
) -> Result<String, String> {
    let feed = update::download(fetcher, p, url).await?;
    update::store(&feed, out, v).map(|s| s.summary())
}
