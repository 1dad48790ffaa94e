//! Paged lists (issue 20): `peer list`, `token list`, `org list` and `apikey list` fetch a page,
//! print it and fetch the next one (the `X-Next-Cursor` of the last), so a list of 100,000 peers
//! is never held whole on either side.
//!
//! Text comes out as one table whose column widths are set by the first page (a longer cell
//! later only pushes its row's next columns right). `--json` prints exactly what it printed
//! before paging, one pretty JSON array, written item by item as the pages arrive.

use std::io::Write as _;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::client::ApiClient;

/// `--page-size`: how many items each request asks for.
#[derive(Debug, Clone, clap::Args)]
pub struct PageArg {
    /// Items per request (1 to 10000); the list is fetched page after page, printing as it goes.
    #[arg(long, value_name = "N", default_value_t = crate::api::paging::LIST_DEFAULT_LIMIT,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::api::paging::LIST_MAX_LIMIT)))]
    pub page_size: u32,
}

/// How a list is shown: the table's headers and one row per item.
pub struct Listing<'a, T> {
    /// The column headers.
    pub headers: &'a [&'a str],
    /// An item's cells, one per header.
    pub row: &'a dyn Fn(&T) -> Vec<String>,
}

/// Fetches every page of the list at `path` (which may already carry filters in its query) and
/// prints it as it comes: a table, or with `json` a JSON array. Returns how many items there were;
/// stops early, quietly, when stdout is closed (`sixpn peer list | head`).
///
/// # Errors
/// A request that fails (the first page's error is the server's; a later one says which page),
/// or stdout failing otherwise than by being closed.
pub async fn print_all<T: DeserializeOwned + Serialize>(
    client: &ApiClient,
    path: &str,
    page: &PageArg,
    json: bool,
    listing: Listing<'_, T>,
) -> anyhow::Result<usize> {
    let mut after: Option<String> = None;
    let mut count = 0usize;
    let mut table = TableStream::new(listing.headers);
    let mut array = JsonArrayStream::default();
    loop {
        let url = page_url(path, page.page_size, after.as_deref());
        let (items, next): (Vec<T>, _) = client.get_page(&url).await?;
        count += items.len();
        let text = if json {
            array.items(&items)?
        } else {
            let rows: Vec<Vec<String>> = items.iter().map(listing.row).collect();
            table.rows(&rows)
        };
        if !emit(&text)? {
            return Ok(count);
        }
        match next {
            // A server that hands back the cursor it was given would loop forever.
            Some(next) if after.as_deref() != Some(next.as_str()) && !items.is_empty() => {
                after = Some(next);
            }
            _ => break,
        }
    }
    let tail = if json { array.finish() } else { table.finish() };
    emit(&tail)?;
    Ok(count)
}

/// `path` asking for `limit` items after `after`.
fn page_url(path: &str, limit: u32, after: Option<&str>) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("limit", &limit.to_string());
    if let Some(after) = after {
        query.append_pair("after", after);
    }
    let joiner = if path.contains('?') { '&' } else { '?' };
    format!("{path}{joiner}{}", query.finish())
}

/// Writes `text` to stdout. `Ok(false)`: stdout is closed, the reader has what it wanted.
fn emit(text: &str) -> anyhow::Result<bool> {
    if text.is_empty() {
        return Ok(true);
    }
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(anyhow::Error::new(e).context("writing to stdout")),
    }
}

/// A table printed a page at a time: the first page sets the column widths, as
/// [`super::output::table`] would for it alone.
struct TableStream<'a> {
    headers: &'a [&'a str],
    widths: Option<Vec<usize>>,
}

impl<'a> TableStream<'a> {
    fn new(headers: &'a [&'a str]) -> Self {
        TableStream {
            headers,
            widths: None,
        }
    }

    /// The text of `rows`, headed by the header line on the first call.
    fn rows(&mut self, rows: &[Vec<String>]) -> String {
        let mut out = String::new();
        if self.widths.is_none() {
            let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
            for row in rows {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.chars().count());
                }
            }
            let header: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
            line(&mut out, &widths, &header);
            self.widths = Some(widths);
        }
        let widths = self.widths.as_deref().unwrap_or_default();
        for row in rows {
            line(&mut out, widths, row);
        }
        out
    }

    /// What is left to print: the header line when no page had a row.
    fn finish(&mut self) -> String {
        if self.widths.is_none() {
            self.rows(&[])
        } else {
            String::new()
        }
    }
}

/// Appends one table line: cells padded to `widths`, two blanks apart, no trailing blanks.
fn line(out: &mut String, widths: &[usize], cells: &[String]) {
    let mut text = String::new();
    for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
        if i > 0 {
            text.push_str("  ");
        }
        text.push_str(cell);
        text.extend(std::iter::repeat_n(
            ' ',
            width.saturating_sub(cell.chars().count()),
        ));
    }
    out.push_str(text.trim_end());
    out.push('\n');
}

/// A pretty JSON array written an item at a time, byte for byte what
/// `serde_json::to_string_pretty` writes for the whole array.
#[derive(Default)]
struct JsonArrayStream {
    started: bool,
}

impl JsonArrayStream {
    fn items<T: Serialize>(&mut self, items: &[T]) -> anyhow::Result<String> {
        let mut out = String::new();
        for item in items {
            out.push_str(if self.started { ",\n" } else { "[\n" });
            self.started = true;
            let text = serde_json::to_string_pretty(item)?;
            for (i, line) in text.lines().enumerate() {
                if i > 0 {
                    out.push('\n');
                }
                out.push_str("  ");
                out.push_str(line);
            }
        }
        Ok(out)
    }

    fn finish(&mut self) -> String {
        if self.started {
            "\n]\n".to_owned()
        } else {
            "[]\n".to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streamed_array_is_the_pretty_array() {
        let values = vec![
            serde_json::json!({"name": "a", "tags": ["x", "y"], "n": {"deep": [1, 2]}}),
            serde_json::json!({"name": "b", "tags": [], "n": null}),
            serde_json::json!("text\nwith a newline"),
        ];
        for split in 0..=values.len() {
            let mut stream = JsonArrayStream::default();
            let mut text = stream.items(&values[..split]).unwrap();
            text.push_str(&stream.items::<serde_json::Value>(&[]).unwrap());
            text.push_str(&stream.items(&values[split..]).unwrap());
            text.push_str(&stream.finish());
            let whole = serde_json::to_string_pretty(&values).unwrap() + "\n";
            assert_eq!(text, whole, "split at {split}");
        }
        let mut empty = JsonArrayStream::default();
        assert_eq!(empty.finish(), "[]\n");
    }

    #[test]
    fn a_streamed_table_is_the_table_of_its_first_page() {
        let headers = ["NAME", "GROUP"];
        let page1 = vec![vec!["node-1".to_owned(), "web".to_owned()]];
        let page2 = vec![vec!["a-much-longer-name".to_owned(), "db".to_owned()]];
        let mut stream = TableStream::new(&headers);
        let first = stream.rows(&page1);
        assert_eq!(first, super::super::output::table(&headers, &page1));
        assert_eq!(stream.rows(&page2), "a-much-longer-name  db\n");
        assert_eq!(stream.finish(), "");
        let mut empty = TableStream::new(&headers);
        assert_eq!(empty.finish(), "NAME  GROUP\n");
    }

    #[test]
    fn page_urls() {
        assert_eq!(page_url("api/v1/orgs", 5, None), "api/v1/orgs?limit=5");
        assert_eq!(
            page_url("api/v1/orgs/x/peers?group=web", 1000, Some("node-9")),
            "api/v1/orgs/x/peers?group=web&limit=1000&after=node-9"
        );
    }
}
