//! HTML building blocks of the console: escaping, percent-encoding and the page frame.
//!
//! Every piece of text that reaches a page goes through [`esc`] (element content and quoted
//! attribute values alike), and every value put into a link's query string through [`pct`]:
//! peer, group, token and region names, audit details and error messages are all user input.

use std::fmt::Write as _;

/// `text`, escaped for HTML element content and double- or single-quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text`, percent-encoded for a URL query value (everything but unreserved characters).
pub fn pct(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A byte count for people: `1.5 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// How long ago `at` (unix seconds) was, for people: `42 s`, `5 min`, `3 h`, `2 d`.
pub fn age(at: i64, now: i64) -> String {
    let secs = now.saturating_sub(at).max(0);
    match secs {
        0..120 => format!("{secs} s"),
        120..7200 => format!("{} min", secs / 60),
        7200..172_800 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    }
}

/// What the frame around a page shows of the signed-in caller.
pub struct Frame<'a> {
    /// The page title (plain text).
    pub title: &'a str,
    /// `viewer of acme`, or `None` on the sign-in page.
    pub who: Option<&'a str>,
    /// The session's CSRF token, for the sign-out form.
    pub csrf: Option<&'a str>,
}

/// A whole page: `body` (already HTML) in the console's frame. No inline script or style: the
/// Content-Security-Policy allows only `/ui/static/*`.
pub fn page(frame: &Frame<'_>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 1024);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · sixpn</title>\
         <link rel=\"stylesheet\" href=\"/ui/static/console.css\">\
         <script src=\"/ui/static/console.js\" defer></script></head><body>\
         <header><a class=\"brand\" href=\"/ui\">sixpn</a>",
        esc(frame.title)
    );
    if let (Some(who), Some(csrf)) = (frame.who, frame.csrf) {
        let _ = write!(
            out,
            "<span class=\"who\">{}</span>\
             <form method=\"post\" action=\"/ui/logout\" class=\"inline\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\">Sign out</button></form>",
            esc(who),
            esc(csrf)
        );
    }
    let _ = writeln!(out, "</header><main>{body}</main></body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            esc("<b a='1' c=\"2\">&</b>"),
            "&lt;b a=&#39;1&#39; c=&quot;2&quot;&gt;&amp;&lt;/b&gt;"
        );
        assert_eq!(esc("plain-name_1"), "plain-name_1");
        assert_eq!(pct("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(pct("web-1.x_~"), "web-1.x_~");
    }

    #[test]
    fn units() {
        assert_eq!(bytes(10), "10 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(age(100, 142), "42 s");
        assert_eq!(age(0, 600), "10 min");
        assert_eq!(age(0, 3 * 86_400), "3 d");
        assert_eq!(age(10, 0), "0 s");
    }
}
