//! The batch: lines serialized and sealed, not yet written, each kept until its write
//! succeeded.

/// Lines serialized but not yet written, each kept until its write has succeeded.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) buf: Vec<u8>,
    /// End offset in `buf` of each line (after its newline).
    pub(super) ends: Vec<usize>,
    /// Whether each line is a flow record (not a start, continue or checkpoint line): only
    /// records are counted as written or unwritten and sent to the fallback.
    pub(super) flow: Vec<bool>,
}

impl Batch {
    /// The line ending at `ends[i]`, without its newline.
    pub(super) fn line(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.buf[start..self.ends[i].saturating_sub(1)]
    }

    /// End the line being built in `buf` with its newline.
    pub(super) fn push_end(&mut self, flow: bool) {
        self.buf.push(b'\n');
        self.ends.push(self.buf.len());
        self.flow.push(flow);
    }

    /// Flow records among lines `from..`.
    pub(super) fn flows(&self, from: usize) -> u64 {
        self.flow[from..].iter().filter(|&&f| f).count() as u64
    }

    pub(super) fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
        self.flow.clear();
    }
}
