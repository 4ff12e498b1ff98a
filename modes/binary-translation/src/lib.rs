//! The binary-translation engine (placeholder root; filled below).

pub mod layout;
pub mod translate;
