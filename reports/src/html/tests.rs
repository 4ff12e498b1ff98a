//! The page's structure, asserted through an HTML parser.

use super::*;
use crate::testdata::{b_sweep, n_sweep, rec, report, three_modes};
use crate::RunFailure;
use contract::{Backend, CountKey, ExitKind, FaultKind, Limit, Mode, Outcome, RunRecord};
use scraper::{ElementRef, Html, Selector};

fn doc(r: &Report) -> Html {
    Html::parse_document(&render(r))
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

fn all<'a>(d: &'a Html, s: &str) -> Vec<ElementRef<'a>> {
    d.select(&sel(s)).collect()
}

fn text(e: &ElementRef) -> String {
    e.text()
        .collect::<Vec<_>>()
        .join("")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn texts(d: &Html, s: &str) -> Vec<String> {
    all(d, s).iter().map(text).collect()
}

#[test]
fn one_chart_per_metric_cycles_and_exit_kind_each_also_a_file() {
    let r = report(three_modes());
    let p = page(&r);
    let d = Html::parse_document(&p.html);
    let ids: Vec<String> = all(&d, "figure")
        .iter()
        .filter_map(|f| f.value().attr("id").map(String::from))
        .collect();
    assert_eq!(
        ids,
        [
            "chart-exits",
            "chart-traps",
            "chart-hypercalls",
            "chart-cycles",
            "chart-latency-IoOut",
            "chart-latency-Hypercall",
            "chart-latency-Trap"
        ]
    );
    assert_eq!(all(&d, "figure svg").len(), 7);
    assert_eq!(all(&d, "figure p.notice").len(), 7);
    let files: Vec<&str> = p.charts.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(files, ids);
    let links: Vec<&str> = all(&d, "figure p.save a")
        .iter()
        .filter_map(|a| a.value().attr("href"))
        .collect();
    assert_eq!(links.len(), 7);
    assert!(links
        .iter()
        .all(|l| l.starts_with("chart-") && l.ends_with(".svg")));
    for id in ["no-batching", "no-scaling", "no-problems"] {
        assert_eq!(all(&d, &format!("#{id}")).len(), 1, "{id}");
    }
    // Self-contained: nothing to fetch, nothing to run.
    assert!(all(&d, "script, link, img, iframe").is_empty());
    assert!(!p.html.contains("url(") && !p.html.contains("@import"));
}

#[test]
fn every_chart_label_is_at_least_13_px() {
    let mut records = three_modes();
    records.extend(b_sweep());
    records.extend(n_sweep());
    let p = page(&report(records));
    assert!(p.charts.len() > 8);
    for c in &p.charts {
        let svg = Html::parse_fragment(&c.svg);
        for t in all(&svg, "text") {
            let size: f64 = t.value().attr("font-size").unwrap().parse().unwrap();
            assert!(size >= 13.0, "{}: {size} px for {:?}", c.id, text(&t));
        }
    }
}

#[test]
fn charts_have_titles_axis_labels_and_legends() {
    let d = doc(&report(three_modes()));
    let svg_text = texts(&d, "svg text");
    for t in [
        "VM exits per workload, by mode",
        "Traps per workload, by mode",
        "Hypercalls per workload, by mode",
        "Guest cycles per operation, by workload and mode",
        "IoOut exits: KVM_RUN round trip",
        "exits per run (count, log scale)",
        "TSC cycles per operation (log scale)",
        "round trip (ns, log scale)",
        "share of exits (%)",
        "workload",
        "pio",
        "cpuid",
    ] {
        assert!(svg_text.iter().any(|x| x == t), "missing {t:?}");
    }
    for m in ["hw-assisted", "trap-emulate", "paravirt"] {
        assert_eq!(svg_text.iter().filter(|x| *x == m).count(), 5, "{m}");
    }
}

#[test]
fn notices_compare_the_modes_from_the_data() {
    let d = doc(&report(three_modes()));
    let notices = texts(&d, "p.notice").join(" ");
    for s in [
        "pio: hw-assisted and trap-emulate had the most exits (100), 10.0× as many as paravirt (10).",
        "cpuid: hw-assisted and trap-emulate had the most cycles per operation (1,000), 4.0× as many as paravirt (250).",
        "pio: trap-emulate had the most traps (100), against none in hw-assisted and paravirt (0).",
        // 2 µs exits: bucket (1024, 2048] ns; pooled from both workloads.
        "hw-assisted: of 150 IoOut exits pooled from 2 run(s), the median took 1.0 µs–2.0 µs and 99 % took at most 2.0 µs.",
    ] {
        assert!(notices.contains(s), "missing {s:?} in {notices}");
    }
}

#[test]
fn a_lone_final_exit_is_kept_out_of_the_latency_chart_and_said_apart() {
    let mut records = three_modes();
    let mut compute = rec(Mode::HwAssisted, "compute", 1000, 1, ExitKind::IoOut);
    compute
        .round_trip_ns
        .insert(ExitKind::IoOut, crate::testdata::latency(1_480_000, 1));
    records.push(compute);
    let d = doc(&report(records));
    let fig = all(&d, "#chart-latency-IoOut").pop().unwrap();
    let notice = text(&fig);
    assert!(
        notice.contains("of 150 IoOut exits pooled from 2 run(s), the median took 1.0 µs–2.0 µs"),
        "{notice}"
    );
    assert!(
        notice.contains("left out, 1 run(s) whose only IoOut exit was its last"),
        "{notice}"
    );
    assert!(notice.contains("(median 1.48 ms)"), "{notice}");
}

#[test]
fn many_workloads_get_a_summary_instead_of_one_sentence_each() {
    let mut records = Vec::new();
    for (i, (hw, te)) in [(10, 20), (10, 30), (10, 40), (2, 40), (50, 5)]
        .into_iter()
        .enumerate()
    {
        let w = format!("w{i}");
        records.push(rec(Mode::HwAssisted, &w, 100, hw, ExitKind::IoOut));
        records.push(rec(Mode::TrapEmulate, &w, 100, te, ExitKind::Trap));
    }
    let d = doc(&report(records));
    let notice = text(&all(&d, "#chart-exits p.notice")[0]);
    assert!(
        notice.contains(
            "trap-emulate had the most exits in 4 and hw-assisted in 1 of the 5 workloads run in \
         several modes. The largest gap is in w3, where trap-emulate had the most exits (40), \
         20.0× as many as hw-assisted (2)."
        ),
        "{notice}"
    );
    assert!(!notice.contains("w0: "));
}

#[test]
fn emulation_warning_appears_exactly_when_it_should() {
    let warned = |records: Vec<RunRecord>| all(&doc(&report(records)), "#emulation-warning").len();
    assert_eq!(warned(three_modes()), 0);
    let mut pvm = three_modes();
    pvm[0].host.backend = Backend::KvmPvm;
    assert_eq!(warned(pvm), 1);
    let mut high = three_modes();
    high[0]
        .kvm_stats
        .insert("insn_emulation".into(), EMULATION_WARN_THRESHOLD);
    assert_eq!(warned(high.clone()), 0, "at the threshold: no warning");
    high[0]
        .kvm_stats
        .insert("insn_emulation".into(), EMULATION_WARN_THRESHOLD + 1);
    assert_eq!(warned(high.clone()), 1);
    assert_eq!(
        emulation_warning(&high).unwrap(),
        "KVM's insn_emulation statistic is high in 1 of 6 runs; the most, pio in hw-assisted \
         (n=100), emulated 1,001 instructions while the guest exited to the monitor 100 times"
    );
}

#[test]
fn strings_from_records_are_text_never_markup() {
    let mut records = three_modes();
    let evil = "<script>alert('x')</script>";
    records[0].workload = evil.into();
    records[0].console = "</pre><b>bold & \"quoted\"</b>".into();
    records[0].console_ok = Some(false);
    records[0].outcome = Outcome::GuestFault {
        kind: FaultKind::Exception,
        rip: Some(0x1000),
        detail: "#GP <at> 0x1000".into(),
    };
    records[1].notes.push("<i>note</i>".into());
    let d = doc(&report(records));
    assert!(all(&d, "script, b, i").is_empty());
    assert!(texts(&d, "table.verdicts th").iter().any(|t| t == evil));
    assert!(texts(&d, "pre")
        .iter()
        .any(|t| t == "</pre><b>bold & \"quoted\"</b>"));
    let problems = texts(&d, "ul.problems li").join(" ");
    assert!(
        problems.contains(
            "stopped by an exception the guest did not handle at 0x1000: #GP <at> 0x1000"
        ),
        "{problems}"
    );
    assert!(texts(&d, "ul.notes li")
        .iter()
        .any(|t| t.starts_with("<i>note</i>")));
}

#[test]
fn a_real_failure_opens_the_page_and_differs_from_a_declared_divergence() {
    let mut records = three_modes();
    records[1]
        .mismatches
        .insert(CountKey::Exits(ExitKind::Trap), (100, 99));
    records[2].outcome = Outcome::Diverged {
        expected: "100".into(),
        got: "7".into(),
        why: "paravirt reads a virtual timer".into(),
        declared: true,
        host_caused: false,
        result: Some(7),
    };
    records[4].outcome = Outcome::Diverged {
        expected: "x".into(),
        got: "y".into(),
        why: "CPUID faulting has no effect here".into(),
        declared: true,
        host_caused: true,
        result: Some(50),
    };
    records[3].outcome = Outcome::TimedOut {
        limit: Limit::WallClock,
        rip: None,
    };
    let failures = vec![RunFailure {
        workload: "cpuid".into(),
        mode: Mode::Paravirt,
        repeat: 1,
        error: "KVM_CREATE_VM: Cannot allocate memory".into(),
    }];
    let mut rep = Report::new(records, failures);
    rep.created_unix = 0;
    let d = doc(&rep);
    // The grid is the first section, and its cells are told apart by class and words.
    let h2: Vec<String> = texts(&d, "h2");
    assert_eq!(h2[0], "Verdicts: workload × mode");
    assert_eq!(h2[1], "Problems and divergences");
    assert_eq!(
        texts(&d, "td.v-failure"),
        ["✗ COUNTS DIFFER", "✗ TIMED OUT", "✗ VMM ERROR, ok"]
    );
    assert_eq!(texts(&d, "td.v-expected"), ["◆ diverged (expected)"]);
    assert_eq!(texts(&d, "td.v-host"), ["▲ diverged (host)"]);
    assert_eq!(
        texts(&d, "#failing"),
        ["✗ 3 run(s) failed. They are listed first under Problems below."]
    );
    let classes: Vec<&str> = all(&d, "ul.problems > li")
        .iter()
        .map(|l| l.value().attr("class").unwrap())
        .collect();
    assert_eq!(
        classes,
        [
            "v-failure",
            "v-failure",
            "v-failure",
            "v-host",
            "v-expected"
        ]
    );
    let problems = texts(&d, "ul.problems > li");
    assert!(
        problems[0].contains(
            "COUNTS DIFFER: pio in trap-emulate (n=100, repeat 0): exits:Trap = 99, expected 100"
        ),
        "{problems:?}"
    );
    assert!(problems
        .iter()
        .any(|p| p.contains("could not be run: KVM_CREATE_VM: Cannot allocate memory")));
    assert!(problems
        .iter()
        .any(|p| p.contains("stopped at its wall-clock limit (--timeout)")));
    assert!(
        problems[4].contains("result 7, expected 100. Why: paravirt reads a virtual timer"),
        "{problems:?}"
    );
    // No scroll box: the counts that differ are a table of their own.
    assert!(all(&d, ".scroll").is_empty());
    assert_eq!(all(&d, "tr.mismatch").len(), 2); // in the table of differences and the full one
    assert_eq!(
        texts(&d, "#counts-checked"),
        ["6 counts checked, 1 differ."]
    );
    assert!(texts(&d, ".banner dd")
        .iter()
        .any(|t| t == "1970-01-01 00:00:00 UTC"));
}

#[test]
fn a_b_sweep_draws_the_batching_charts() {
    let r = report(b_sweep());
    let p = page(&r);
    let d = Html::parse_document(&p.html);
    assert!(all(&d, "#no-batching").is_empty());
    assert_eq!(all(&d, "#chart-batching-pio svg").len(), 2);
    assert!(p.charts.iter().any(|c| c.id == "chart-batching-pio-events"));
    assert!(p.charts.iter().any(|c| c.id == "chart-batching-pio-cycles"));
    let svg_text = texts(&d, "#chart-batching-pio svg text");
    for t in [
        "Monitor events against B: pio (n=64)",
        "batch size B (log scale)",
        "paravirt hypercalls",
    ] {
        assert!(svg_text.iter().any(|x| x == t), "{t}");
    }
    let notice = text(&all(&d, "#chart-batching-pio p.notice")[0]);
    assert!(
        notice.contains(
            "paravirt: hypercalls 64 → 8 (8.00× fewer) from B=1 to B=8; guest cycles/op 900 → 200."
        ),
        "{notice}"
    );
    let single = doc(&report(b_sweep().into_iter().take(1).collect()));
    assert_eq!(texts(&single, "#no-batching code"), ["io-batching"]);
}

#[test]
fn an_n_sweep_draws_the_scaling_charts_with_the_terminals_fit() {
    let records = n_sweep();
    let d = doc(&report(records.clone()));
    assert!(all(&d, "#no-scaling").is_empty());
    assert_eq!(all(&d, "#chart-scaling-pio svg").len(), 2);
    let slopes = texts(&d, "li.slope");
    assert_eq!(
        slopes,
        ["hw-assisted: 1.5 µs per iteration, intercept 20.0 µs, R² = 1.0000; exits grow by 1 per iteration"]
    );
    // The terminal prints the same sentence.
    let term = crate::table::render(&records);
    assert!(
        term.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .contains(&slopes[0]),
        "{term}"
    );
    let svg_text = texts(&d, "#chart-scaling-pio svg text");
    assert!(
        svg_text
            .iter()
            .any(|t| t == "hw-assisted: 1,500 ns/iteration"),
        "{svg_text:?}"
    );
    assert!(svg_text
        .iter()
        .any(|t| t == "hw-assisted: 1 exits/iteration"));
    assert_eq!(texts(&d, "table.verdicts td"), ["✓ ok ×12"]);
}

#[test]
fn banner_names_host_backend_and_tool() {
    let d = doc(&report(three_modes()));
    let dd = texts(&d, ".banner dd");
    assert!(dd.contains(&"Test CPU @ 3.0GHz".to_string()));
    assert!(dd.contains(&format!("kvm_intel: {}", Backend::KvmIntel.explanation())));
    assert!(dd.contains(&"3.000 GHz".to_string()));
    assert!(dd.iter().any(|t| t.contains("(git revision abc123)")));
    assert!(dd.contains(&"2023-11-14 22:13:20 UTC".to_string()));
    assert!(all(&d, "#interrupted").is_empty());
    let mut r = report(three_modes());
    r.interrupted = true;
    assert_eq!(all(&doc(&r), "div.warning#interrupted").len(), 1);
}

#[test]
fn the_paper_section_has_one_row_per_operation_measured_in_two_modes() {
    let d = doc(&report(crate::testdata::nanobench()));
    assert_eq!(
        texts(&d, "h2#adams-agesen"),
        ["Adams & Agesen (ASPLOS 2006) beside this run"]
    );
    assert_eq!(texts(&d, "#paper-tally"), ["1 of 3 orderings agree."]);
    let header: Vec<String> = texts(&d, "table.paper tr:nth-child(2) th");
    assert_eq!(
        header,
        [
            "native",
            "software VMM",
            "hardware VMM",
            "faster",
            "hw-assisted",
            "binary-translation",
            "paravirt",
            "parameters",
            "faster"
        ]
    );
    let rows: Vec<Vec<String>> = all(&d, "table.paper tr")
        .iter()
        .skip(2)
        .map(|tr| {
            tr.select(&sel("td"))
                .map(|td| text(&td))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        rows,
        [
            [
                "in (pio)",
                "3,209",
                "not stated",
                "15,826",
                "software VMM ≈74.0× faster",
                "36.0k",
                "—",
                "180k",
                "n=100",
                "hardware VMM 5.00× faster (hw-assisted against paravirt)",
                "disagrees"
            ],
            [
                "pgfault (pgfault)",
                "1,093",
                "3,927",
                "11,242",
                "software VMM 2.86× faster",
                "9.00k",
                "3.00k",
                "60.0k",
                "n=100",
                "software VMM 3.00× faster (hw-assisted against binary-translation)",
                "agrees"
            ],
            [
                "divzero (divzero)",
                "889",
                "3,223",
                "1,014",
                "hardware VMM 3.18× faster",
                "20.0k",
                "5.00k",
                "250k",
                "n=100",
                "software VMM 4.00× faster (hw-assisted against binary-translation)",
                "disagrees"
            ],
        ]
    );
    assert!(text(&all(&d, "#paper-citation")[0])
        .contains("Techniques for x86 Virtualization”, ASPLOS 2006"));
    assert_eq!(
        texts(&d, "#paper-absent"),
        [
            "Not measured in two modes in this run: syscall, cr8wr, call/ret, ptemod, context \
          switch, fork/wait. The nanobench scenario runs them all."
        ]
    );
    assert_eq!(all(&d, "dl.paper-words dt").len(), 3);
    // No section for a run without the paper's operations in two modes.
    assert!(all(&doc(&report(b_sweep())), "#adams-agesen").is_empty());
}
