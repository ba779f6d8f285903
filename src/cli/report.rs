//! `report FILE…`: the residency report of audit logs, on the terminal, as JSON or as one
//! HTML page.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

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
    let mut agg = Aggregator::new(opts);
    for path in &args.files {
        feed(path, &mut agg)?;
    }
    let r = agg.finish(ChainStatus::NotChecked);
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

/// Read one audit file into the report, line by line (plain files).
fn feed(path: &Path, agg: &mut Aggregator) -> Result<(), CliError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|e| CliError::Input(format!("{name}: {e}")))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    agg.file(&name);
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return Ok(()),
            Ok(_) => agg.line(&line),
            Err(e) => return Err(CliError::Os(format!("reading {name}: {e}"))),
        }
    }
}
