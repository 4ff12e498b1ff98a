use guests::{build, Params, WORKLOADS};
use modes::{Engine, Flavour, RunOptions};
use trap_emulate::TrapEmulate;

#[test]
fn smoke() {
    for w in WORKLOADS {
        let img = build(w.name, Flavour::Native, Params { n: 10, ..Params::default() }).unwrap();
        let r = TrapEmulate.run(&img, &RunOptions::default()).unwrap();
        println!("{}: {:?} traps={:?} inj={} exits={:?} console={:?}", w.name, r.outcome, r.traps, r.injections, r.exits, r.console);
    }
}
