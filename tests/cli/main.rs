//! The `virtlab` command end to end: default scenario, outputs, bad input, a user's C
//! program.

mod bad_input;
mod helpers;
mod out_dirs;
mod runs;
mod trace;
mod vms;
