//! Bad input: unknown names, malformed scenarios, numbers over their limits and files that
//! are not files all end with status 2 and a sentence naming the problem, before anything runs.

use std::process::Command;

use crate::helpers::{temp_dir, text, virtlab, virtlab_within, PROMPTLY};

#[test]
fn unknown_workload_or_mode_exits_2_and_lists_the_known_ones() {
    let o = virtlab(&["run", "--workload", "nosuch"]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(err.contains("unknown workload `nosuch`"), "{err}");
    for w in guests::WORKLOADS {
        assert!(err.contains(w.name), "{err}");
    }
    let o = virtlab(&["run", "--mode", "warp-drive"]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(
        err.contains("unknown mode `warp-drive`")
            && err.contains("hw-assisted")
            && err.contains("trap-emulate")
            && err.contains("paravirt"),
        "{err}"
    );
    let o = virtlab(&["run", "--guest-bin", "/nonexistent", "--load", "0x1000"]);
    assert_ne!(o.status.code(), Some(0));
    let o = virtlab(&["run", "--load", "banana", "--guest-bin", "x"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn a_malformed_scenario_exits_2_with_line_and_column() {
    let dir = temp_dir("badscen");
    std::fs::create_dir_all(&dir).unwrap();
    let typo = dir.join("typo.toml");
    std::fs::write(
        &typo,
        "name = \"t\"\ndescription = \"d\"\n\n[[workload]]\nname = \"pio\"\nrepeatz = 3\n",
    )
    .unwrap();
    let o = virtlab(&["run", typo.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!("{}:6:1:", typo.display()))
            && err.contains("unknown field `repeatz`"),
        "{err}"
    );
    let wrong_type = dir.join("type.toml");
    std::fs::write(
        &wrong_type,
        "name = \"t\"\ndescription = \"d\"\nrepeats = \"three\"\n[[workload]]\nname = \"pio\"\n",
    )
    .unwrap();
    let o = virtlab(&["run", wrong_type.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(err.contains(":3:11:") && err.contains("expected"), "{err}");
    let unknown = dir.join("unknown.toml");
    std::fs::write(
        &unknown,
        "name = \"t\"\ndescription = \"d\"\n[[workload]]\nname = \"pi0\"\n",
    )
    .unwrap();
    let o = virtlab(&["run", unknown.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("unknown workload `pi0` (known workloads: compute, pio"),
        "{}",
        text(&o.stderr)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_numbers_and_stray_options_exit_2() {
    for args in [
        &["run", "--timeout=-1"][..],
        &["run", "-w", "pio", "--timeout=nan"],
        &["run", "-w", "pio", "--timeout=1e19"],
        &["run", "-n", "3"],
        &["run", "-b", "4"],
        &["run", "--load", "0x200000"],
        &["run", "-w", "pio", "--warmup", "4294967295"],
        &["run", "-w", "pio", "--repeats", "0"],
        &["run", "-w", "pio", "-b", "100000"],
    ] {
        let o = virtlab(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stderr));
    }
}

#[test]
fn n_and_b_over_their_limits_exit_2_naming_the_limit_before_anything_runs() {
    let huge = "1099511627776";
    for (args, limit) in [
        (
            &["run", "-w", "compute", "-n", huge, "-m", "hw-assisted"][..],
            "over the limit of 10000000",
        ),
        (
            &["run", "-w", "pio", "-n", "1000000000", "-m", "hw-assisted"],
            "over the limit of 65536",
        ),
        (
            &["trace", "-w", "compute", "-n", huge, "-m", "hw-assisted"],
            "over the limit of 10000000",
        ),
        (
            &["explain", "-w", "compute", "-n", huge],
            "over the limit of 10000000",
        ),
        (
            &["run", "-w", "pio", "-b", "513", "-m", "hw-assisted"],
            "b = 513 is over the limit of 512",
        ),
        (
            &["trace", "-w", "pio", "-b", "513", "-m", "hw-assisted"],
            "b = 513 is over the limit of 512",
        ),
        (
            &[
                "trace",
                "-w",
                "pio",
                "-m",
                "hw-assisted",
                "--limit",
                "100000000",
            ],
            "between 1 and 10000",
        ),
        (
            &[
                "run",
                "-w",
                "pio",
                "--repeats",
                "1000",
                "--warmup",
                "1000",
                "-w",
                "cpuid",
                "-w",
                "mmio",
            ],
            "over the limit of 10000 runs",
        ),
    ] {
        let o = virtlab_within(args, PROMPTLY);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(limit), "{args:?}: {err}");
        assert!(
            o.stdout.is_empty(),
            "{args:?} ran something: {}",
            text(&o.stdout)
        );
    }
}

#[test]
fn devices_fifos_directories_and_huge_files_are_refused_without_reading_them() {
    let dir = temp_dir("inputs");
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo");
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    // 2 GiB that takes no disk space: refused by its size, not read first.
    let sparse = dir.join("sparse.bin");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let (fifo_s, sparse_s, dir_s) = (
        fifo.to_str().unwrap(),
        sparse.to_str().unwrap(),
        dir.to_str().unwrap(),
    );
    for (args, why) in [
        (
            &["run", "--guest-bin", "/dev/zero"][..],
            "/dev/zero: is a character device, not a regular file",
        ),
        (
            &["run", "--guest-bin", "/dev/urandom", "-m", "hw-assisted"],
            "is a character device",
        ),
        (
            &["trace", "--guest-bin", "/dev/zero", "-m", "hw-assisted"],
            "is a character device",
        ),
        (
            &["explain", "--guest-bin", "/dev/zero"],
            "is a character device",
        ),
        (
            &["run", "--guest-bin", fifo_s],
            "is a FIFO, not a regular file",
        ),
        (&["explain", "--guest-bin", fifo_s], "is a FIFO"),
        (&["run", fifo_s], "is a FIFO"),
        (&["run", "/dev/zero"], "is a character device"),
        (&["run", dir_s], "is a directory"),
        (&["report", fifo_s], "is a FIFO"),
        (
            &["run", "--guest-bin", sparse_s],
            "2147483648 bytes is over the limit of 16777216 bytes for a guest binary",
        ),
        (
            &["run", sparse_s],
            "2147483648 bytes is over the limit of 4194304 bytes for a scenario file",
        ),
    ] {
        let o = virtlab_within(args, PROMPTLY);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn scenario_content_errors_name_file_line_and_column() {
    let dir = temp_dir("scenpos");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("s.toml");
    for (body, at, what) in [
        (
            "[[workload]]\nname = \"pio\"\n\n[[workload]]\nname = \"pi0\"\n",
            "7:8",
            "unknown workload `pi0`",
        ),
        (
            "[[workload]]\nname = \"pio\"\nb = [16, 100000]\n",
            "5:10",
            "b = 100000 is over the limit of 512",
        ),
        (
            "[[workload]]\nname = \"compute\"\nn = [10, 1099511627776]\n",
            "5:10",
            "n = 1099511627776 is over the limit of 10000000",
        ),
        (
            "modes = [\"hw-assisted\", \"warp\"]\n[[workload]]\nname = \"pio\"\n",
            "3:25",
            "unknown mode `warp`",
        ),
    ] {
        std::fs::write(&file, format!("name = \"s\"\ndescription = \"d\"\n{body}")).unwrap();
        let o = virtlab(&["run", file.to_str().unwrap()]);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains(&format!("{}:{at}: ", file.display())) && err.contains(what),
            "{body}: {err}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}
