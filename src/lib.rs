//! virtlab: trap-and-emulate, paravirtualization and hardware-assisted virtualization,
//! side by side on real KVM. This library is the harness behind the `virtlab` command:
//! it picks engines by mode, builds workloads, runs them and keeps every result.

pub mod engines;
