//! `verify`: check the chain and checkpoint signatures of audit files, streaming.

use std::process::ExitCode;

use residency_proxy::evidence::{Lines, PublicKey, Verifier};

use super::{CliError, VerifyArgs};

/// Exit code of a log that does not verify.
const EXIT_BROKEN: u8 = 1;

/// Read every line of the files in order, print the verdict; exit 0 when it verifies, 1 when
/// it does not, 64 when a file or the key cannot be read.
pub fn cmd_verify(args: &VerifyArgs) -> Result<ExitCode, CliError> {
    let key = match &args.key {
        None => None,
        Some(p) => Some(PublicKey::load(p).map_err(|e| CliError::Input(e.to_string()))?),
    };
    let lines = Lines::open(&args.files, !args.no_progress)
        .map_err(|e| CliError::Input(format!("cannot read {e}")))?;
    let mut verifier = Verifier::new(key);
    for line in lines {
        match line {
            Ok(l) => verifier.line(&l.file, l.lineno, &l.bytes),
            Err(e) => {
                // Named "FILE:LINE: reason" by the source; a file left unread is a break.
                verifier.unreadable(std::path::Path::new(""), 0, &e.to_string());
                break;
            }
        }
    }
    let summary = verifier.finish();
    println!("{summary}");
    Ok(if summary.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_BROKEN)
    })
}
