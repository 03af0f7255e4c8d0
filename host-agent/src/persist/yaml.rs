//! The one renderer for netplan's YAML: block style, two spaces per level, sequences of
//! mappings as `- key: value` with the rest of the mapping under the first key, strings in
//! double quotes. Backends build a [`Node`] tree; only this module decides how it is spelled.
//! (Only writing: what netplan reads is judged by netplan's own generator, see netplan.rs.)

/// A YAML value as symroute writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Node {
    /// Keys in the order given.
    Map(Vec<(String, Node)>),
    Seq(Vec<Node>),
    /// A string, always double-quoted (addresses and MACs hold `:`).
    Str(String),
    /// A number, a boolean or a keyword netplan takes bare (`scope: link`).
    Plain(String),
}

impl Node {
    pub(crate) fn map() -> Node {
        Node::Map(Vec::new())
    }

    pub(crate) fn str(v: impl std::fmt::Display) -> Node {
        Node::Str(v.to_string())
    }

    pub(crate) fn plain(v: impl std::fmt::Display) -> Node {
        Node::Plain(v.to_string())
    }

    /// Adds `key: value` to a mapping (a no-op on anything else, which the builders never do).
    pub(crate) fn with(mut self, key: impl Into<String>, value: Node) -> Node {
        if let Node::Map(entries) = &mut self {
            entries.push((key.into(), value));
        }
        self
    }

    /// Adds `key: value` when there is a value.
    pub(crate) fn with_some(self, key: &str, value: Option<Node>) -> Node {
        match value {
            Some(v) => self.with(key, v),
            None => self,
        }
    }
}

/// The file: `header` (comment lines), then the document.
pub(crate) fn render(header: String, doc: &Node) -> String {
    let mut out = header;
    match doc {
        Node::Map(entries) => map(&mut out, entries, 0),
        other => {
            scalar(&mut out, other);
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn map(out: &mut String, entries: &[(String, Node)], at: usize) {
    for (k, v) in entries {
        indent(out, at);
        key(out, k);
        value_after_key(out, v, at);
    }
}

/// After `key:`: a scalar on the same line, a collection on the lines below, one level in.
fn value_after_key(out: &mut String, v: &Node, at: usize) {
    match v {
        Node::Map(e) if !e.is_empty() => {
            out.push_str(":\n");
            map(out, e, at + 2);
        }
        Node::Seq(items) if !items.is_empty() => {
            out.push_str(":\n");
            seq(out, items, at + 2);
        }
        Node::Map(_) => out.push_str(": {}\n"),
        Node::Seq(_) => out.push_str(": []\n"),
        s => {
            out.push_str(": ");
            scalar(out, s);
            out.push('\n');
        }
    }
}

fn seq(out: &mut String, items: &[Node], at: usize) {
    for item in items {
        indent(out, at);
        out.push_str("- ");
        match item {
            // The mapping's first key on the dash's line, the others under it.
            Node::Map(e) if !e.is_empty() => {
                let (k, v) = &e[0];
                key(out, k);
                value_after_key(out, v, at + 2);
                map(out, &e[1..], at + 2);
            }
            Node::Seq(inner) if !inner.is_empty() => {
                out.push('\n');
                seq(out, inner, at + 2);
            }
            Node::Map(_) => out.push_str("{}\n"),
            Node::Seq(_) => out.push_str("[]\n"),
            s => {
                scalar(out, s);
                out.push('\n');
            }
        }
    }
}

/// A key: bare when it is a plain word (interface names, netplan's keys), quoted otherwise.
fn key(out: &mut String, k: &str) {
    let plain = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !k.starts_with(['-', '.']);
    if plain {
        out.push_str(k);
    } else {
        quoted(out, k);
    }
}

fn scalar(out: &mut String, n: &Node) {
    match n {
        Node::Str(s) => quoted(out, s),
        Node::Plain(p) => out.push_str(p),
        Node::Map(_) | Node::Seq(_) => unreachable!("collections are laid out by map/seq"),
    }
}

/// A double-quoted YAML string: backslash and quote escaped, control characters as `\xNN`.
fn quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_style_with_mappings_in_sequences_under_their_first_key() {
        let doc = Node::map().with(
            "network",
            Node::map().with("version", Node::plain(2)).with(
                "ethernets",
                Node::map().with(
                    "eth1",
                    Node::map()
                        .with("match", Node::map().with("macaddress", Node::str("0a:00")))
                        .with("addresses", Node::Seq(vec![Node::str("10.0.1.21/24")]))
                        .with(
                            "routes",
                            Node::Seq(vec![Node::map()
                                .with("to", Node::str("0.0.0.0/0"))
                                .with("table", Node::plain(10001))]),
                        )
                        .with("empty", Node::Seq(vec![])),
                ),
            ),
        );
        assert_eq!(
            render("# h\n".into(), &doc),
            "# h\nnetwork:\n  version: 2\n  ethernets:\n    eth1:\n      match:\n        macaddress: \"0a:00\"\n      addresses:\n        - \"10.0.1.21/24\"\n      routes:\n        - to: \"0.0.0.0/0\"\n          table: 10001\n      empty: []\n"
        );
    }

    #[test]
    fn keys_and_strings_that_are_not_plain_are_quoted_and_escaped() {
        let doc = Node::map().with("we:ird", Node::str("a\"b\\c\n"));
        assert_eq!(
            render(String::new(), &doc),
            "\"we:ird\": \"a\\\"b\\\\c\\x0a\"\n"
        );
    }
}
