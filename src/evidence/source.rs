//! Audit files as lines: the files in the order given, each plain or gzip (told by its magic
//! bytes, not its name), read in bounded memory, with a progress bar by bytes on a terminal.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flate2::read::MultiGzDecoder;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The longest line read; a longer one is an error (no audit line comes near it).
pub const MAX_LINE: usize = 1 << 20;

/// The first bytes of a gzip member (RFC 1952).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// One line of one file, without its newline.
#[derive(Debug, Clone)]
pub struct Line {
    /// The file it is in.
    pub file: Arc<Path>,
    /// Its number in that file, from 1.
    pub lineno: u64,
    /// Its bytes, less the `\n`.
    pub bytes: Vec<u8>,
}

/// Counts the raw bytes read from a file into the progress bar.
struct Counted {
    file: File,
    bar: ProgressBar,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

/// The files' lines, in order: an `Iterator<Item = io::Result<Line>>`. An error opening or
/// reading a file is yielded once and that file is left; the next file follows.
pub struct Lines {
    paths: Vec<PathBuf>,
    /// The next file of `paths` to open.
    next: usize,
    current: Option<(Arc<Path>, Box<dyn BufRead>, u64)>,
    bar: ProgressBar,
}

impl std::fmt::Debug for Lines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lines").finish_non_exhaustive()
    }
}

impl Lines {
    /// Read `paths` in the order given. With `progress`, and stderr a terminal, a progress bar
    /// by bytes (of the files as stored) is drawn on stderr. Fails now if a file is missing.
    pub fn open(paths: &[PathBuf], progress: bool) -> io::Result<Lines> {
        let mut total = 0;
        for p in paths {
            let meta = std::fs::metadata(p)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
            total += meta.len();
        }
        let bar = if progress && io::IsTerminal::is_terminal(&io::stderr()) {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style);
            }
            bar
        } else {
            ProgressBar::hidden()
        };
        Ok(Lines {
            paths: paths.to_vec(),
            next: 0,
            current: None,
            bar,
        })
    }

    fn open_next(&mut self) -> Option<io::Result<()>> {
        let path = self.paths.get(self.next)?.clone();
        self.next += 1;
        let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => return Some(Err(named(e))),
        };
        let mut magic = [0u8; 2];
        let gzip = match read_magic(&mut file, &mut magic) {
            Ok(n) => n == 2 && magic == GZIP_MAGIC,
            Err(e) => return Some(Err(named(e))),
        };
        let counted = Counted {
            file,
            bar: self.bar.clone(),
        };
        let reader: Box<dyn BufRead> = if gzip {
            Box::new(BufReader::with_capacity(
                1 << 16,
                MultiGzDecoder::new(BufReader::with_capacity(1 << 16, counted)),
            ))
        } else {
            Box::new(BufReader::with_capacity(1 << 16, counted))
        };
        self.current = Some((Arc::from(path.as_path()), reader, 0));
        Some(Ok(()))
    }
}

/// Read the first two bytes and rewind.
fn read_magic(file: &mut File, magic: &mut [u8; 2]) -> io::Result<usize> {
    use std::io::Seek;
    let mut n = 0;
    while n < 2 {
        match file.read(&mut magic[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    file.seek(io::SeekFrom::Start(0))?;
    Ok(n)
}

/// Read one line into `out` (without its newline), at most [`MAX_LINE`] bytes. `Ok(false)`
/// at the end of the input.
fn read_line(r: &mut dyn BufRead, out: &mut Vec<u8>) -> io::Result<bool> {
    out.clear();
    let mut any = false;
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(any);
        }
        any = true;
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (buf.len(), false),
        };
        if out.len() + take > MAX_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a line longer than {MAX_LINE} bytes"),
            ));
        }
        out.extend_from_slice(&buf[..take]);
        r.consume(if done { take + 1 } else { take });
        if done {
            return Ok(true);
        }
    }
}

impl Iterator for Lines {
    type Item = io::Result<Line>;

    fn next(&mut self) -> Option<io::Result<Line>> {
        loop {
            if self.current.is_none() {
                match self.open_next() {
                    None => {
                        self.bar.finish_and_clear();
                        return None;
                    }
                    Some(Err(e)) => return Some(Err(e)),
                    Some(Ok(())) => {}
                }
            }
            let (file, reader, lineno) = self.current.as_mut()?;
            let mut bytes = Vec::with_capacity(512);
            match read_line(reader.as_mut(), &mut bytes) {
                Ok(true) => {
                    *lineno += 1;
                    return Some(Ok(Line {
                        file: Arc::clone(file),
                        lineno: *lineno,
                        bytes,
                    }));
                }
                Ok(false) => self.current = None,
                Err(e) => {
                    let what = format!("{}:{}: {e}", file.display(), *lineno + 1);
                    self.current = None;
                    return Some(Err(io::Error::new(e.kind(), what)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn plain_and_gzip_files_read_as_the_same_lines_in_the_order_given() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("a.log");
        std::fs::write(&plain, "one\ntwo\n").unwrap();
        // A gzip file named like a plain one: told by its magic bytes; no final newline.
        let gz = dir.path().join("b.log");
        let mut enc = flate2::write::GzEncoder::new(
            File::create(&gz).unwrap(),
            flate2::Compression::default(),
        );
        enc.write_all(b"three\nfour").unwrap();
        enc.finish().unwrap();
        let got: Vec<(String, u64, String)> = Lines::open(&[plain, gz], false)
            .unwrap()
            .map(|l| {
                let l = l.unwrap();
                let name = l.file.file_name().unwrap().to_string_lossy().into_owned();
                (name, l.lineno, String::from_utf8(l.bytes).unwrap())
            })
            .collect();
        let want = [
            ("a.log", 1, "one"),
            ("a.log", 2, "two"),
            ("b.log", 1, "three"),
        ]
        .into_iter()
        .chain([("b.log", 2, "four")])
        .map(|(f, n, s)| (f.to_owned(), n, s.to_owned()))
        .collect::<Vec<_>>();
        assert_eq!(got, want);
    }

    #[test]
    fn a_missing_file_fails_at_open_and_an_overlong_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Lines::open(&[dir.path().join("nope")], false).is_err());
        let big = dir.path().join("big.log");
        std::fs::write(&big, vec![b'x'; MAX_LINE + 1]).unwrap();
        let mut lines = Lines::open(&[big], false).unwrap();
        assert!(lines.next().unwrap().is_err());
        assert!(lines.next().is_none());
    }
}
