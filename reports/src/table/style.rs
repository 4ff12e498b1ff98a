//! Colour for the terminal (ANSI), off when the output is not a terminal or `NO_COLOR`
//! is set, and the padding that ignores it.

use crate::verdict::Class;

/// How a piece of text is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tone {
    /// As is.
    #[default]
    Plain,
    /// Fine: green.
    Ok,
    /// An expected divergence: cyan.
    Expected,
    /// Caused by the host: yellow.
    Host,
    /// A real failure: bold red.
    Fail,
    /// Less important: dim.
    Dim,
    /// A heading: bold.
    Bold,
}

impl From<Class> for Tone {
    fn from(c: Class) -> Tone {
        match c {
            Class::Ok => Tone::Ok,
            Class::Expected => Tone::Expected,
            Class::Host => Tone::Host,
            Class::Failure => Tone::Fail,
        }
    }
}

/// Whether to colour, and how wide the output may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paint {
    /// Emit ANSI colour codes.
    pub color: bool,
}

impl Paint {
    /// `text` in `tone`.
    pub fn paint(&self, text: &str, tone: Tone) -> String {
        let code = match tone {
            Tone::Plain => return text.to_string(),
            Tone::Ok => "32",
            Tone::Expected => "36",
            Tone::Host => "33",
            Tone::Fail => "1;31",
            Tone::Dim => "2",
            Tone::Bold => "1",
        };
        if !self.color || text.is_empty() {
            return text.to_string();
        }
        format!("\x1b[{code}m{text}\x1b[0m")
    }
}

/// Whether colour suits standard output: a terminal, and `NO_COLOR` unset or empty.
pub fn color_for_stdout() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stdout().is_terminal()
}

/// Visible width of text (characters; every character the tables use is one column).
pub fn width(s: &str) -> usize {
    s.chars().count()
}

/// `s` padded with spaces to `w` columns (never cut).
pub fn pad(s: &str, w: usize) -> String {
    format!("{s}{}", " ".repeat(w.saturating_sub(width(s))))
}

/// One table cell: its text and tone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cell {
    /// The text, without colour.
    pub text: String,
    /// How it is shown.
    pub tone: Tone,
}

impl Cell {
    /// A plain cell.
    pub fn plain(text: impl Into<String>) -> Cell {
        Cell {
            text: text.into(),
            tone: Tone::Plain,
        }
    }

    /// A cell in a tone.
    pub fn toned(text: impl Into<String>, tone: Tone) -> Cell {
        Cell {
            text: text.into(),
            tone,
        }
    }
}

/// Writes rows of cells with every column padded to its widest cell, `gap` spaces apart,
/// trailing spaces trimmed. The last cell of a row shorter than the table spans the
/// columns it lacks: it does not widen its column.
pub fn columns(out: &mut String, rows: &[Vec<Cell>], gap: usize, paint: &Paint) {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .filter(|r| r.len() == n || i + 1 < r.len())
                .filter_map(|r| r.get(i))
                .map(|c| width(&c.text))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        let last = row.iter().rposition(|c| !c.text.is_empty()).unwrap_or(0);
        for (i, c) in row.iter().enumerate().take(last + 1) {
            if i > 0 {
                line.push_str(&" ".repeat(gap));
            }
            let text = if i == last {
                c.text.clone()
            } else {
                pad(&c.text, widths[i])
            };
            line.push_str(&paint.paint(&text, c.tone));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_when_asked_and_padding_ignores_it() {
        let on = Paint { color: true };
        let off = Paint { color: false };
        assert_eq!(on.paint("✗", Tone::Fail), "\x1b[1;31m✗\x1b[0m");
        assert_eq!(off.paint("✗", Tone::Fail), "✗");
        let rows = vec![
            vec![
                Cell::plain("a"),
                Cell::toned("bad", Tone::Fail),
                Cell::plain("x"),
            ],
            vec![Cell::plain("long"), Cell::plain("ok"), Cell::plain("y")],
        ];
        let mut plain = String::new();
        columns(&mut plain, &rows, 2, &off);
        assert_eq!(plain, "a     bad  x\nlong  ok   y\n");
        let mut coloured = String::new();
        columns(&mut coloured, &rows, 2, &on);
        assert_eq!(
            coloured.replace("\x1b[1;31m", "").replace("\x1b[0m", ""),
            plain
        );
    }
}
