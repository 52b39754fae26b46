//! Hides credentials in the text the job prints: the `user:password@` of
//! every URL in it, a Unix socket URL's `?pass=`, and a quoted value that
//! looks like a URL whose scheme was forgotten (`'user:pass@host'`). Used
//! wherever a message may quote what the user gave: clap's usage errors, the
//! job's own failures, a Pushgateway's answer.

/// `text` with the credentials of every URL in it (`scheme://user:pass@`)
/// replaced by `***`: all from `://` to the last `@` in the URL, so that a
/// password with a quote, `/`, `?`, `#` or a space in it is hidden too
/// (and, rarely, more than the credentials), and its query when it names a
/// password (`unix:///path?pass=...`). A URL ends at the next space,
/// or, quoted as clap quotes a value (`'redis://...'`), at the last quote
/// on its line that a space or the line's end follows. A quoted value
/// without a scheme whose part before its last `@` holds a `:` (`'user:pass@host'`,
/// a URL whose scheme was forgotten) shows as `'***@host'`.
pub fn without_credentials(text: &str) -> String {
    without_schemeless_credentials(&without_url_credentials(text))
}

/// `value`, which the user gave (a URL, with or without its scheme), quoted
/// as clap quotes a value, and without its credentials.
pub fn quoted(value: &str) -> String {
    without_credentials(&format!("'{value}'"))
}

/// `text` with the credentials of every URL in it hidden (see
/// [`without_credentials`]).
fn without_url_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let scheme =
            before[..at].trim_end_matches(|c: char| c.is_ascii_alphanumeric() || "+-.".contains(c));
        let end = match scheme.ends_with('\'') {
            true => quoted_end(after),
            // Unquoted, it ends before the punctuation of the sentence.
            false => after[..after.find(char::is_whitespace).unwrap_or(after.len())]
                .trim_end_matches([':', ',', ';', '.', ')'])
                .len(),
        };
        let url = &after[..end];
        let shown = match url.rfind('@') {
            Some(at) => {
                out.push_str("***");
                at
            }
            None => 0,
        };
        // A Unix socket's URL carries its password in the query (`?pass=`).
        rest = match url[shown..].find('?') {
            Some(query) if url[shown + query..].contains("pass") => {
                out.push_str(&url[shown..=shown + query]);
                out.push_str("***");
                &after[end..]
            }
            _ => &after[shown..],
        };
    }
    out.push_str(rest);
    out
}

/// `text` with every quoted value that is no URL and holds a `:` before its
/// last `@` shown as `***` up to that `@` (see [`without_credentials`]).
fn without_schemeless_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('\'') {
        let opens = rest[..open]
            .chars()
            .next_back()
            .is_none_or(char::is_whitespace);
        let (before, after) = rest.split_at(open + 1);
        out.push_str(before);
        let end = if opens { quoted_end(after) } else { 0 };
        let value = &after[..end];
        rest = match value.rfind('@') {
            Some(at) if !value.contains("://") && value[..at].contains(':') => {
                out.push_str("***");
                &after[at..]
            }
            _ => {
                out.push_str(value);
                &after[end..]
            }
        };
    }
    out.push_str(rest);
    out
}

/// Where a value quoted in `'`s ends in `text`, which starts inside it:
/// at the last quote of the line that a space or the line's end follows
/// (the value's own quotes may be any before it), or at the first space
/// when there is none.
fn quoted_end(text: &str) -> usize {
    let line = &text[..text.find('\n').unwrap_or(text.len())];
    line.rmatch_indices('\'')
        .map(|(i, _)| i)
        .find(|&i| line[i + 1..].chars().next().is_none_or(char::is_whitespace))
        .unwrap_or_else(|| line.find(char::is_whitespace).unwrap_or(line.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_taken_out_of_every_url_in_a_text() {
        assert_eq!(
            without_credentials(
                "unexpected argument 'redis://u:p,w@h:1/0' found; see rediss://:x@h2 and redis://h3"
            ),
            "unexpected argument 'redis://***@h:1/0' found; see rediss://***@h2 and redis://h3"
        );
        assert_eq!(without_credentials("no URL here"), "no URL here");
        // A URL ends at a space: an '@' after it is not its.
        assert_eq!(
            without_credentials("'redis://h:1' is not a server; ask ops@example.com"),
            "'redis://h:1' is not a server; ask ops@example.com"
        );
        assert_eq!(
            without_credentials("'unix:///r.sock?db=1&pass=x y' and unix:///s?db=2"),
            "'unix:///r.sock?***' and unix:///s?db=2"
        );
        assert_eq!(
            without_credentials("see redis://pass:x@h:1/0?db=1&pass=y"),
            "see redis://***@h:1/0?***"
        );
        assert_eq!(
            without_credentials("unix:///x?pass=sec: cannot read, redis://u:p@h."),
            "unix:///x?***: cannot read, redis://***@h."
        );
        // A URL whose scheme was forgotten, as clap quotes it.
        assert_eq!(
            without_credentials(
                "unexpected argument 'u:se cr@et@h:1' found\n  tip: use '-- u:p@h' or 'h:1'"
            ),
            "unexpected argument '***@h:1' found\n  tip: use '***@h' or 'h:1'"
        );
        assert_eq!(quoted("u:pw@h:1"), "'***@h:1'");
        assert_eq!(quoted("redis://u:pw@h:1/0"), "'redis://***@h:1/0'");
        assert_eq!(quoted("redis://h:1"), "'redis://h:1'");
        // No ':' before the '@' (no password), or not a quoted value.
        for kept in ["'ops@example.com' is not a URL", "use don't: a:b@c"] {
            assert_eq!(without_credentials(kept), kept);
        }
        // A password may hold a quote, '/', '?', '#' or a space (unencoded).
        for password in ["pa'ss", "p/w", "a?b", "ab#cd", "x@y", "my secret", "a' b"] {
            let quoted = format!("unexpected argument 'redis://u:{password}@h:1/0' found");
            assert_eq!(
                without_credentials(&quoted),
                "unexpected argument 'redis://***@h:1/0' found",
                "{password}"
            );
        }
    }
}
