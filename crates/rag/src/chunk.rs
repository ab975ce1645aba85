//! Splitting documents into overlapping chunks that remember where they came from.
//!
//! A document is first parsed into blocks (paragraphs, list items, code blocks), each
//! under its heading path: Markdown with `pulldown-cmark`, HTML with `scraper`
//! (html5ever), reStructuredText and plain text by hand (no maintained Rust parser for
//! reStructuredText exists; section titles are the lines underlined, and optionally
//! overlined, with punctuation, levels numbered in order of first appearance as docutils
//! does). Consecutive blocks of one section are then packed into chunks of at most
//! [`ChunkConfig::max_chars`] characters; each chunk after the first of a section starts
//! with the last [`ChunkConfig::overlap_chars`] characters of the previous one (cut at a
//! word boundary), so a passage cut in two is whole in one of them.

use std::path::Path;

use pulldown_cmark::{Event, HeadingLevel, Parser, Tag, TagEnd};
use serde::{Deserialize, Serialize};

/// A document format the chunker reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Format {
    /// CommonMark / Markdown (`.md`, `.markdown`).
    Markdown,
    /// reStructuredText (`.rst`, `.rest`, also gzipped `.rst.gz`).
    Rst,
    /// HTML (`.html`, `.htm`).
    Html,
    /// Plain text (`.txt`, `.text`, no extension).
    Text,
}

impl Format {
    /// The format a file name implies (a trailing `.gz` is looked through), or `None`
    /// when the extension is not one of the above.
    pub fn from_path(path: &Path) -> Option<Self> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        let ext = match name.rsplit_once('.') {
            Some((_, ext)) => ext,
            None => return Some(Self::Text),
        };
        match ext {
            "md" | "markdown" => Some(Self::Markdown),
            "rst" | "rest" => Some(Self::Rst),
            "html" | "htm" => Some(Self::Html),
            "txt" | "text" => Some(Self::Text),
            _ => None,
        }
    }
}

/// A piece of a document, the unit that is embedded and retrieved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Where the document came from (a path).
    pub source: String,
    /// The titles of the sections it is in, outermost first.
    pub headings: Vec<String>,
    /// The text.
    pub text: String,
}

impl Chunk {
    /// The text the embedder sees: the heading path, then the text.
    pub fn embedding_text(&self) -> String {
        if self.headings.is_empty() {
            self.text.clone()
        } else {
            format!("{}\n{}", self.headings.join(" > "), self.text)
        }
    }
}

/// Chunk sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkConfig {
    /// Longest chunk in characters (about 4 characters per word piece, so 900 fits the
    /// model's 256-piece window with the heading path).
    pub max_chars: usize,
    /// Characters repeated from the end of the previous chunk of the same section.
    pub overlap_chars: usize,
}

impl Default for ChunkConfig {
    fn default() -> Self {
        Self {
            max_chars: 900,
            overlap_chars: 150,
        }
    }
}

/// A parsed block: its heading path and its text.
type Block = (Vec<String>, String);

/// Split `text` (a document in `format` from `source`) into chunks.
pub fn chunk_document(source: &str, text: &str, format: Format, cfg: ChunkConfig) -> Vec<Chunk> {
    let blocks = match format {
        Format::Markdown => markdown_blocks(text),
        Format::Rst => rst_blocks(text),
        Format::Html => html_blocks(text),
        Format::Text => text_blocks(text),
    };
    pack(source, blocks, cfg)
}

fn normalise_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn push_block(blocks: &mut Vec<Block>, headings: &[String], text: &str) {
    let text = normalise_ws(text);
    if !text.is_empty() {
        blocks.push((headings.to_vec(), text));
    }
}

fn set_heading(stack: &mut Vec<String>, level: usize, title: String) {
    stack.truncate(level.saturating_sub(1));
    stack.push(title);
}

fn markdown_blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut buf = String::new();
    let mut heading: Option<(usize, String)> = None;
    for event in Parser::new(text) {
        match event {
            Event::Start(Tag::Heading { level, .. }) => {
                push_block(&mut blocks, &stack, &buf);
                buf.clear();
                let level = match level {
                    HeadingLevel::H1 => 1,
                    HeadingLevel::H2 => 2,
                    HeadingLevel::H3 => 3,
                    HeadingLevel::H4 => 4,
                    HeadingLevel::H5 => 5,
                    HeadingLevel::H6 => 6,
                };
                heading = Some((level, String::new()));
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some((level, title)) = heading.take() {
                    set_heading(&mut stack, level, normalise_ws(&title));
                }
            }
            Event::Text(t) | Event::Code(t) => match &mut heading {
                Some((_, title)) => title.push_str(&t),
                None => buf.push_str(&t),
            },
            Event::SoftBreak | Event::HardBreak => buf.push(' '),
            Event::End(TagEnd::Paragraph | TagEnd::CodeBlock | TagEnd::Item | TagEnd::TableRow) => {
                push_block(&mut blocks, &stack, &buf);
                buf.clear();
            }
            Event::End(TagEnd::TableCell) => buf.push_str(" | "),
            _ => {}
        }
    }
    push_block(&mut blocks, &stack, &buf);
    blocks
}

fn is_rst_adornment(line: &str) -> Option<char> {
    let line = line.trim_end();
    let first = line.chars().next()?;
    if line.chars().count() < 2 || !first.is_ascii_punctuation() {
        return None;
    }
    line.chars().all(|c| c == first).then_some(first)
}

fn rst_blocks(text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut styles: Vec<(char, bool)> = Vec::new();
    let mut buf = String::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        // A title: `Title` over an adornment at least as long, optionally with an overline.
        let title_at = |t: usize| -> Option<(String, char)> {
            let title = lines.get(t)?.trim();
            let under = lines.get(t + 1)?;
            let c = is_rst_adornment(under)?;
            (!title.is_empty()
                && is_rst_adornment(title).is_none()
                && under.trim_end().chars().count() >= title.chars().count())
            .then(|| (title.to_string(), c))
        };
        let found = if let Some(c) = is_rst_adornment(line) {
            // Overline + title + underline.
            match (
                lines.get(i + 1),
                lines.get(i + 2).and_then(|l| is_rst_adornment(l)),
            ) {
                (Some(title), Some(c2)) if c2 == c && !title.trim().is_empty() => {
                    Some((title.trim().to_string(), c, true, 3))
                }
                _ => None,
            }
        } else {
            title_at(i).map(|(t, c)| (t, c, false, 2))
        };
        if let Some((title, c, over, consumed)) = found {
            push_block(&mut blocks, &stack, &buf);
            buf.clear();
            let style = (c, over);
            let level = match styles.iter().position(|s| *s == style) {
                Some(p) => p + 1,
                None => {
                    styles.push(style);
                    styles.len()
                }
            };
            set_heading(&mut stack, level, title);
            i += consumed;
            continue;
        }
        let trimmed = line.trim();
        if trimmed.is_empty() {
            push_block(&mut blocks, &stack, &buf);
            buf.clear();
        } else if is_rst_adornment(line).is_some() && trimmed.len() > 3 {
            // A transition or table border: no text.
        } else if trimmed == ".." || trimmed.starts_with(".. _") || trimmed.starts_with(".. SPDX") {
            // Comments and link targets carry no prose.
        } else {
            buf.push_str(trimmed);
            buf.push(' ');
        }
        i += 1;
    }
    push_block(&mut blocks, &stack, &buf);
    blocks
}

fn text_blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    for para in text.split("\n\n") {
        push_block(&mut blocks, &[], para);
    }
    blocks
}

fn html_blocks(text: &str) -> Vec<Block> {
    use scraper::{node::Node, Html};
    let doc = Html::parse_document(text);
    let mut blocks = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut buf = String::new();
    // Depth-first walk in document order, with an explicit stack of (node, entering).
    let mut todo = vec![(doc.tree.root(), true)];
    while let Some((node, entering)) = todo.pop() {
        match node.value() {
            Node::Element(el) => {
                let name = el.name();
                if matches!(name, "script" | "style" | "head" | "noscript" | "template") {
                    continue;
                }
                let heading_level = match name {
                    "h1" => Some(1),
                    "h2" => Some(2),
                    "h3" => Some(3),
                    "h4" => Some(4),
                    "h5" => Some(5),
                    "h6" => Some(6),
                    _ => None,
                };
                let block = heading_level.is_some()
                    || matches!(
                        name,
                        "p" | "li"
                            | "pre"
                            | "blockquote"
                            | "dd"
                            | "dt"
                            | "tr"
                            | "div"
                            | "section"
                            | "article"
                            | "table"
                            | "ul"
                            | "ol"
                            | "br"
                    );
                if block {
                    push_block(&mut blocks, &stack, &buf);
                    buf.clear();
                }
                if let Some(level) = heading_level {
                    if entering {
                        let title: String = scraper::ElementRef::wrap(node)
                            .map(|e| e.text().collect())
                            .unwrap_or_default();
                        set_heading(&mut stack, level, normalise_ws(&title));
                    }
                    continue;
                }
                if entering {
                    todo.push((node, false));
                    let children: Vec<_> = node.children().collect();
                    for child in children.into_iter().rev() {
                        todo.push((child, true));
                    }
                }
            }
            Node::Text(t) => {
                buf.push_str(t);
                buf.push(' ');
            }
            Node::Document | Node::Fragment if entering => {
                let children: Vec<_> = node.children().collect();
                for child in children.into_iter().rev() {
                    todo.push((child, true));
                }
            }
            _ => {}
        }
    }
    push_block(&mut blocks, &stack, &buf);
    blocks
}

/// The last `n` characters of `s`, starting at a word boundary.
fn tail(s: &str, n: usize) -> &str {
    if s.chars().count() <= n {
        return s;
    }
    let start = s.char_indices().rev().nth(n - 1).map_or(0, |(i, _)| i);
    let rest = &s[start..];
    match rest.find(' ') {
        Some(sp) if sp + 1 < rest.len() => &rest[sp + 1..],
        _ => rest,
    }
}

/// Split one long paragraph into pieces of at most `max` characters at word boundaries.
fn split_words(text: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for word in text.split(' ') {
        let wlen = word.chars().count();
        if !cur.is_empty() && cur.chars().count() + 1 + wlen > max {
            out.push(std::mem::take(&mut cur));
        }
        if wlen > max {
            // A single huge token (a hash, a URL): cut it by characters.
            let chars: Vec<char> = word.chars().collect();
            for piece in chars.chunks(max) {
                out.push(piece.iter().collect());
            }
            continue;
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn pack(source: &str, blocks: Vec<Block>, cfg: ChunkConfig) -> Vec<Chunk> {
    let max = cfg.max_chars.max(16);
    let overlap = cfg.overlap_chars.min(max / 2);
    let mut chunks = Vec::new();
    let mut cur_headings: Option<Vec<String>> = None;
    let mut cur = String::new();
    // Whether `cur` holds new text beyond the overlap it was seeded with.
    let mut fresh = false;
    let flush = |chunks: &mut Vec<Chunk>, headings: &[String], cur: &str| {
        chunks.push(Chunk {
            source: source.to_string(),
            headings: headings.to_vec(),
            text: cur.to_string(),
        });
    };
    for (headings, text) in blocks {
        if cur_headings.as_ref() != Some(&headings) {
            if let Some(h) = &cur_headings {
                if fresh {
                    flush(&mut chunks, h, &cur);
                }
            }
            cur.clear();
            fresh = false;
            cur_headings = Some(headings.clone());
        }
        for piece in split_words(&text, max - overlap) {
            let need = piece.chars().count() + usize::from(!cur.is_empty());
            if fresh && cur.chars().count() + need > max {
                flush(&mut chunks, &headings, &cur);
                cur = tail(&cur, overlap).to_string();
            }
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(&piece);
            fresh = true;
        }
    }
    if let (Some(h), true) = (&cur_headings, fresh) {
        flush(&mut chunks, h, &cur);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max: usize, overlap: usize) -> ChunkConfig {
        ChunkConfig {
            max_chars: max,
            overlap_chars: overlap,
        }
    }

    #[test]
    fn formats_from_paths() {
        assert_eq!(
            Format::from_path(Path::new("a/b.md")),
            Some(Format::Markdown)
        );
        assert_eq!(Format::from_path(Path::new("x.rst.gz")), Some(Format::Rst));
        assert_eq!(Format::from_path(Path::new("x.HTML")), Some(Format::Html));
        assert_eq!(Format::from_path(Path::new("README")), Some(Format::Text));
        assert_eq!(Format::from_path(Path::new("a.png")), None);
    }

    #[test]
    fn markdown_keeps_heading_paths() {
        let doc = "# Runbook\n\nIntro text.\n\n## Link down\n\nCheck the cable.\n\n- restart the node\n\n### Deeper\n\nMore.\n\n## Partition\n\nWait for healing.\n";
        let chunks = chunk_document("r.md", doc, Format::Markdown, cfg(900, 100));
        let got: Vec<(Vec<&str>, &str)> = chunks
            .iter()
            .map(|c| {
                (
                    c.headings.iter().map(String::as_str).collect(),
                    c.text.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (vec!["Runbook"], "Intro text."),
                (
                    vec!["Runbook", "Link down"],
                    "Check the cable. restart the node"
                ),
                (vec!["Runbook", "Link down", "Deeper"], "More."),
                (vec!["Runbook", "Partition"], "Wait for healing."),
            ]
        );
        assert!(chunks.iter().all(|c| c.source == "r.md"));
    }

    #[test]
    fn rst_titles_levels_and_overlines() {
        let doc = ".. SPDX-License-Identifier: GPL-2.0\n\n=====\nTitle\n=====\n\nTop para.\n\nSection A\n---------\n\nText a\ncontinues.\n\nSub\n~~~\n\nText sub.\n\nSection B\n---------\n\nText b.\n";
        let chunks = chunk_document("d.rst", doc, Format::Rst, cfg(900, 100));
        let got: Vec<(String, &str)> = chunks
            .iter()
            .map(|c| (c.headings.join(">"), c.text.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("Title".into(), "Top para."),
                ("Title>Section A".into(), "Text a continues."),
                ("Title>Section A>Sub".into(), "Text sub."),
                ("Title>Section B".into(), "Text b."),
            ]
        );
    }

    #[test]
    fn html_headings_and_blocks() {
        let doc = "<html><head><title>t</title><style>p{}</style></head><body><h1>Guide</h1><p>First <b>bold</b> para.</p><h2>Part</h2><ul><li>one</li><li>two</li></ul><script>x()</script></body></html>";
        let chunks = chunk_document("g.html", doc, Format::Html, cfg(900, 100));
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].headings, vec!["Guide"]);
        assert_eq!(chunks[0].text, "First bold para.");
        assert_eq!(chunks[1].headings, vec!["Guide", "Part"]);
        assert_eq!(chunks[1].text, "one two");
    }

    #[test]
    fn long_sections_split_with_overlap_and_bounded_size() {
        let words: Vec<String> = (0..400).map(|i| format!("w{i}")).collect();
        let doc = words.join(" ");
        let chunks = chunk_document("t.txt", &doc, Format::Text, cfg(200, 50));
        assert!(chunks.len() > 5);
        for pair in chunks.windows(2) {
            assert!(pair[0].text.chars().count() <= 200);
            // The next chunk starts with the end of the previous one.
            let first_word = pair[1].text.split(' ').next().unwrap();
            assert!(pair[0].text.ends_with(&tail(&pair[0].text, 50).to_string()));
            assert!(
                pair[0].text.contains(first_word),
                "{first_word} not in {}",
                pair[0].text
            );
        }
        // Every word survives.
        let all: String = chunks
            .iter()
            .map(|c| c.text.clone())
            .collect::<Vec<_>>()
            .join(" ");
        for w in &words {
            assert!(all.split(' ').any(|x| x == w), "{w} lost");
        }
    }

    #[test]
    fn empty_and_whitespace_documents_give_no_chunks() {
        assert!(chunk_document("e", "  \n\n ", Format::Text, ChunkConfig::default()).is_empty());
        assert!(chunk_document("e", "", Format::Markdown, ChunkConfig::default()).is_empty());
    }
}
