//! What the CLI prints: aligned tables for people, pretty JSON for scripts, and the one place that
//! writes to stdout (so a closed pipe, as in `sixpn token list | head -1`, ends quietly).

use std::io::Write as _;

use serde_json::Value;

/// Writes `text` to stdout. A closed pipe is not an error: the reader has what it wanted.
///
/// # Errors
/// Any other I/O error on stdout.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("writing to stdout"))
        }
        _ => Ok(()),
    }
}

/// Prints `value` as pretty JSON followed by a newline.
///
/// # Errors
/// See [`print`].
pub fn print_json(value: &Value) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    print(&text)
}

/// Renders rows under headers with columns aligned by two spaces and no trailing blanks.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate().take(widths.len()) {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = widths[i].saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Renders `label: value` lines with the values aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (key, value) in pairs {
        let label = format!("{key}:");
        out.push_str(format!("{label:<width$}  {value}").trim_end());
        out.push('\n');
    }
    out
}

/// Prints a value of the API's types as pretty JSON.
///
/// # Errors
/// See [`print`].
pub fn print_typed<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let value = serde_json::to_value(value).map_err(anyhow::Error::new)?;
    print_json(&value)
}

/// A string of an answer as table text: absent or empty as `missing`. Control characters are
/// shown escaped (`\n`, `\u{1b}`), so a server's text can neither break a table's lines nor send
/// escape sequences to the terminal.
pub fn text(value: Option<&str>, missing: &str) -> String {
    match value {
        None | Some("") => missing.to_string(),
        Some(s) if s.chars().any(char::is_control) => s
            .chars()
            .flat_map(|c| {
                let escaped: Vec<char> = if c.is_control() {
                    c.escape_default().collect()
                } else {
                    vec![c]
                };
                escaped
            })
            .collect(),
        Some(s) => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let rows = vec![
            vec!["node-1".to_string(), "web".to_string(), "x".to_string()],
            vec!["a".to_string(), "database".to_string(), String::new()],
        ];
        let expect = "\
NAME    GROUP     Z
node-1  web       x
a       database
";
        assert_eq!(table(&["NAME", "GROUP", "Z"], &rows), expect);
        assert_eq!(table(&["NAME"], &[]), "NAME\n");
    }

    #[test]
    fn fields_align_values() {
        let text = fields(&[("name", "node-1".into()), ("address", "fdaa::2".into())]);
        assert_eq!(text, "name:     node-1\naddress:  fdaa::2\n");
    }

    #[test]
    fn texts() {
        assert_eq!(text(Some("x"), "-"), "x");
        assert_eq!(text(None, "never"), "never");
        assert_eq!(text(Some(""), "-"), "-");
        assert_eq!(text(Some("é"), "-"), "é");
        assert_eq!(text(Some("a\nb\u{1b}[31mc"), "-"), "a\\nb\\u{1b}[31mc");
    }
}
