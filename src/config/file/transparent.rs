//! Compiling a transparent listener's own keys (`peek_timeout`, `peek_max_bytes`,
//! `host_must_resolve`) into [`TransparentListener`].

use super::raw::FileListener;
use super::{Compiler, Res};
use crate::config::transparent::{
    DEFAULT_PEEK_MAX_BYTES, DEFAULT_PEEK_TIMEOUT, MAX_PEEK_MAX_BYTES, MIN_PEEK_MAX_BYTES,
    TransparentListener,
};

impl Compiler<'_> {
    /// Refuse a transparent listener's keys on a listener of another kind.
    pub(super) fn no_transparent_keys(&self, l: &FileListener, i: usize) -> Res<()> {
        let transparent_only = [
            ("peek_timeout", l.peek_timeout.is_some()),
            ("peek_max_bytes", l.peek_max_bytes.is_some()),
            ("host_must_resolve", l.host_must_resolve.is_some()),
        ];
        if let Some((k, _)) = transparent_only.iter().find(|(_, set)| *set) {
            return Err(self.fail(
                l.name.span(),
                format!("listener[{i}].{k}"),
                None,
                "only transparent listeners take this key (set kind = \"transparent\")",
            ));
        }
        Ok(())
    }

    pub(super) fn transparent_listener(
        &self,
        l: &FileListener,
        i: usize,
        allowed_ports: Vec<u16>,
    ) -> Res<TransparentListener> {
        let key = |k: &str| format!("listener[{i}].{k}");
        let peek_timeout = self.duration(
            l.peek_timeout.as_ref(),
            &key("peek_timeout"),
            DEFAULT_PEEK_TIMEOUT,
        )?;
        let peek_max_bytes = self.int(
            l.peek_max_bytes.as_ref(),
            &key("peek_max_bytes"),
            DEFAULT_PEEK_MAX_BYTES,
            MIN_PEEK_MAX_BYTES,
            MAX_PEEK_MAX_BYTES,
        )?;
        Ok(TransparentListener {
            allowed_ports,
            peek_timeout,
            peek_max_bytes,
            host_must_resolve: l.host_must_resolve.unwrap_or(true),
        })
    }
}
