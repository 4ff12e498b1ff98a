//! Renders the HTML report of a `results.json`: `cargo run -p reports --example
//! render_html -- results.json report.html`.

use std::path::PathBuf;

fn main() -> Result<(), reports::Error> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(input), Some(output)) = (args.next(), args.next()) else {
        eprintln!("usage: render_html RESULTS.json OUT.html");
        std::process::exit(2);
    };
    let report = reports::Report::load(&input)?;
    report.write_html_file(&output)?;
    println!("wrote {}", output.display());
    Ok(())
}
