//! The documentation stays usable: README.md stays a page a newcomer finishes, it links
//! every page of the user guide (docs/guide/), and no relative link in README.md,
//! docs/*.md or docs/guide/*.md points at a file or a heading that is not there
//! (issue 20). Std only: nothing here needs the crate.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

const README_MAX_LINES: usize = 250;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The `.md` files directly in `dir`, sorted.
fn markdown_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    files
}

/// The lines of `text` outside fenced code blocks, numbered from 1.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            lines.push((i + 1, line));
        }
    }
    lines
}

/// GitHub's anchor for a heading: lowercase, punctuation dropped except `-` and `_`,
/// each space a `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every anchor of a markdown file: its headings' slugs, a repeated one with `-1`,
/// `-2`, … as GitHub numbers them.
fn anchors(text: &str) -> HashSet<String> {
    let mut found = HashSet::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.len() - line.trim_start_matches('#').len();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(&line[hashes..]);
        let mut anchor = base.clone();
        let mut n = 0;
        while found.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        found.insert(anchor);
    }
    found
}

/// The targets of the markdown links `[text](target)` and `![alt](target)` outside code
/// (fenced blocks and inline code spans), with their line numbers.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (number, line) in prose_lines(text) {
        // Drop inline code spans: `](` inside backticks is not a link.
        let mut prose = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                prose.push_str(part);
            }
        }
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = rest[..end].split_whitespace().next().unwrap_or("");
            found.push((number, target.to_string()));
            rest = &rest[end..];
        }
    }
    found
}

fn is_external(target: &str) -> bool {
    target.contains("://") || target.starts_with("mailto:")
}

/// The files whose links are checked: README.md, docs/*.md and docs/guide/*.md.
fn checked_files() -> Vec<PathBuf> {
    let root = root();
    let mut files = vec![root.join("README.md")];
    files.extend(markdown_in(&root.join("docs")));
    files.extend(markdown_in(&root.join("docs/guide")));
    files
}

/// Every broken relative link in `file`, as `file:line: target (why)`.
fn broken_links(file: &Path) -> Vec<String> {
    let text = read(file);
    let dir = file.parent().unwrap();
    let shown = file
        .strip_prefix(root())
        .unwrap_or(file)
        .display()
        .to_string();
    let mut broken = Vec::new();
    for (line, target) in links(&text) {
        if target.is_empty() {
            broken.push(format!("{shown}:{line}: empty link target"));
            continue;
        }
        if is_external(&target) {
            continue;
        }
        let (path, anchor) = match target.split_once('#') {
            Some((path, anchor)) => (path, Some(anchor)),
            None => (target.as_str(), None),
        };
        let resolved = if path.is_empty() {
            file.to_path_buf()
        } else {
            dir.join(path)
        };
        if !resolved.exists() {
            broken.push(format!("{shown}:{line}: {target} (no such file)"));
            continue;
        }
        if let Some(anchor) = anchor {
            let is_markdown = resolved.extension().is_some_and(|e| e == "md");
            if !is_markdown || !anchors(&read(&resolved)).contains(anchor) {
                broken.push(format!("{shown}:{line}: {target} (no such heading)"));
            }
        }
    }
    broken
}

#[test]
fn readme_is_a_page_a_newcomer_finishes() {
    let lines = read(&root().join("README.md")).lines().count();
    assert!(
        lines < README_MAX_LINES,
        "README.md has {lines} lines, the limit is {README_MAX_LINES}: move detail into docs/guide/ \
         and link it"
    );
}

#[test]
fn readme_links_every_guide_page() {
    let readme = read(&root().join("README.md"));
    let linked: HashSet<String> = links(&readme)
        .into_iter()
        .map(|(_, target)| target.split('#').next().unwrap().to_string())
        .collect();
    let guide = markdown_in(&root().join("docs/guide"));
    assert!(!guide.is_empty(), "docs/guide/ has no page");
    let missing: Vec<String> = guide
        .iter()
        .map(|page| format!("docs/guide/{}", page.file_name().unwrap().to_string_lossy()))
        .filter(|page| !linked.contains(page))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md does not link these guide pages: {missing:?}"
    );
}

#[test]
fn relative_links_point_at_files_and_headings_that_exist() {
    let broken: Vec<String> = checked_files()
        .iter()
        .flat_map(|f| broken_links(f))
        .collect();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn slugs_follow_github() {
    assert_eq!(
        slug("Dead-letter topic (`--rejects-topic`)"),
        "dead-letter-topic---rejects-topic"
    );
    assert_eq!(
        slug("`cardinal count [OPTIONS] [FILE]...`"),
        "cardinal-count-options-file"
    );
    assert_eq!(
        slug("When is a window emitted?"),
        "when-is-a-window-emitted"
    );
    assert_eq!(
        slug("1. JSON against binary formats"),
        "1-json-against-binary-formats"
    );
    let twice = anchors("# A\n\n```\n# not a heading\n```\n## A\n");
    assert!(twice.contains("a") && twice.contains("a-1") && !twice.contains("not-a-heading"));
}
