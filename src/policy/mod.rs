//! Stage 5 of the pipeline: may this client send data there?
//!
//! Pure: no I/O, no async, no logging.

pub mod profile;

pub use profile::{Class, Profile};
