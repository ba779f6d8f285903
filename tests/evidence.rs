//! The tamper-evident audit trail end to end: logs written by the real writer (with a key made
//! here) verify, and each tampering is found at its line; rotation, restarts and gzip; the
//! `keygen` and `verify` commands; the `[audit]` signing keys of the configuration.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use residency_proxy::audit::{self, AuditRecord, AuditTarget, Intent, SealOptions, StartInfo};
use residency_proxy::evidence::chain;
use residency_proxy::evidence::{BreakKind, Lines, PublicKey, SigningKey, Summary, Verifier};
use residency_proxy::policy::{Mode, Verdict};

const WAIT: Duration = Duration::from_millis(50);

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_residency-proxy"))
}

fn rec(n: u64) -> AuditRecord {
    AuditRecord {
        ts: audit::now_rfc3339(),
        listener: format!("l{n}"),
        intent: Intent::Forward,
        decision: Verdict::Allow,
        mode: Mode::Enforce,
        dest_host: Some("api.example.com".into()),
        bytes_up: n,
        ..AuditRecord::default()
    }
}

fn seal(key: Option<&Arc<SigningKey>>, every: u64) -> SealOptions {
    SealOptions {
        start: StartInfo {
            config_digest: Some(chain::sha256_hex(b"config")),
            data_versions: "geoip=2026-11-01".into(),
            profile: "uk-adequate".into(),
            db_version: "2026-11-01".into(),
        },
        key: key.cloned(),
        checkpoint_records: every,
        checkpoint_interval: Duration::from_secs(3600),
    }
}

/// Write `records` records to `path` with the real writer; after each count in `rotate_at`
/// the file is renamed to `path.N` and the writer reopens. Returns the files, oldest first.
async fn write_log(
    path: &Path,
    key: Option<&Arc<SigningKey>>,
    records: u64,
    every: u64,
    rotate_at: &[u64],
) -> Vec<PathBuf> {
    let (sink, writer) =
        audit::spawn_sealed(AuditTarget::File(path.into()), 64, WAIT, seal(key, every))
            .expect("spawn the writer");
    let mut files = Vec::new();
    for n in 1..=records {
        sink.record(rec(n)).await;
        if rotate_at.contains(&n) {
            // The writer has taken every record so far, and the reopen before them.
            while sink.written() < n {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let rotated = PathBuf::from(format!("{}.{}", path.display(), files.len() + 1));
            std::fs::rename(path, &rotated).expect("rotate");
            sink.reopen();
            files.push(rotated);
        }
    }
    writer.shutdown().await.expect("flush");
    assert_eq!(sink.dropped() + sink.unwritten(), 0);
    files.push(path.into());
    files
}

fn verify(files: &[PathBuf], key: Option<PublicKey>) -> Summary {
    let mut v = Verifier::new(key);
    for line in Lines::open(files, false).expect("open") {
        let line = line.expect("read");
        v.line(&line.file, line.lineno, &line.bytes);
    }
    v.finish()
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("read")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).expect("write");
}

fn key() -> Arc<SigningKey> {
    Arc::new(SigningKey::generate().expect("key"))
}

/// Where the first break is, and what it is.
fn broken_at(s: &Summary) -> (u64, BreakKind) {
    let b = s
        .broken
        .as_ref()
        .unwrap_or_else(|| panic!("verified, but should not: {s}"));
    (b.line, b.what)
}

/// The 1-based line of the record whose `bytes.up` is `n`.
fn line_of(lines: &[String], n: u64) -> usize {
    let needle = format!(r#""listener":"l{n}","#);
    lines
        .iter()
        .position(|l| l.contains(&needle))
        .expect("record")
        + 1
}

#[tokio::test]
async fn a_signed_log_from_the_writer_verifies_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = key();
    let path = dir.path().join("audit.log");
    let files = write_log(&path, Some(&key), 25, 10, &[]).await;
    let s = verify(&files, Some(key.public()));
    assert!(s.ok, "{s}");
    // start, 25 records, checkpoints after 10 and 20, the final one.
    assert_eq!(
        (s.records, s.lines, s.checkpoints, s.chains),
        (25, 29, 3, 1)
    );
    assert!(s.signed && s.signatures_checked);
    assert_eq!(s.key_id.as_deref(), Some(key.id()));
    let text = s.to_string();
    assert!(text.starts_with("OK: 25 records in 29 lines"), "{text}");
    assert!(text.contains(" from 20"), "{text}");

    let lines = read_lines(&path);
    let start: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(start["kind"], "start");
    assert_eq!(start["key.id"], key.id());
    assert_eq!(start["seq"], 0);
    assert_eq!(start["config.digest"], chain::sha256_hex(b"config"));
    let last: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(
        (last["kind"].as_str(), last["final"].as_bool()),
        (Some("checkpoint"), Some(true))
    );
    // A flow record keeps its 25 keys, then seq and chain; no kind.
    let record: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(record.len(), 27);
    assert!(!record.contains_key("kind"));
    assert!(
        lines[1].contains(r#""closed_by":null,"seq":1,"chain":""#),
        "{}",
        lines[1]
    );

    // Without the key: the chain checks, the signatures are said not to be checked.
    let s = verify(&files, None);
    assert!(s.ok && !s.signatures_checked, "{s}");
    assert!(s.to_string().contains("not checked"), "{s}");
}

#[tokio::test]
async fn each_tampering_is_found_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let key = key();
    let public = key.public();
    let path = dir.path().join("audit.log");
    write_log(&path, Some(&key), 30, 10, &[]).await;
    let lines = read_lines(&path);
    let check = |name: &str, lines: &[String], key: Option<PublicKey>| {
        let p = dir.path().join(name);
        write_lines(&p, lines);
        verify(&[p], key)
    };

    let at = line_of(&lines, 7);
    let mut edited = lines.clone();
    edited[at - 1] = edited[at - 1].replace(r#""bytes.up":7"#, r#""bytes.up":8"#);
    let s = check("edited", &edited, Some(public.clone()));
    assert_eq!(broken_at(&s), (at as u64, BreakKind::Edited), "{s}");
    assert!(
        s.to_string().contains(&format!("edited:{at}: edited")),
        "{s}"
    );

    let mut deleted = lines.clone();
    deleted.remove(at - 1);
    let s = check("deleted", &deleted, None);
    assert_eq!(broken_at(&s), (at as u64, BreakKind::Deleted), "{s}");

    let mut swapped = lines.clone();
    swapped.swap(at - 1, at);
    let s = check("swapped", &swapped, None);
    assert_eq!(broken_at(&s), (at as u64, BreakKind::Reordered), "{s}");

    // The tail cut, final checkpoint and all: every line left checks, but not the end.
    let cut_at = line_of(&lines, 25);
    let s = check("truncated", &lines[..cut_at], Some(public.clone()));
    assert_eq!(broken_at(&s), (cut_at as u64, BreakKind::Truncated), "{s}");
    assert!(
        s.to_string()
            .contains("truncated after the last checkpoint"),
        "{s}"
    );
    // Even without the key, a signed chain without its final checkpoint is truncated.
    let s = check("truncated", &lines[..cut_at], None);
    assert_eq!(broken_at(&s).1, BreakKind::Truncated, "{s}");

    let s = check("wrong-key", &lines, Some(key_pub_other()));
    assert_eq!(broken_at(&s), (1, BreakKind::WrongKey), "{s}");
}

fn key_pub_other() -> PublicKey {
    SigningKey::generate().unwrap().public()
}

#[tokio::test]
async fn a_chain_rewritten_without_the_key_fails_at_the_next_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let key = key();
    let path = dir.path().join("audit.log");
    write_log(&path, Some(&key), 30, 10, &[]).await;
    let lines = read_lines(&path);
    // Edit record 12, then recompute every link after it (no key is needed for that),
    // the checkpoints' signed.chain included: the chain checks, the signature cannot.
    let edit = line_of(&lines, 12);
    let mut prev = chain::GENESIS;
    let mut forged = Vec::new();
    let mut old_to_new: Vec<(String, String)> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let cut = line.rfind(",\"chain\":\"").unwrap();
        let old_link = line[cut + 10..cut + 74].to_owned();
        // The canonical bytes less their closing brace: they end `,"seq":N`.
        let mut head = line[..cut].to_owned();
        if i + 1 == edit {
            head = head.replace(r#""bytes.up":12"#, r#""bytes.up":13"#);
        }
        for (old, new) in &old_to_new {
            head = head.replace(old, new);
        }
        let link = chain::expected(&prev, head.as_bytes());
        prev = link;
        let new_link = String::from_utf8(link.to_vec()).unwrap();
        old_to_new.push((old_link, new_link.clone()));
        forged.push(format!("{head},\"chain\":\"{new_link}\"}}"));
    }
    let forged_path = dir.path().join("forged.log");
    write_lines(&forged_path, &forged);
    let s = verify(std::slice::from_ref(&forged_path), None);
    assert!(s.ok, "the forged chain checks without the key: {s}");
    let s = verify(&[forged_path], Some(key.public()));
    let checkpoint = forged
        .iter()
        .enumerate()
        .skip(edit)
        .find(|(_, l)| l.contains(r#""kind":"checkpoint""#))
        .map(|(i, _)| i as u64 + 1)
        .unwrap();
    assert_eq!(broken_at(&s), (checkpoint, BreakKind::BadSignature), "{s}");
}

#[tokio::test]
async fn rotated_files_verify_in_order_and_each_alone_and_splices_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    let key = key();
    let public = key.public();
    let path = dir.path().join("audit.log");
    let files = write_log(&path, Some(&key), 30, 100, &[10, 20]).await;
    assert_eq!(files.len(), 3);
    let s = verify(&files, Some(public.clone()));
    assert!(s.ok, "{s}");
    assert_eq!((s.records, s.chains, s.files), (30, 1, 3));
    for f in &files {
        let s = verify(std::slice::from_ref(f), Some(public.clone()));
        assert!(s.ok, "{}: {s}", f.display());
    }
    assert!(verify(&files[..1], Some(public.clone())).continues_later);
    let second = read_lines(&files[1]);
    assert!(second[0].contains(r#""kind":"continue""#), "{}", second[0]);

    // A missing middle file: the third does not continue the first.
    let s = verify(&[files[0].clone(), files[2].clone()], None);
    assert_eq!(broken_at(&s), (1, BreakKind::Spliced), "{s}");
    assert_eq!(s.broken.unwrap().file, files[2]);
    // Out of order.
    let s = verify(&[files[1].clone(), files[0].clone()], None);
    assert!(!s.ok, "{s}");

    // Files of two runs spliced: the other run's rotated file after this run's first.
    let other = dir.path().join("other.log");
    let other_files = write_log(&other, Some(&key), 20, 100, &[10]).await;
    let s = verify(&[files[0].clone(), other_files[1].clone()], None);
    assert_eq!(broken_at(&s), (1, BreakKind::Spliced), "{s}");
    // And spliced into one file: this run's first lines, then the other's second file.
    let mut spliced = read_lines(&files[0]);
    spliced.extend(read_lines(&other_files[1]));
    let joined = dir.path().join("joined.log");
    write_lines(&joined, &spliced);
    let s = verify(&[joined], None);
    assert_eq!(
        broken_at(&s),
        (read_lines(&files[0]).len() as u64 + 1, BreakKind::Spliced),
        "{s}"
    );
}

#[tokio::test]
async fn restarts_appending_to_one_file_are_chains_in_a_row() {
    let dir = tempfile::tempdir().unwrap();
    let key = key();
    let path = dir.path().join("audit.log");
    write_log(&path, Some(&key), 5, 100, &[]).await;
    write_log(&path, Some(&key), 5, 100, &[]).await;
    let s = verify(std::slice::from_ref(&path), Some(key.public()));
    assert!(s.ok, "{s}");
    assert_eq!((s.records, s.chains, s.checkpoints), (10, 2, 2));
    // The first run killed before its final checkpoint: its chain is truncated.
    let mut lines = read_lines(&path);
    let final_of_first = 7; // start, 5 records, final checkpoint
    lines.remove(final_of_first - 1);
    write_lines(&path, &lines);
    let s = verify(&[path], Some(key.public()));
    assert_eq!(broken_at(&s), (6, BreakKind::Truncated), "{s}");
}

#[tokio::test]
async fn an_unsigned_log_verifies_and_says_it_cannot_see_a_cut_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let files = write_log(&path, None, 10, 100, &[5]).await;
    let s = verify(&files, None);
    assert!(s.ok && !s.signed, "{s}");
    assert_eq!((s.records, s.checkpoints), (10, 0));
    assert!(s.to_string().contains("not signed"), "{s}");
    let s = verify(&files, Some(key().public()));
    assert_eq!(broken_at(&s), (1, BreakKind::WrongKey), "{s}");
}

#[tokio::test]
async fn gzip_files_verify_like_plain_ones() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let key = key();
    let path = dir.path().join("audit.log");
    let files = write_log(&path, Some(&key), 20, 7, &[10]).await;
    let gz = dir.path().join("audit.log.1.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    enc.write_all(&std::fs::read(&files[0]).unwrap()).unwrap();
    enc.finish().unwrap();
    let s = verify(&[gz.clone(), files[1].clone()], Some(key.public()));
    assert!(s.ok, "{s}");
    assert_eq!(s.records, 20);
}

#[tokio::test]
async fn a_checkpoint_is_written_when_the_interval_passes() {
    let dir = tempfile::tempdir().unwrap();
    let key = key();
    let path = dir.path().join("audit.log");
    let mut opts = seal(Some(&key), 1_000_000);
    opts.checkpoint_interval = Duration::from_millis(50);
    let (sink, writer) =
        audit::spawn_sealed(AuditTarget::File(path.clone()), 8, WAIT, opts).unwrap();
    sink.record(rec(1)).await;
    // Poll (no fixed sleep): the writer wakes for the interval by itself.
    let mut found = false;
    for _ in 0..500 {
        let text = std::fs::read_to_string(&path).unwrap();
        if text.lines().any(|l| l.contains(r#""kind":"checkpoint""#)) {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(found, "no checkpoint after the interval");
    writer.shutdown().await.unwrap();
    let s = verify(&[path], Some(key.public()));
    assert!(s.ok, "{s}");
    assert_eq!(s.checkpoints, 2);
}

#[tokio::test]
async fn the_verify_command_exits_0_1_or_64_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let key = key();
    let pub_path = dir.path().join("key.pub");
    std::fs::write(&pub_path, key.public().to_pem().unwrap()).unwrap();
    let path = dir.path().join("audit.log");
    write_log(&path, Some(&key), 12, 5, &[]).await;

    let out = bin()
        .arg("verify")
        .arg(&path)
        .arg("--key")
        .arg(&pub_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.starts_with("OK: 12 records"), "{stdout}");

    let mut lines = read_lines(&path);
    let at = line_of(&lines, 3);
    lines[at - 1] = lines[at - 1].replace("api.example.com", "api.example.net");
    write_lines(&path, &lines);
    let out = bin().arg("verify").arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let want = format!("BROKEN at {}:{at}: edited", path.display());
    assert!(stdout.starts_with(&want), "{stdout}");

    let out = bin().arg("verify").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = bin()
        .arg("verify")
        .arg(dir.path().join("missing"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = bin()
        .arg("verify")
        .arg(&path)
        .arg("--key")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "a log is not a key");
}

#[test]
fn keygen_makes_a_key_pair_the_config_accepts_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("audit.key");
    let out = bin()
        .arg("keygen")
        .arg("--out")
        .arg(&out_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = SigningKey::load(&out_path).unwrap();
    let public = PublicKey::load(&dir.path().join("audit.key.pub")).unwrap();
    assert_eq!(key.id(), public.id());
    assert!(stdout.contains(key.id()), "{stdout}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = bin()
        .arg("keygen")
        .arg("--out")
        .arg(&out_path)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(64));
    assert_eq!(
        SigningKey::load(&out_path).unwrap().id(),
        key.id(),
        "untouched"
    );

    // The configuration loads the key; a missing or wrong one refuses, naming file and line.
    let config = |extra: &str| {
        let text = std::fs::read_to_string("config/residency-proxy.toml").unwrap();
        let text = text.replacen("[audit]", &format!("[audit]\n{extra}"), 1);
        assert!(text.contains(extra), "the example has an [audit] section");
        let p = dir.path().join("proxy.toml");
        std::fs::write(&p, text).unwrap();
        bin().arg("check").arg(&p).output().unwrap()
    };
    let ok = config(&format!(
        "signing_key = \"{}\"\ncheckpoint_records = 500\ncheckpoint_interval = \"30s\"",
        out_path.display()
    ));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let missing = config("signing_key = \"no-such.key\"");
    assert_eq!(missing.status.code(), Some(64));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("proxy.toml:") && err.contains("audit.signing_key"),
        "{err}"
    );
    let public_as_private = config(&format!(
        "signing_key = \"{}\"",
        dir.path().join("audit.key.pub").display()
    ));
    assert_eq!(public_as_private.status.code(), Some(64));
    let zero = config("checkpoint_records = 0");
    assert_eq!(zero.status.code(), Some(64));
}

/// The report runs the verification as it reads and says so first, in every form.
#[tokio::test]
async fn the_report_heads_every_form_with_the_verdict_of_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let key = key();
    let pub_path = dir.path().join("key.pub");
    std::fs::write(&pub_path, key.public().to_pem().unwrap()).unwrap();
    let path = dir.path().join("audit.log");
    write_log(&path, Some(&key), 12, 5, &[]).await;
    let report = |extra: &[&str]| {
        let out = bin()
            .arg("report")
            .args(extra)
            .arg(&path)
            .arg("--key")
            .arg(&pub_path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    let json: serde_json::Value = serde_json::from_str(&report(&["--json"])).unwrap();
    assert_eq!(json["chain"]["status"], "verified", "{json}");
    let text = json["chain"]["text"].as_str().unwrap_or_default();
    assert!(text.starts_with("OK: 12 records"), "{text}");
    assert_eq!(json["totals"]["flows"], 12, "{json}");
    let terminal = report(&[]);
    assert!(terminal.contains("OK: 12 records"), "{terminal}");

    // One edited byte: the report still counts, and says the chain is broken, and where.
    let mut lines = read_lines(&path);
    let at = line_of(&lines, 3);
    lines[at - 1] = lines[at - 1].replace("api.example.com", "api.example.net");
    write_lines(&path, &lines);
    let json: serde_json::Value = serde_json::from_str(&report(&["--json"])).unwrap();
    assert_eq!(json["chain"]["status"], "broken", "{json}");
    let text = json["chain"]["text"].as_str().unwrap_or_default();
    let want = format!("BROKEN at {}:{at}: edited", path.display());
    assert!(text.starts_with(&want), "{text}");
    let html = dir.path().join("report.html");
    report(&["--html", html.to_str().unwrap()]);
    let page = std::fs::read_to_string(&html).unwrap();
    // The page escapes the path's slashes; the file name, line and kind are there as written.
    assert!(
        page.contains("Audit chain: BROKEN: BROKEN at"),
        "the page says the chain is broken"
    );
    let named = format!("audit.log:{at}: edited");
    assert!(page.contains(&named), "the page names the break");
}
