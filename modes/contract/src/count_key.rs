//! The name of one counter a run produces: the keys of an [`Oracle`](crate::Oracle) and of
//! a record's `expected` and `mismatches`.
//!
//! A key is written as its name — `exits:IoOut`, `port_writes:0xe9`, `port_reads:0x61`,
//! `traps:cli`, `hypercalls:console_write`, `injections` — on screen, in CSV and in JSON,
//! and [`FromStr`] reads exactly those names back, so every `results.json` written since
//! the names were introduced still loads. Keys order as their names do.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::record::{ExitKind, RunRecord};

/// One counter a run produces, as the oracle names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CountKey {
    /// Exits of one kind. The oracle for exits is complete: kinds it does not list are
    /// expected to be zero.
    Exits(ExitKind),
    /// `out` exits to one port.
    PortWrites(u16),
    /// `in` exits from one port.
    PortReads(u16),
    /// Traps of one mnemonic (trap-and-emulate).
    Traps(String),
    /// Hypercalls of one name (paravirt).
    Hypercalls(String),
    /// Interrupts the VMM injected or reflected into the guest.
    Injections,
    /// A counter of a translating engine (`translation:blocks`, `translation:chains`…).
    Translation(String),
    /// A counter of a device that moves data (`device:virtio:notifications`,
    /// `device:ata:commands`…).
    Device(String),
    /// A counter of a shadow MMU (`shadow:hidden_faults`, `shadow:pages_built`…).
    Shadow(String),
}

impl CountKey {
    /// Reads this counter from a record.
    pub fn measure(&self, r: &RunRecord) -> u64 {
        match self {
            CountKey::Exits(k) => r.exit_count(*k),
            CountKey::PortWrites(p) => r.io_ports.get(p).map_or(0, |c| c.writes),
            CountKey::PortReads(p) => r.io_ports.get(p).map_or(0, |c| c.reads),
            CountKey::Traps(m) => r.traps.get(m).copied().unwrap_or(0),
            CountKey::Hypercalls(h) => r.hypercalls.get(h).copied().unwrap_or(0),
            CountKey::Injections => r.injections,
            CountKey::Translation(t) => r.translation.get(t).copied().unwrap_or(0),
            CountKey::Device(d) => r.device.get(d).copied().unwrap_or(0),
            CountKey::Shadow(s) => r.shadow.get(s).copied().unwrap_or(0),
        }
    }

    /// The part of the name before the colon (all of it for `injections`). No family's
    /// name is the beginning of another's.
    const fn family(&self) -> &'static str {
        match self {
            CountKey::Exits(_) => "exits",
            CountKey::PortWrites(_) => "port_writes",
            CountKey::PortReads(_) => "port_reads",
            CountKey::Traps(_) => "traps",
            CountKey::Hypercalls(_) => "hypercalls",
            CountKey::Injections => "injections",
            CountKey::Translation(_) => "translation",
            CountKey::Device(_) => "device",
            CountKey::Shadow(_) => "shadow",
        }
    }
}

impl fmt::Display for CountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let family = self.family();
        match self {
            CountKey::Exits(k) => write!(f, "{family}:{k}"),
            CountKey::PortWrites(p) | CountKey::PortReads(p) => write!(f, "{family}:{p:#x}"),
            CountKey::Traps(name)
            | CountKey::Hypercalls(name)
            | CountKey::Translation(name)
            | CountKey::Device(name)
            | CountKey::Shadow(name) => {
                write!(f, "{family}:{name}")
            }
            CountKey::Injections => f.write_str(family),
        }
    }
}

/// The lowercase hex digits of a port as its name writes them (`0xe9` → `e9`, `0x0` → `0`),
/// compared as the names compare.
fn hex_digits(port: u16) -> ([u8; 4], usize) {
    let len = (16 - port.leading_zeros()).div_ceil(4).max(1) as usize;
    let mut digits = [0; 4];
    for (i, d) in digits.iter_mut().take(len).enumerate() {
        *d = ((port >> (4 * (len - 1 - i))) & 0xf) as u8;
    }
    (digits, len)
}

/// Keys order as their names do, so a map of keys lists its entries in the order a map of
/// their names would: the order of the tables, the CSV rows and the JSON maps.
impl Ord for CountKey {
    fn cmp(&self, other: &Self) -> Ordering {
        // Families differ before either name ends, so the family decides between them.
        self.family()
            .cmp(other.family())
            .then_with(|| match (self, other) {
                (CountKey::Exits(a), CountKey::Exits(b)) => a.name().cmp(b.name()),
                (CountKey::PortWrites(a), CountKey::PortWrites(b))
                | (CountKey::PortReads(a), CountKey::PortReads(b)) => {
                    let ((a, la), (b, lb)) = (hex_digits(*a), hex_digits(*b));
                    a[..la].cmp(&b[..lb])
                }
                (CountKey::Traps(a), CountKey::Traps(b))
                | (CountKey::Hypercalls(a), CountKey::Hypercalls(b))
                | (CountKey::Translation(a), CountKey::Translation(b))
                | (CountKey::Device(a), CountKey::Device(b))
                | (CountKey::Shadow(a), CountKey::Shadow(b)) => a.cmp(b),
                // Injections, the one key of its family.
                _ => Ordering::Equal,
            })
    }
}

impl PartialOrd for CountKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A counter name that names no counter: an unknown family, an exit kind that does not
/// exist, or a port not written as the records write ports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown counter `{}`: {why} (counters are exits:KIND, port_writes:0xPORT, \
     port_reads:0xPORT, traps:MNEMONIC, hypercalls:NAME, translation:NAME, device:NAME, shadow:NAME and \
     injections)",
    shown(key)
)]
pub struct UnknownCountKey {
    /// The name as given.
    pub key: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// At most 40 characters of a name from a file, control characters escaped, for a message.
fn shown(key: &str) -> String {
    const MAX: usize = 40;
    let mut s: String = key.chars().take(MAX).flat_map(char::escape_debug).collect();
    if key.chars().nth(MAX).is_some() {
        s.push('…');
    }
    s
}

/// A port as its name writes it: `0x` and lowercase hex digits without leading zeros.
fn port(name: &str) -> Option<u16> {
    let p = u16::from_str_radix(name.strip_prefix("0x")?, 16).ok()?;
    (format!("{p:#x}") == name).then_some(p)
}

impl FromStr for CountKey {
    type Err = UnknownCountKey;

    /// Reads a name [`Display`](fmt::Display) wrote, and only such a name: the one inverse
    /// of the other.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why| UnknownCountKey { key: s.into(), why };
        if s == "injections" {
            return Ok(CountKey::Injections);
        }
        let (family, name) = s
            .split_once(':')
            .ok_or_else(|| bad("no `:` between the family and the name"))?;
        let port_of = |name| {
            port(name)
                .ok_or_else(|| bad("a port is written 0x and lowercase hex digits without leading zeros, as in 0xe9"))
        };
        match family {
            "exits" => ExitKind::ALL
                .into_iter()
                .find(|k| k.name() == name)
                .map(CountKey::Exits)
                .ok_or_else(|| bad("no such exit kind")),
            "port_writes" => port_of(name).map(CountKey::PortWrites),
            "port_reads" => port_of(name).map(CountKey::PortReads),
            "traps" => Ok(CountKey::Traps(name.into())),
            "hypercalls" => Ok(CountKey::Hypercalls(name.into())),
            "translation" => Ok(CountKey::Translation(name.into())),
            "device" => Ok(CountKey::Device(name.into())),
            "shadow" => Ok(CountKey::Shadow(name.into())),
            "injections" => Err(bad("injections are counted without a name")),
            _ => Err(bad("no such family of counters")),
        }
    }
}

/// As its name, `exits:IoOut`.
impl Serialize for CountKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// From its name; a name that names no counter is an error that says which and why.
impl<'de> Deserialize<'de> for CountKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl Visitor<'_> for Name {
            type Value = CountKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a counter name such as `exits:IoOut` or `traps:cli`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CountKey, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Name)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A key of every variant and every exit kind, with ports and names that order
    /// differently as numbers and as text.
    fn every_key() -> Vec<CountKey> {
        let mut keys: Vec<CountKey> = ExitKind::ALL.into_iter().map(CountKey::Exits).collect();
        for p in [
            0, 1, 0xf, 0x10, 0x1f, 0x61, 0xe9, 0xf4, 0x100, 0xfff, 0x1000, 0xffff,
        ] {
            keys.extend([CountKey::PortWrites(p), CountKey::PortReads(p)]);
        }
        for name in [
            "cli",
            "#de",
            "Zed",
            "mov to cr8",
            "pte write",
            "",
            "a:b",
            "é",
        ] {
            keys.extend([
                CountKey::Traps(name.into()),
                CountKey::Hypercalls(name.into()),
            ]);
        }
        keys.extend(
            ["console_write", "rejected:multicall:unknown"].map(|h| CountKey::Hypercalls(h.into())),
        );
        keys.push(CountKey::Injections);
        keys
    }

    #[test]
    fn every_key_reads_back_from_its_name() {
        for key in every_key() {
            let name = key.to_string();
            assert_eq!(name.parse::<CountKey>().as_ref(), Ok(&key), "{name}");
        }
        // The names the records have always used.
        let named = [
            (CountKey::Exits(ExitKind::Halt), "exits:Halt"),
            (
                CountKey::Exits(ExitKind::InterruptWindow),
                "exits:InterruptWindow",
            ),
            (CountKey::PortWrites(0xe9), "port_writes:0xe9"),
            (CountKey::PortReads(0x61), "port_reads:0x61"),
            (CountKey::PortWrites(0), "port_writes:0x0"),
            (CountKey::Traps("cli".into()), "traps:cli"),
            (CountKey::Traps("mov to cr8".into()), "traps:mov to cr8"),
            (
                CountKey::Hypercalls("console_write".into()),
                "hypercalls:console_write",
            ),
            (CountKey::Injections, "injections"),
        ];
        for (key, name) in named {
            assert_eq!(key.to_string(), name);
            assert_eq!(name.parse::<CountKey>(), Ok(key));
        }
    }

    #[test]
    fn every_key_serializes_as_its_name_and_back() {
        for key in every_key() {
            let json = serde_json::to_string(&key).unwrap();
            assert_eq!(json, serde_json::to_string(&key.to_string()).unwrap());
            assert_eq!(serde_json::from_str::<CountKey>(&json).unwrap(), key);
            // As a map key, the way records hold them.
            let map = BTreeMap::from([(key.clone(), 7u64)]);
            let json = serde_json::to_string(&map).unwrap();
            assert_eq!(
                json,
                format!("{{{}:7}}", serde_json::to_string(&key.to_string()).unwrap())
            );
            assert_eq!(
                serde_json::from_str::<BTreeMap<CountKey, u64>>(&json).unwrap(),
                map
            );
        }
    }

    #[test]
    fn keys_order_as_their_names() {
        let keys = every_key();
        for a in &keys {
            for b in &keys {
                assert_eq!(
                    a.cmp(b),
                    a.to_string().cmp(&b.to_string()),
                    "{a} against {b}"
                );
            }
        }
        for p in 0..=u16::MAX {
            for q in [0, 0x1, 0xe9, 0x100, 0x1f, 0xfff0] {
                let (a, b) = (CountKey::PortReads(p), CountKey::PortReads(q));
                assert_eq!(
                    a.cmp(&b),
                    a.to_string().cmp(&b.to_string()),
                    "{a} against {b}"
                );
            }
        }
    }

    #[test]
    fn names_that_name_no_counter_are_errors_that_say_why() {
        for (name, why) in [
            ("exits:Bogus", "no such exit kind"),
            ("exits:halt", "no such exit kind"),
            ("exits:", "no such exit kind"),
            ("bogus:1", "no such family of counters"),
            ("Exits:Halt", "no such family of counters"),
            ("", "no `:` between the family and the name"),
            ("traps", "no `:` between the family and the name"),
            ("injections:1", "injections are counted without a name"),
            (
                "port_writes:233",
                "a port is written 0x and lowercase hex digits without leading zeros, as in 0xe9",
            ),
            (
                "port_writes:0xE9",
                "a port is written 0x and lowercase hex digits without leading zeros, as in 0xe9",
            ),
            (
                "port_writes:0x00e9",
                "a port is written 0x and lowercase hex digits without leading zeros, as in 0xe9",
            ),
            (
                "port_reads:0x10000",
                "a port is written 0x and lowercase hex digits without leading zeros, as in 0xe9",
            ),
            (
                "port_reads:0x+e9",
                "a port is written 0x and lowercase hex digits without leading zeros, as in 0xe9",
            ),
            (
                "port_reads:0x",
                "a port is written 0x and lowercase hex digits without leading zeros, as in 0xe9",
            ),
        ] {
            let err = name.parse::<CountKey>().unwrap_err();
            assert_eq!(err.why, why, "{name}");
            assert_eq!(err.key, name);
            assert!(
                err.to_string()
                    .starts_with(&format!("unknown counter `{name}`: {why}")),
                "{err}"
            );
        }
        // A long or strange name is shown short and escaped.
        let err = format!("\x1b[31m{}", "x".repeat(10_000))
            .parse::<CountKey>()
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("unknown counter `\\u{1b}[31mxxx"), "{msg}");
        assert!(msg.contains("x…`"), "{msg}");
        assert!(msg.len() < 300, "{msg}");
    }
}
