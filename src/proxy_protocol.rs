//! Placeholder until the PROXY protocol module lands.
/// Accepted versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// v1.
    V1,
    /// v2.
    V2,
    /// Either.
    Any,
}
