//! Property-based fuzzing of the scenario parser (`Scenario::parse`).
//!
//! The inputs are the shipped scenario files mutated (bytes flipped, inserted, deleted;
//! lines dropped, doubled, swapped; numbers and names replaced by values around and past
//! the limits; the text cut short), random TOML from a small grammar of the scenario's own
//! keys and of others, and random text. For every input:
//!
//! * the parser does not panic;
//! * an error reads `file:line:column: message`, with the line and column inside the text
//!   (or just past its end);
//! * a scenario that parses yields at most [`MAX_RUNS`] jobs, exactly
//!   [`Scenario::run_count`] of them, each with N within its workload's limit and
//!   1 ≤ B ≤ 512, and repeats, warm-ups and the timeout within theirs.
//!
//! `cargo test --test fuzz_scenario` runs a few hundred inputs of each kind;
//! `PROPTEST_CASES=N` runs `N` (see `docs/security.md` for a campaign).

use machine::testing::fuzz_cases;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use virtlab::harness::{Guest, MAX_RUNS, MAX_TIMEOUT_S};
use virtlab::scenario::Scenario;

const FILE: &str = "fuzz.toml";

/// The shipped scenarios, the seeds of the mutations.
const SEEDS: &[&str] = &[
    include_str!("../scenarios/classroom.toml"),
    include_str!("../scenarios/io-batching.toml"),
    include_str!("../scenarios/nanobench.toml"),
    include_str!("../scenarios/scaling.toml"),
    include_str!("../scenarios/sensitive-instructions.toml"),
];

/// Every property, for one input.
fn check(text: &str) -> Result<(), TestCaseError> {
    match Scenario::parse(text, FILE) {
        Err(e) => {
            let msg = e.to_string();
            let rest = msg.strip_prefix(&format!("{FILE}:"));
            prop_assert!(rest.is_some(), "no file name: {}", msg);
            let mut parts = rest.unwrap_or_default().splitn(3, ':');
            let line: usize = parts.next().and_then(|l| l.parse().ok()).unwrap_or(0);
            let column: usize = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
            let message = parts.next().unwrap_or_default();
            prop_assert!(
                message.starts_with(' ') && message.len() > 1,
                "no message: {}",
                msg
            );
            let lines: Vec<&str> = text.split('\n').collect();
            prop_assert!(
                (1..=lines.len()).contains(&line),
                "line {} of {}: {}",
                line,
                lines.len(),
                msg
            );
            let width = lines[line - 1].chars().count();
            prop_assert!(
                (1..=width + 1).contains(&column),
                "column {} of a line of {}: {}",
                column,
                width,
                msg
            );
        }
        Ok(s) => {
            prop_assert!((1..=1000).contains(&s.repeats), "repeats {}", s.repeats);
            prop_assert!(s.warmup <= 1000, "warmup {}", s.warmup);
            if let Some(t) = s.timeout_s {
                prop_assert!(t > 0.0 && t <= MAX_TIMEOUT_S, "timeout_s {}", t);
            }
            let jobs = s.jobs();
            prop_assert!(jobs.len() <= MAX_RUNS, "{} runs", jobs.len());
            prop_assert_eq!(jobs.len(), s.run_count());
            for job in &jobs {
                let Guest::Workload(w, p) = &job.guest else {
                    return Err(TestCaseError::fail("a scenario job that is not a workload"));
                };
                prop_assert!(p.n <= w.max_n, "{}: n = {} over {}", w.name, p.n, w.max_n);
                prop_assert!(
                    (1..=guests::MAX_B).contains(&p.b),
                    "{}: b = {}",
                    w.name,
                    p.b
                );
                prop_assert!(w.check(p).is_ok(), "{}: {:?}", w.name, p);
            }
        }
    }
    Ok(())
}

/// A number around the limits: N's (65,536 for pio, 10,000,000 the largest), B's (512),
/// repeats and warm-ups (1,000), the runs (10,000), negative, huge, floats.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..20).prop_map(|n| n.to_string()),
        prop::sample::select(
            &[
                "0",
                "1",
                "511",
                "512",
                "513",
                "999",
                "1000",
                "1001",
                "9999",
                "10000",
                "10001",
                "65535",
                "65536",
                "65537",
                "500000",
                "500001",
                "1000000",
                "1000001",
                "10000000",
                "10000001",
                "86400",
                "86400.0",
                "86400.5",
                "-1",
                "-0",
                "0.0",
                "1e9",
                "nan",
                "inf",
                "-inf",
                "18446744073709551615",
                "18446744073709551616",
                "9223372036854775807",
                "-9223372036854775808",
                "0x10",
                "0o7",
                "0b1",
                "1_000",
                "4294967296",
            ][..]
        )
        .prop_map(str::to_string),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
    ]
}

/// A value of any TOML kind, the scenario's names among the strings.
fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        number(),
        prop::sample::select(
            &[
                "\"pio\"",
                "\"mmio\"",
                "\"hlt-timer\"",
                "\"compute\"",
                "\"warp\"",
                "\"\"",
                "\"hw-assisted\"",
                "\"trap-emulate\"",
                "\"paravirt\"",
                "\"fast\"",
                "true",
                "false",
                "\"\\u00e9\"",
                "'''x'''",
                "\"\"\"\nmulti\n\"\"\"",
                "1979-05-27T07:32:00Z",
            ][..]
        )
        .prop_map(str::to_string),
        "[ -~]{0,12}".prop_map(|s| format!("{s:?}")),
    ];
    // A long sweep, so that the runs add up to their limit.
    let sweep = prop::collection::vec(1u64..600, 1..150).prop_map(|v| {
        let v: Vec<String> = v.iter().map(u64::to_string).collect();
        format!("[{}]", v.join(", "))
    });
    let leaf = prop_oneof![4 => leaf, 1 => sweep];
    leaf.prop_recursive(2, 16, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(("[a-z]{1,6}", inner), 0..3).prop_map(|kv| {
                let kv: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", kv.join(", "))
            }),
        ]
    })
}

/// A line of random TOML: a key of the scenario's (or another) with a value, a table
/// header, a comment, or noise.
fn toml_line() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        4 => prop::sample::select(&[
            "name", "description", "modes", "repeats", "warmup", "timeout_s", "workload", "n",
            "b", "delay_us", "planned", "note",
        ][..])
        .prop_map(str::to_string),
        1 => "[a-z_.\"]{1,10}",
    ];
    prop_oneof![
        6 => (key, value()).prop_map(|(k, v)| format!("{k} = {v}")),
        2 => Just("[[workload]]".to_string()),
        1 => prop::sample::select(&["[workload]", "[[modes]]", "[x]", "[[", "]]", "# c", ""][..])
            .prop_map(str::to_string),
        1 => "[ -~]{0,20}",
    ]
}

/// A whole random scenario: usually a name and description first, so that the checks
/// past the schema are reached too.
fn random_toml() -> impl Strategy<Value = String> {
    (any::<bool>(), prop::collection::vec(toml_line(), 0..24)).prop_map(|(head, lines)| {
        let mut t = String::new();
        if head {
            t.push_str("name = \"f\"\ndescription = \"d\"\n");
        }
        t.push_str(&lines.join("\n"));
        t
    })
}

/// A key of the scenario with a value of its kind, around and past its limit.
fn key_value() -> impl Strategy<Value = (&'static str, String)> {
    let mode = prop::sample::select(
        &[
            "\"hw-assisted\"",
            "\"trap-emulate\"",
            "\"paravirt\"",
            "\"x\"",
        ][..],
    );
    prop_oneof![
        2 => (prop::sample::select(&["repeats", "warmup"][..]), 0u64..1100)
            .prop_map(|(k, v)| (k, v.to_string())),
        2 => (prop::sample::select(&["n", "b"][..]), value()),
        1 => number().prop_map(|v| ("timeout_s", v)),
        1 => prop::collection::vec(mode, 0..5).prop_map(|m| ("modes", format!("[{}]", m.join(", ")))),
        1 => value().prop_map(|v| ("name", v)),
    ]
}

/// One mutation of a text.
#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the byte at this fraction of the text.
    Byte(f64, u8),
    /// Insert this text at this fraction.
    Insert(f64, String),
    /// Delete this many bytes at this fraction.
    Delete(f64, usize),
    /// Drop a line.
    DropLine(f64),
    /// Repeat a line this many times.
    DupLine(f64, usize),
    /// Swap two lines.
    SwapLines(f64, f64),
    /// Replace the value after the n-th `=` with this.
    Value(f64, String),
    /// Set one of the scenario's keys, where the text has it, to this value.
    SetKey(&'static str, f64, String),
    /// Cut the text at this fraction.
    Truncate(f64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = 0.0..1.0f64;
    prop_oneof![
        2 => (at.clone(), any::<u8>()).prop_map(|(a, b)| Mutation::Byte(a, b)),
        2 => (at.clone(), prop_oneof![toml_line().prop_map(|l| format!("\n{l}\n")),
                                      "[ -~\n\\[\\]=\"]{1,6}"])
            .prop_map(|(a, s)| Mutation::Insert(a, s)),
        1 => (at.clone(), 1usize..20).prop_map(|(a, n)| Mutation::Delete(a, n)),
        1 => at.clone().prop_map(Mutation::DropLine),
        1 => (at.clone(), 1usize..2000).prop_map(|(a, n)| Mutation::DupLine(a, n)),
        1 => (at.clone(), at.clone()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        3 => (at.clone(), value()).prop_map(|(a, v)| Mutation::Value(a, v)),
        3 => (at.clone(), key_value()).prop_map(|(a, (k, v))| Mutation::SetKey(k, a, v)),
        1 => at.prop_map(Mutation::Truncate),
    ]
}

/// The byte index at fraction `f` of `len`, moved back to a character boundary of `t`.
fn index(t: &str, f: f64) -> usize {
    let mut i = ((t.len() as f64) * f) as usize;
    i = i.min(t.len());
    while !t.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(text: &mut String, m: &Mutation) {
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    let line = |f: f64, n: usize| ((n as f64 * f) as usize).min(n.saturating_sub(1));
    match m {
        Mutation::Byte(f, b) => {
            let i = index(text, *f);
            let mut bytes = std::mem::take(text).into_bytes();
            if i < bytes.len() {
                bytes[i] = *b;
            } else {
                bytes.push(*b);
            }
            *text = String::from_utf8_lossy(&bytes).into_owned();
        }
        Mutation::Insert(f, s) => {
            let i = index(text, *f);
            text.insert_str(i, s);
        }
        Mutation::Delete(f, n) => {
            let i = index(text, *f);
            let j = index(text, ((i + n) as f64 / text.len().max(1) as f64).min(1.0));
            text.replace_range(i..j.max(i), "");
        }
        Mutation::DropLine(f) => {
            if !lines.is_empty() {
                lines.remove(line(*f, lines.len()));
            }
            *text = lines.join("\n");
        }
        Mutation::DupLine(f, n) => {
            if !lines.is_empty() {
                let i = line(*f, lines.len());
                let l = lines[i].clone();
                for _ in 0..*n {
                    lines.insert(i, l.clone());
                }
            }
            *text = lines.join("\n");
        }
        Mutation::SwapLines(a, b) => {
            if !lines.is_empty() {
                let (i, j) = (line(*a, lines.len()), line(*b, lines.len()));
                lines.swap(i, j);
            }
            *text = lines.join("\n");
        }
        Mutation::Value(f, v) => {
            let with_value: Vec<usize> = (0..lines.len())
                .filter(|&i| lines[i].contains('=') && !lines[i].trim_start().starts_with('#'))
                .collect();
            if !with_value.is_empty() {
                let i = with_value[line(*f, with_value.len())];
                let key = lines[i].split('=').next().unwrap_or_default().to_string();
                lines[i] = format!("{key}= {v}");
            }
            *text = lines.join("\n");
        }
        Mutation::SetKey(key, f, v) => {
            let with_key: Vec<usize> = (0..lines.len())
                .filter(|&i| {
                    lines[i]
                        .split('=')
                        .next()
                        .is_some_and(|k| k.trim() == *key && lines[i].contains('='))
                })
                .collect();
            if !with_key.is_empty() {
                let i = with_key[line(*f, with_key.len())];
                lines[i] = format!("{key} = {v}");
            }
            *text = lines.join("\n");
        }
        Mutation::Truncate(f) => {
            let i = index(text, *f);
            text.truncate(i);
        }
    }
}

fn config(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: fuzz_cases(default),
        failure_persistence: None,
        rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// The shipped scenarios, mutated a few times each.
    #[test]
    fn fuzz_mutated_scenarios_parse_or_fail_located(
        seed in prop::sample::select(SEEDS),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let mut text = seed.to_string();
        for m in &mutations {
            apply(&mut text, m);
        }
        check(&text)?;
    }

    /// Random TOML made of the scenario's keys and others.
    #[test]
    fn fuzz_random_toml_scenarios_parse_or_fail_located(text in random_toml()) {
        check(&text)?;
    }

    /// Random text, and random bytes read as UTF-8 (lossily, as the CLI reads no further
    /// than the first invalid byte).
    #[test]
    fn fuzz_random_text_is_refused_located(
        text in prop_oneof!["\\PC{0,200}", prop::collection::vec(any::<u8>(), 0..200)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned())],
    ) {
        check(&text)?;
    }
}

/// The seeds themselves parse, and the mutations keep some inputs valid: the checks on a
/// parsed scenario are reached, not only the error paths.
#[test]
fn the_seeds_parse_and_some_mutants_still_do() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    for seed in SEEDS {
        check(seed).expect("a seed");
        Scenario::parse(seed, FILE).expect("the shipped scenarios parse");
    }
    let mut runner = TestRunner::deterministic();
    let (mut ok, mut err) = (0, 0);
    let strategy = (
        prop::sample::select(SEEDS),
        prop::collection::vec(mutation(), 1..3),
    );
    for _ in 0..300 {
        let (seed, mutations) = strategy.new_tree(&mut runner).expect("a case").current();
        let mut text = seed.to_string();
        for m in &mutations {
            apply(&mut text, m);
        }
        check(&text).expect("the properties hold");
        match Scenario::parse(&text, FILE) {
            Ok(_) => ok += 1,
            Err(_) => err += 1,
        }
    }
    eprintln!("{ok} parsed, {err} refused");
    assert!(ok >= 30 && err >= 30, "{ok} parsed, {err} refused");
}
