//! `keygen`: a new Ed25519 key for signed audit checkpoints (`audit.signing_key`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use residency_proxy::evidence::SigningKey;

use super::{CliError, KeygenArgs};

/// Write the private key (PKCS#8 PEM, mode 0600, never over an existing file) to `--out` and
/// the public key (SPKI PEM) to `--out` + `.pub`; print the key id.
pub fn cmd_keygen(args: &KeygenArgs) -> Result<ExitCode, CliError> {
    let public_path = pub_path(&args.out);
    for p in [&args.out, &public_path] {
        if p.exists() {
            return Err(CliError::Input(format!(
                "{} exists: keygen does not overwrite a key",
                p.display()
            )));
        }
    }
    let key = SigningKey::generate().map_err(|e| CliError::Os(e.to_string()))?;
    let private = key.to_pem().map_err(|e| CliError::Os(e.to_string()))?;
    let public = key
        .public()
        .to_pem()
        .map_err(|e| CliError::Os(e.to_string()))?;
    write_new(&args.out, private.as_bytes(), 0o600)?;
    write_new(&public_path, public.as_bytes(), 0o644)?;
    println!("private key: {} (keep it secret)", args.out.display());
    println!("public key:  {}", public_path.display());
    println!("key.id:      {}", key.id());
    Ok(ExitCode::SUCCESS)
}

/// `FILE.pub` beside `FILE`.
fn pub_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Create `path` (failing if it exists) with `mode`, and write `bytes` to it.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CliError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let fail = |e: std::io::Error| CliError::Os(format!("{}: {e}", path.display()));
    let mut f = opts.open(path).map_err(fail)?;
    f.write_all(bytes).map_err(fail)?;
    f.sync_all().map_err(fail)
}
