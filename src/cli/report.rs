//! `report FILE…`: the residency report of audit logs, on the terminal, as JSON or as one
//! HTML page.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use residency_proxy::evidence::{Lines, PublicKey, Verifier};
use residency_proxy::report::{self, Aggregator, Bound, ChainStatus, Options};

use super::CliError;

#[derive(Args)]
pub(super) struct ReportArgs {
    /// Audit log files, oldest first.
    #[arg(required = true, value_name = "FILE")]
    pub(super) files: Vec<PathBuf>,
    /// Count records at or after this time (RFC 3339, or a date: midnight UTC).
    #[arg(long, value_name = "TIME")]
    pub(super) since: Option<String>,
    /// Count records before this time (RFC 3339, or a date: midnight UTC).
    #[arg(long, value_name = "TIME")]
    pub(super) until: Option<String>,
    /// Also write the report as one self-contained HTML page to OUT.
    #[arg(long, value_name = "OUT")]
    pub(super) html: Option<PathBuf>,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    pub(super) json: bool,
    /// Name the clients that tried denied destinations by address, not by network.
    #[arg(long)]
    pub(super) clients: bool,
    /// Public key (SPKI PEM, from keygen's FILE.pub) to check checkpoint signatures with, as
    /// `verify --key` does; without it the hash chain is checked and signatures are not.
    #[arg(long, value_name = "PUB.pem")]
    pub(super) key: Option<PathBuf>,
    /// No progress bar, even on a terminal.
    #[arg(long)]
    pub(super) no_progress: bool,
}

pub(super) fn cmd_report(args: &ReportArgs) -> Result<ExitCode, CliError> {
    let bound = |t: &Option<String>| {
        t.as_deref()
            .map(Bound::parse)
            .transpose()
            .map_err(|e| CliError::Input(e.to_string()))
    };
    let opts = Options {
        since: bound(&args.since)?,
        until: bound(&args.until)?,
        clients: args.clients,
        ..Options::default()
    };
    let key = match &args.key {
        None => None,
        Some(p) => Some(PublicKey::load(p).map_err(|e| CliError::Input(e.to_string()))?),
    };
    let mut agg = Aggregator::new(opts);
    let chain = feed(&args.files, !args.no_progress, key, &mut agg)?;
    let r = agg.finish(chain);
    if let Some(out) = &args.html {
        let page = report::html(&r).map_err(|e| CliError::Os(e.to_string()))?;
        std::fs::write(out, page)
            .map_err(|e| CliError::Os(format!("writing {}: {e}", out.display())))?;
    }
    let text = if args.json {
        report::json(&r).map_err(|e| CliError::Os(e.to_string()))?
    } else {
        report::terminal(&r)
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", text.trim_end())
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::Os(format!("writing the report: {e}")))?;
    Ok(ExitCode::SUCCESS)
}

/// Read the files once, in order (plain or gzip, a progress bar on a terminal): every line
/// goes to the report and to the verifier, whose verdict heads the report.
fn feed(
    files: &[PathBuf],
    progress: bool,
    key: Option<PublicKey>,
    agg: &mut Aggregator,
) -> Result<ChainStatus, CliError> {
    let lines =
        Lines::open(files, progress).map_err(|e| CliError::Input(format!("cannot read {e}")))?;
    let mut verifier = Verifier::new(key);
    let mut current: Option<Arc<Path>> = None;
    for line in lines {
        let line = line.map_err(|e| CliError::Os(format!("reading {e}")))?;
        if current.as_ref() != Some(&line.file) {
            agg.file(&line.file.display().to_string());
            current = Some(line.file.clone());
        }
        verifier.line(&line.file, line.lineno, &line.bytes);
        agg.line(&line.bytes);
    }
    let summary = verifier.finish();
    let text = summary.to_string();
    Ok(if summary.ok {
        ChainStatus::Verified { text }
    } else {
        ChainStatus::Broken { text }
    })
}
