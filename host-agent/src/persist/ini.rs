//! The one renderer for the files made of `[Section]`s of `Key=value` lines: systemd-networkd's
//! .network files and drop-ins (systemd.syntax(7)) and NetworkManager's keyfiles (GLib's key
//! files). Backends build typed sections; only this module decides how they are spelled.
//!
//! Layout, the same for every such file symroute writes: the owner header, then the blocks,
//! one blank line between two blocks. A section may carry comment lines just above its name
//! (they belong to it), and comment lines among its keys.

use std::fmt::Display;

/// One `[Name]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Section {
    name: String,
    /// Comment lines written just above `[Name]`, without the `# `.
    above: Vec<String>,
    lines: Vec<Line>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Line {
    Key(String, String),
    Comment(String),
    /// A line copied from someone else's file, as it was (trimmed).
    Raw(String),
}

impl Section {
    pub(crate) fn new(name: impl Into<String>) -> Section {
        Section {
            name: name.into(),
            above: Vec::new(),
            lines: Vec::new(),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// A comment line above `[Name]`.
    pub(crate) fn above(mut self, comment: impl Into<String>) -> Section {
        self.above.push(comment.into());
        self
    }

    /// `key=value`, in the order given (a key may repeat: networkd and NM both read lists so).
    pub(crate) fn set(mut self, key: &str, value: impl Display) -> Section {
        self.lines
            .push(Line::Key(key.to_owned(), value.to_string()));
        self
    }

    /// `key=value` when there is a value.
    pub(crate) fn set_some(self, key: &str, value: Option<impl Display>) -> Section {
        match value {
            Some(v) => self.set(key, v),
            None => self,
        }
    }

    /// A comment line among the keys, before the next one.
    pub(crate) fn note(mut self, comment: impl Into<String>) -> Section {
        self.lines.push(Line::Comment(comment.into()));
        self
    }

    /// The same with `&mut`, for sections filled in a loop.
    pub(crate) fn push(&mut self, key: &str, value: impl Display) {
        self.lines
            .push(Line::Key(key.to_owned(), value.to_string()));
    }

    fn render(&self, out: &mut String) {
        for c in &self.above {
            comment(out, c);
        }
        out.push('[');
        out.push_str(&self.name);
        out.push_str("]\n");
        for l in &self.lines {
            match l {
                Line::Key(k, v) => {
                    out.push_str(k);
                    out.push('=');
                    out.push_str(v);
                    out.push('\n');
                }
                Line::Comment(c) => comment(out, c),
                Line::Raw(r) => {
                    out.push_str(r);
                    out.push('\n');
                }
            }
        }
    }
}

/// What a file is made of, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Block {
    Section(Section),
    /// Comment lines standing on their own (an explanation between sections).
    Comment(Vec<String>),
}

impl From<Section> for Block {
    fn from(s: Section) -> Block {
        Block::Section(s)
    }
}

fn comment(out: &mut String, text: &str) {
    out.push_str("# ");
    out.push_str(text);
    out.push('\n');
}

/// The file: `header` (symroute's owner line, and any lines that must follow it directly), then
/// the blocks with one blank line between two.
pub(crate) fn render(header: String, blocks: &[Block]) -> String {
    let mut out = header;
    for (i, b) in blocks.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        match b {
            Block::Section(s) => s.render(&mut out),
            Block::Comment(lines) => lines.iter().for_each(|c| comment(&mut out, c)),
        }
    }
    out
}

/// The sections of a file someone else wrote: its lines kept in order as written (trimmed),
/// comments and blank lines dropped, as are lines before the first section. (For copying a
/// file's settings into one of symroute's own.)
pub(crate) fn parse(text: &str) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if let Some(name) = t.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
            out.push(Section::new(name));
        } else if let Some(s) = out.last_mut() {
            s.lines.push(Line::Raw(t.to_owned()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_separated_by_one_blank_line_and_comments_stay_where_they_were_put() {
        let text = render(
            "# head\n".into(),
            &[
                Section::new("Match")
                    .set("MACAddress", "0a:00:00:00:00:01")
                    .into(),
                Block::Comment(vec!["between".into()]),
                Section::new("Link")
                    .note("why")
                    .set("RequiredForOnline", "no")
                    .set_some("MTUBytes", None::<u32>)
                    .into(),
                Section::new("connection")
                    .above("above")
                    .set("id", 1)
                    .into(),
            ],
        );
        assert_eq!(
            text,
            "# head\n[Match]\nMACAddress=0a:00:00:00:00:01\n\n# between\n\n[Link]\n# why\n\
             RequiredForOnline=no\n\n# above\n[connection]\nid=1\n"
        );
    }

    #[test]
    fn a_foreign_files_sections_are_copied_line_for_line_without_comments() {
        let s = parse(
            "# c\n[Match]\nName=eth*\n\n[Network]\n ; x\nDHCP = yes\n[DHCPv4]\nRouteMetric=100\n",
        );
        let text = render(
            String::new(),
            &s.into_iter().map(Block::from).collect::<Vec<_>>(),
        );
        assert_eq!(
            text,
            "[Match]\nName=eth*\n\n[Network]\nDHCP = yes\n\n[DHCPv4]\nRouteMetric=100\n"
        );
    }
}
