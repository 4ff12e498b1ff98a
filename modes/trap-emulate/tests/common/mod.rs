//! Shared helpers of the KVM integration tests.

#![allow(dead_code)]

use std::time::Duration;

use contract::{GuestImage, Limits, RunOptions};
use iced_x86::code_asm::CodeAssembler;

pub use machine::testing::kvm_or_skip;

/// Options with short limits for hostile guests.
pub fn short() -> RunOptions {
    RunOptions {
        limits: Limits {
            wall: Duration::from_secs(2),
            max_exits: 100_000,
            ..Limits::default()
        },
        ..RunOptions::default()
    }
}

/// Assembles a flat image at the default load address.
pub fn image(name: &str, f: impl FnOnce(&mut CodeAssembler)) -> GuestImage {
    let mut a = CodeAssembler::new(64).unwrap();
    f(&mut a);
    let bytes = a.assemble(0x10_0000).unwrap();
    GuestImage::flat(name, bytes, 0x10_0000, 0x10_0000)
}

/// A flat image of raw bytes.
pub fn raw(name: &str, bytes: &[u8]) -> GuestImage {
    GuestImage::flat(name, bytes.to_vec(), 0x10_0000, 0x10_0000)
}
