//! The chained trace file (`trace.hmac_key`): every JSONL line ends with `"prev"`, the MAC of
//! the line before it (empty for the very first), and `"mac"`, the HMAC-SHA256 under the key of
//! the line up to and including `"prev"` (closed with `}`). Editing a line breaks its MAC;
//! removing, inserting or reordering lines breaks the next line's `"prev"`. Without the key
//! nobody can write a line that verifies.
//!
//! The MAC covers the bytes as written, so checking a line never re-serializes anything.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use aws_lc_rs::hmac;

/// `,"mac":"` + 64 hex digits + `"}`.
const MAC_SUFFIX: usize = 8 + 64 + 2;
/// How much of a file's end is read to find its last sealed line.
const TAIL_BYTES: u64 = 2 << 20;

/// Seals lines as they are written.
pub(crate) struct Sealer {
    key: hmac::Key,
    /// The MAC of the last line sealed (or found at start-up).
    last: String,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").finish_non_exhaustive()
    }
}

impl Sealer {
    /// Continues the chain of `path`: after its last sealed line, else after the last sealed
    /// line of `older` (the rotated file), else from the start.
    pub(crate) fn resume(secret: &str, path: &Path, older: &Path) -> io::Result<Sealer> {
        let last = match last_mac(path)? {
            Some(mac) => mac,
            None => last_mac(older)?.unwrap_or_default(),
        };
        Ok(Sealer {
            key: key(secret),
            last,
        })
    }

    /// Seals `line`, one JSON object without its newline, in place.
    pub(crate) fn seal(&mut self, line: &mut Vec<u8>) {
        debug_assert_eq!(line.last(), Some(&b'}'));
        line.pop();
        if line.len() > 1 {
            line.push(b',');
        }
        line.extend_from_slice(b"\"prev\":\"");
        line.extend_from_slice(self.last.as_bytes());
        line.extend_from_slice(b"\"}");
        let mac = hex::encode(hmac::sign(&self.key, line).as_ref());
        line.pop();
        line.extend_from_slice(b",\"mac\":\"");
        line.extend_from_slice(mac.as_bytes());
        line.extend_from_slice(b"\"}");
        self.last = mac;
    }
}

fn key(secret: &str) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes())
}

/// A sealed line split into what its MAC covers (without the closing `}`) and the MAC.
fn split(line: &[u8]) -> Option<(&[u8], &str)> {
    let cut = line.len().checked_sub(MAC_SUFFIX)?;
    let (body, suffix) = line.split_at(cut);
    let mac = suffix.strip_prefix(b",\"mac\":\"")?.strip_suffix(b"\"}")?;
    let mac = std::str::from_utf8(mac).ok()?;
    mac.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        .then_some((body, mac))
}

/// The MAC of the last sealed line of `path` (None: no file, or no sealed line in its tail).
fn last_mac(path: &Path) -> io::Result<Option<String>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    Ok(tail
        .split(|&b| b == b'\n')
        .rev()
        .find_map(|line| split(line.trim_ascii()).map(|(_, mac)| mac.to_owned())))
}

/// Checks the lines of one or more files, in order.
pub struct ChainCheck {
    key: hmac::Key,
    /// The MAC of the last line seen; `None` before the first.
    last: Option<String>,
    /// Lines whose MAC matched.
    pub verified: usize,
    /// `(file, line number, what is wrong)`, in order.
    pub problems: Vec<(String, usize, String)>,
    /// The first line continues a chain whose earlier lines were not given (an older file).
    pub starts_mid_chain: bool,
}

impl ChainCheck {
    pub fn new(secret: &str) -> ChainCheck {
        ChainCheck {
            key: key(secret),
            last: None,
            verified: 0,
            problems: Vec::new(),
            starts_mid_chain: false,
        }
    }

    /// Line `number` of `file` was too long to be read: a problem, and the chain goes on from
    /// the line before it.
    pub fn too_long(&mut self, file: &str, number: usize) {
        self.problems.push((
            file.to_owned(),
            number,
            "too long to be a trace line".to_owned(),
        ));
    }

    /// Checks line `number` (from 1) of `file`. Empty lines are ignored.
    pub fn line(&mut self, file: &str, number: usize, line: &[u8]) {
        let line = line.trim_ascii();
        if line.is_empty() {
            return;
        }
        let mut found: Vec<&str> = Vec::new();
        let Some((body, mac)) = split(line) else {
            self.problems.push((
                file.to_owned(),
                number,
                "not a sealed line (no MAC)".to_owned(),
            ));
            return;
        };
        let mut signed = body.to_vec();
        signed.push(b'}');
        let expected = hex::decode(mac).unwrap_or_default();
        if hmac::verify(&self.key, &signed, &expected).is_err() {
            found.push("altered: its MAC does not match its content (or another key sealed it)");
        } else {
            self.verified += 1;
        }
        let prev = serde_json::from_slice::<serde_json::Value>(&signed)
            .ok()
            .and_then(|v| v.get("prev").and_then(|p| p.as_str()).map(str::to_owned));
        match (&self.last, prev) {
            (_, None) => found.push("no \"prev\" field"),
            (None, Some(prev)) => self.starts_mid_chain = !prev.is_empty(),
            (Some(last), Some(prev)) if *last != prev => found.push(
                "out of chain: the line before it is not the one it was sealed after \
                 (a line removed, inserted or moved)",
            ),
            (Some(_), Some(_)) => {}
        }
        self.problems.extend(
            found
                .into_iter()
                .map(|what| (file.to_owned(), number, what.to_owned())),
        );
        self.last = Some(mac.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "correct horse battery staple";

    fn sealed(lines: &[&str]) -> Vec<Vec<u8>> {
        let mut sealer = Sealer {
            key: key(SECRET),
            last: String::new(),
        };
        lines
            .iter()
            .map(|l| {
                let mut line = l.as_bytes().to_vec();
                sealer.seal(&mut line);
                line
            })
            .collect()
    }

    fn check(lines: &[Vec<u8>], secret: &str) -> ChainCheck {
        let mut check = ChainCheck::new(secret);
        for (i, line) in lines.iter().enumerate() {
            check.line("t.jsonl", i + 1, line);
        }
        check
    }

    fn problems(check: &ChainCheck) -> Vec<(usize, &str)> {
        check
            .problems
            .iter()
            .map(|(_, n, what)| (*n, what.split(':').next().unwrap_or_default()))
            .collect()
    }

    const LINES: [&str; 4] = [
        r#"{"trace_id":"a","policy":"allow"}"#,
        r#"{"trace_id":"b","policy":"deny"}"#,
        r#"{"trace_id":"c","policy":"allow"}"#,
        r#"{"trace_id":"d","policy":"human_approval"}"#,
    ];

    #[test]
    fn sealed_lines_stay_json_and_verify() {
        let lines = sealed(&LINES);
        for line in &lines {
            let v: serde_json::Value = serde_json::from_slice(line).expect("JSON");
            assert_eq!(v["mac"].as_str().map(str::len), Some(64), "{v}");
        }
        let first: serde_json::Value = serde_json::from_slice(&lines[0]).expect("JSON");
        assert_eq!(first["prev"], "");
        let check = check(&lines, SECRET);
        assert_eq!(check.verified, 4);
        assert!(check.problems.is_empty(), "{:?}", check.problems);
        assert!(!check.starts_mid_chain);
    }

    #[test]
    fn edits_removals_reordering_and_other_keys_show() {
        let lines = sealed(&LINES);

        let mut edited = lines.clone();
        edited[1] = String::from_utf8(edited[1].clone())
            .expect("utf-8")
            .replace("deny", "allow")
            .into_bytes();
        assert_eq!(problems(&check(&edited, SECRET)), [(2, "altered")]);

        let mut removed = lines.clone();
        removed.remove(1);
        assert_eq!(problems(&check(&removed, SECRET)), [(2, "out of chain")]);

        let mut swapped = lines.clone();
        swapped.swap(1, 2);
        // Each of the three lines after the first follows another line than when sealed.
        assert_eq!(
            problems(&check(&swapped, SECRET)),
            [
                (2, "out of chain"),
                (3, "out of chain"),
                (4, "out of chain")
            ]
        );

        let mut unsealed = lines.clone();
        unsealed.insert(2, br#"{"trace_id":"x","policy":"allow"}"#.to_vec());
        assert_eq!(
            problems(&check(&unsealed, SECRET)),
            [(3, "not a sealed line (no MAC)")]
        );

        let other = check(&lines, "another secret of some length");
        assert_eq!(other.verified, 0);
        assert_eq!(other.problems.len(), 4);

        // The file that begins after an older one was dropped: intact, but said so.
        let tail = check(&lines[2..], SECRET);
        assert!(tail.problems.is_empty() && tail.starts_mid_chain);
    }

    #[test]
    fn the_chain_resumes_after_the_last_sealed_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (path, older) = (dir.path().join("t.jsonl"), dir.path().join("t.jsonl.old"));
        let lines = sealed(&LINES);
        let last = |line: &[u8]| split(line).expect("sealed").1.to_owned();

        // Nothing yet: from the start.
        assert_eq!(
            Sealer::resume(SECRET, &path, &older).expect("resume").last,
            ""
        );
        // Only the rotated file: after its last line.
        std::fs::write(&older, [lines[0].clone(), b"\n".to_vec()].concat()).expect("write");
        assert_eq!(
            Sealer::resume(SECRET, &path, &older).expect("resume").last,
            last(&lines[0])
        );
        // The current file wins, a torn last line skipped.
        let text = [
            lines[1].clone(),
            b"\n".to_vec(),
            b"{\"trace_id\":\"torn".to_vec(),
        ]
        .concat();
        std::fs::write(&path, text).expect("write");
        assert_eq!(
            Sealer::resume(SECRET, &path, &older).expect("resume").last,
            last(&lines[1])
        );
    }
}
