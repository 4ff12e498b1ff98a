//! The host-level record of a run of several VMs at once: each VM's CPU share against its
//! weight's part and Jain's index, the shares over time, and resident memory over time
//! with page sharing, the balloon and host swapping.

use maud::{html, Markup};
use plotters::prelude::*;

use super::charts::{series_color, svg};
use super::Charts;
use crate::format::fmt_ns;
use crate::Report;

const FONT: &str = "sans-serif";
const TICK: f64 = 18.0;
const DESC: f64 = 20.0;

/// One line of a time chart: its legend and `(seconds, value)` points.
pub type Series = (String, Vec<(f64, f64)>);

/// A line chart over time, from zero on both axes.
pub fn time_chart(title: &str, y_desc: &str, series: &[Series]) -> String {
    let x_hi = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .fold(0.0, f64::max)
        .max(1e-3);
    let y_hi = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(0.0, f64::max)
        .max(1e-9);
    svg((620, 440), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, DESC))
            .margin(14)
            .x_label_area_size(56)
            .y_label_area_size(84)
            .build_cartesian_2d(0f64..x_hi * 1.02, 0f64..y_hi * 1.35)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc(y_desc)
            .x_labels(6)
            .label_style((FONT, TICK))
            .axis_desc_style((FONT, DESC))
            .draw()?;
        for (i, (label, pts)) in series.iter().enumerate() {
            let color = series_color(i);
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                .label(label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], color.stroke_width(3))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .label_font((FONT, DESC))
            .draw()?;
        Ok(())
    })
}

/// The section; empty without a host-level record.
pub fn section(report: &Report, charts: &mut Charts) -> Markup {
    let Some(host) = &report.host else {
        return html! {};
    };
    if host.vms.is_empty() {
        return html! {};
    }
    let shares = host.shares_over_time();
    let share_series: Vec<Series> = host
        .vms
        .iter()
        .enumerate()
        .map(|(i, v)| {
            (
                format!("{} (w {})", v.name, v.weight),
                shares
                    .iter()
                    .map(|(t, s)| (*t as f64 / 1000.0, s.get(i).copied().unwrap_or(0.0)))
                    .collect(),
            )
        })
        .collect();
    let share_fig = (!shares.is_empty()).then(|| {
        charts.figure(
            "chart-host-shares",
            vec![(
                String::new(),
                time_chart(
                    "CPU share per VM over time",
                    "share of the CPU time used",
                    &share_series,
                ),
            )],
            "A weighted scheduler holds each line near its weight's part (the table's target) \
             once every VM competes; a VM that blocks gives its time to the others and, with the \
             boost, takes the CPU back at once when it wakes.",
            html! {},
        )
    });
    let mem_fig = host
        .memory
        .as_ref()
        .filter(|m| !m.samples.is_empty())
        .map(|m| {
            let mut on = Vec::new();
            if m.ksm == Some(true) {
                on.push("KSM".to_string());
            }
            if let Some(b) = m.budget_pages_per_vm {
                on.push(format!("swap budget {b} pages/VM"));
            }
            let on = if on.is_empty() {
                "balloon only".into()
            } else {
                on.join(", ")
            };
            let mut series: Vec<Series> = vec![(
                "resident (RssAnon), MiB".into(),
                m.samples
                    .iter()
                    .map(|s| (s.t_ms as f64 / 1000.0, s.rss_anon_kib as f64 / 1024.0))
                    .collect(),
            )];
            if m.ksm == Some(true) {
                series.push((
                    "saved by KSM (pages_sharing), MiB".into(),
                    m.samples
                        .iter()
                        .map(|s| {
                            (
                                s.t_ms as f64 / 1000.0,
                                s.pages_sharing as f64 * 4.0 / 1024.0,
                            )
                        })
                        .collect(),
                ));
            }
            charts.figure(
                "chart-host-memory",
                vec![(
                    String::new(),
                    time_chart(&format!("Resident memory over time ({on})"), "MiB", &series),
                )],
                "Guests resident memory grows as they touch pages; KSM's savings grow as its \
             scans find identical pages; a swap budget caps each guest's resident pages; the \
             balloon lowers resident memory by the pages it takes.",
                html! {},
            )
        });
    let mems: Vec<_> = report
        .records
        .iter()
        .filter_map(|r| r.memory.as_ref().map(|m| (r, m)))
        .collect();
    html! {
        h2 #host { "Many VMs on one host" }
        p {
            (host.vms.len()) " VMs on " (host.cpus) " host CPUs, scheduler " (host.scheduler.name())
            ", " (format!("{:.1}", host.wall_ns as f64 / 1e9)) " s measured. Jain's fairness index \
             of share/target: " strong { (format!("{:.3}", host.fairness)) } "."
        }
        table {
            thead { tr { th { "VM" } th { "workload" } th { "mode" } th { "weight" } th { "runs" }
                th { "share" } th { "target" } th { "ratio" } th { "preemptions" } th { "wake p50" } } }
            tbody {
                @for (i, v) in host.vms.iter().enumerate() {
                    tr {
                        td { (v.name) } td { (v.workload) } td { (v.mode.name()) } td { (v.weight) }
                        td { (v.runs) } td { (format!("{:.1} %", v.share * 100.0)) }
                        td { (format!("{:.1} %", v.target * 100.0)) }
                        td { (format!("{:.2}", if v.target > 0.0 { v.share / v.target } else { 0.0 }))
                            @if !host.within_tolerance(i) { " !" } }
                        td { (v.preemptions) }
                        td { (v.wake_latency_ns.as_ref().map_or("-".into(), |w| fmt_ns(w.p50 as f64))) }
                    }
                }
            }
        }
        @if let Some(f) = share_fig { (f) }
        @if let Some(f) = mem_fig { (f) }
        @if mems.iter().any(|(_, m)| m.balloon.inflated > 0 || m.swap.is_some() || m.mergeable.is_some()) {
            table {
                thead { tr { th { "run" } th { "mode" } th { "balloon" } th { "resident drop" }
                    th { "refused" } th { "mergeable" } th { "page-outs" } th { "page-ins" }
                    th { "page-in p50" } th { "max resident" } } }
                tbody {
                    @for (r, m) in &mems {
                        tr {
                            td { (r.workload) " #" (r.repeat) } td { (r.mode.name()) }
                            td { (m.balloon.inflated) } td { (m.balloon.resident_drop().map_or("-".into(), |d| d.to_string())) }
                            td { (m.balloon.refused_total()) }
                            td { (match m.mergeable { Some(true) => "yes", Some(false) => "refused", None => "-" }) }
                            @match &m.swap {
                                Some(s) => {
                                    td { (s.page_outs) } td { (s.page_ins) }
                                    td { (if s.page_in_ns.count > 0 { fmt_ns(s.page_in_ns.p50 as f64) } else { "-".into() }) }
                                    td { (s.max_resident) " / " (s.budget_pages) }
                                }
                                None => { td { "-" } td { "-" } td { "-" } td { "-" } }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(m) = &host.memory {
            @for u in &m.unavailable { p.notice { "Unavailable here: " (u) } }
        }
    }
}

#[cfg(test)]
mod tests {
    use contract::fleet::CpuSample;
    use contract::overcommit::{HostMemory, MemorySample};
    use contract::{HostRecord, Mode, SchedulerKind, VmShare};

    use crate::Report;

    fn share(name: &str, weight: u32, share: f64, target: f64) -> VmShare {
        VmShare {
            name: name.into(),
            workload: "balloon".into(),
            mode: Mode::TrapEmulate,
            weight,
            cap: 0,
            runs: 1,
            cpu_ns: 1,
            share,
            target,
            granted_ns: 0,
            preemptions: 0,
            overrun_ns: 0,
            stop_latency_ns: None,
            between_runs_cpu_ns: None,
            wake_latency_ns: None,
        }
    }

    fn host() -> HostRecord {
        HostRecord {
            work_conserving: true,
            scheduler: SchedulerKind::Credit,
            cpus: 2,
            slice_ms: 10,
            wall_ns: 2_000_000_000,
            vms: vec![
                share("a", 1, 0.25, 1.0 / 3.0),
                share("b", 2, 0.75, 2.0 / 3.0),
            ],
            fairness: 0.98,
            tolerance: 0.1,
            memory: Some(HostMemory {
                ksm: Some(true),
                ksm_peak: (10, 30),
                budget_pages_per_vm: Some(64),
                samples: (0..3)
                    .map(|i| MemorySample {
                        t_ms: i * 100,
                        rss_anon_kib: 1000 + i * 10,
                        pages_shared: i,
                        pages_sharing: 3 * i,
                    })
                    .collect(),
                unavailable: vec![],
            }),
            timeline: (0..4)
                .map(|i| CpuSample {
                    t_ms: i * 100,
                    cpu_ns: vec![i * 25, i * 75],
                })
                .collect(),
        }
    }

    #[test]
    fn the_section_shows_shares_fairness_and_memory_over_time() {
        let mut report = Report::new(
            vec![crate::testdata::rec(
                Mode::TrapEmulate,
                "balloon",
                10,
                1,
                contract::ExitKind::IoOut,
            )],
            Vec::new(),
        );
        report.host = Some(host());
        let page = crate::html::page(&report);
        assert!(page.html.contains("Many VMs on one host"));
        assert!(page.html.contains("0.980"));
        let ids: Vec<&str> = page.charts.iter().map(|c| c.id.as_str()).collect();
        assert!(ids.contains(&"chart-host-shares"), "{ids:?}");
        assert!(ids.contains(&"chart-host-memory"), "{ids:?}");
        let shares = report.host.as_ref().unwrap().shares_over_time();
        assert_eq!(shares.len(), 3);
        assert_eq!(shares[0], (100, vec![0.25, 0.75]));
    }

    #[test]
    fn csv_carries_the_timeline_and_the_memory() {
        let mut out = Vec::new();
        crate::csv::write_host(&host(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches(",host-timeline,cpu_ns@").count(), 8);
        assert!(text.contains("host-timeline,cpu_ns@300,225,ns"), "{text}");
        assert!(text.contains("memory,ksm_pages_sharing_peak,30,pages"));
        assert!(text.contains("memory,budget_pages_per_vm,64,pages"));
        assert_eq!(text.matches("memory,rss_anon_kib@").count(), 3);
    }

    #[test]
    fn no_host_record_no_section() {
        let report = Report::new(Vec::new(), Vec::new());
        assert!(super::section(&report, &mut crate::html::Charts::default())
            .into_string()
            .is_empty());
    }
}
