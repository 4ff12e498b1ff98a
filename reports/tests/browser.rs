//! Opens the HTML report of real records in headless Chromium and checks what the browser
//! built: every chart is there as an `<svg>` with data drawn in it, and nothing failed.
//!
//! The records in `tests/data/hw-assisted-kvm-pvm.json` come from `virtlab run` on a
//! `kvm_pvm` host: every workload with 3 repeats, an N sweep of `pio` and `cpuid`
//! (N = 100…3200) and a B sweep of `pio` and `mmio` (B = 1…64).
//!
//! Chromium comes from Debian's `chromium` package (`.ci/run` installs it). Where it is
//! missing the test says so loudly and passes, except under `CI=true`, where it fails: a
//! CI run that skipped the browser would pass without checking anything.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reports::Report;

const CHROMIUM: &str = "/usr/bin/chromium";
/// Longest a Chromium run may take before the test gives up on it.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(120);
/// Colour of hw-assisted, the mode of every record in the fixture.
const HW_ASSISTED_COLOUR: &str = "#0072B2";

fn fixture() -> Report {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hw-assisted-kvm-pvm.json");
    Report::load(&path).expect("fixture loads")
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("virtlab-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch directory");
    dir
}

/// Runs headless Chromium on `page` with `extra` arguments; returns its standard output.
fn chromium(page: &Path, profile: &Path, extra: &[String]) -> String {
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break status;
        }
        if start.elapsed() > BROWSER_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within {BROWSER_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "chromium failed: {status}");
    reader.join().expect("stdout reader")
}

/// The `<svg …>…</svg>` elements of a document, in order.
fn svg_elements(dom: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = dom;
    while let Some(start) = rest.find("<svg") {
        let end = rest[start..]
            .find("</svg>")
            .map(|e| start + e + "</svg>".len())
            .expect("every <svg> is closed");
        out.push(&rest[start..end]);
        rest = &rest[end..];
    }
    out
}

/// Whether Chromium is there; without it, a loud skip, or a failure under `CI=true`.
fn chromium_or_skip() -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    let msg = format!(
        "chromium not installed ({CHROMIUM} is missing; `apt-get install chromium` provides \
         it) — the HTML report was not checked in a browser"
    );
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{msg}; under CI=true that is a failure"
    );
    eprintln!("\n*** SKIPPED: {msg} ***\n");
    false
}

#[test]
fn report_renders_in_headless_chromium_with_every_chart() {
    if !chromium_or_skip() {
        return;
    }
    let report = fixture();
    let dir = scratch_dir("browser");
    let page = report.write_html(&dir).expect("write report.html");
    assert_eq!(page, dir.join("report.html"));

    let dom = chromium(&page, &dir.join("profile"), &["--dump-dom".to_string()]);
    assert!(
        dom.contains("<h1>virtlab report</h1>"),
        "page did not load: {dom:.300}"
    );
    for bad in [
        "could not be drawn",
        "ERR_FILE",
        "ERR_ACCESS",
        "This page isn",
    ] {
        assert!(!dom.contains(bad), "error text {bad:?} in the page");
    }

    // One chart of VM exits (no trap or hypercall in hw-assisted-only data), one of guest
    // cycles per operation, one latency chart per exit kind (IoOut, MmioRead, Halt), two
    // batching charts for each of pio and mmio, and two scaling charts for each of pio
    // and cpuid.
    let svgs = svg_elements(&dom);
    assert_eq!(svgs.len(), 1 + 1 + 3 + 2 * 2 + 2 * 2);
    for (i, svg) in svgs.iter().enumerate() {
        let data = ["<rect", "<circle", "<polyline", "<path"]
            .iter()
            .map(|tag| {
                svg.split(tag)
                    .skip(1)
                    .filter(|e| {
                        e.split('>')
                            .next()
                            .unwrap_or("")
                            .contains(HW_ASSISTED_COLOUR)
                    })
                    .count()
            })
            .sum::<usize>();
        assert!(data >= 2, "chart {i} has no data drawn: {svg:.400}");
        assert!(svg.contains("<text"), "chart {i} has no text");
    }
    for id in [
        "chart-exits",
        "chart-cycles",
        "chart-latency-IoOut",
        "chart-latency-MmioRead",
        "chart-latency-Halt",
        "chart-batching-pio",
        "chart-batching-mmio",
        "chart-scaling-pio",
        "chart-scaling-cpuid",
        "emulation-warning",
    ] {
        assert!(dom.contains(&format!("id=\"{id}\"")), "missing #{id}");
    }

    let png = dir.join("report.png");
    chromium(
        &page,
        &dir.join("profile-shot"),
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1280,4000".to_string(),
        ],
    );
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    // Keep the page and its screenshot for a look; the browser profiles go.
    for profile in ["profile", "profile-shot"] {
        let _ = std::fs::remove_dir_all(dir.join(profile));
    }
    eprintln!("report: {}, screenshot: {}", page.display(), png.display());
}

/// The classroom report with one run made to fail: in a 1400×900 window the failure is
/// on the first screen, in its own colour, apart from popf's expected divergence. The
/// page is loaded with a small script appended (the report itself has none) that
/// measures what the browser laid out; its findings come back in the dumped DOM.
#[test]
fn a_failure_is_on_the_first_screen_and_the_page_fits_a_phone_and_a_projector() {
    if !chromium_or_skip() {
        return;
    }
    let mut report = fixture();
    let r = &mut report.records[1];
    r.mismatches.insert(
        contract::CountKey::Exits(contract::ExitKind::IoOut),
        (r.total_exits() + 1, r.total_exits()),
    );
    report.records[0].outcome = contract::Outcome::Diverged {
        expected: "300".into(),
        got: "100".into(),
        why: "PUSHF and POPF are sensitive but not privileged".into(),
        declared: true,
        host_caused: false,
        result: Some(100),
    };
    let dir = scratch_dir("first-screen");
    let page = report.write_html(&dir).expect("write report.html");
    let probe = r#"<script>
addEventListener('load', () => {
  const out = {};
  const fail = document.querySelector('table.verdicts td.v-failure');
  const exp = document.querySelector('table.verdicts td.v-expected');
  out.failTop = fail ? fail.getBoundingClientRect().bottom : -1;
  out.failBg = fail ? getComputedStyle(fail).backgroundColor : '';
  out.expBg = exp ? getComputedStyle(exp).backgroundColor : '';
  out.overflow = document.documentElement.scrollWidth - innerWidth;
  let small = 1e9;
  for (const t of document.querySelectorAll('svg text')) {
    const h = parseFloat(getComputedStyle(t).fontSize) * (t.ownerSVGElement.getScreenCTM().a || 1);
    if (h > 0 && h < small) small = h;
  }
  out.smallestSvgText = small;
  let body = 1e9;
  for (const e of document.querySelectorAll('p, td, th, li')) {
    const s = parseFloat(getComputedStyle(e).fontSize);
    if (s < body) body = s;
  }
  out.smallestText = body;
  document.body.setAttribute('data-probe', JSON.stringify(out));
});
</script>"#;
    let html = std::fs::read_to_string(&page)
        .unwrap()
        .replace("</body>", &format!("{probe}</body>"));
    let probed = dir.join("probed.html");
    std::fs::write(&probed, html).unwrap();
    let measure = |w: u32, h: u32, profile: &str| -> serde_json::Value {
        let dom = chromium(
            &probed,
            &dir.join(profile),
            &[
                format!("--window-size={w},{h}"),
                "--virtual-time-budget=5000".into(),
                "--dump-dom".into(),
            ],
        );
        let at = dom.find("data-probe=\"").expect("the probe ran") + "data-probe=\"".len();
        let end = dom[at..].find('"').unwrap() + at;
        serde_json::from_str(&dom[at..end].replace("&quot;", "\"")).unwrap()
    };
    let desk = measure(1400, 900, "p1");
    assert!(desk["failTop"].as_f64().unwrap() > 0.0, "{desk}");
    assert!(
        desk["failTop"].as_f64().unwrap() <= 900.0,
        "the failure is below the first screen: {desk}"
    );
    assert_ne!(desk["failBg"], desk["expBg"], "{desk}");
    assert!(desk["overflow"].as_f64().unwrap() <= 0.0, "{desk}");
    for (w, h, profile) in [(420, 900, "p2"), (1920, 1080, "p3")] {
        let m = measure(w, h, profile);
        assert!(
            m["overflow"].as_f64().unwrap() <= 0.0,
            "{w} px: the page scrolls sideways: {m}"
        );
        assert!(
            m["smallestSvgText"].as_f64().unwrap() >= 13.0 - 0.01,
            "{w} px: {m}"
        );
        assert!(m["smallestText"].as_f64().unwrap() >= 13.0, "{w} px: {m}");
    }
    let png = dir.join("first-screen.png");
    chromium(
        &page,
        &dir.join("profile-shot"),
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1400,900".to_string(),
        ],
    );
    assert_eq!(
        &std::fs::read(&png).expect("screenshot")[..8],
        b"\x89PNG\r\n\x1a\n"
    );
    for p in ["p1", "p2", "p3", "profile-shot"] {
        let _ = std::fs::remove_dir_all(dir.join(p));
    }
    eprintln!("first screen: {}", png.display());
}
