//! Name globs with flux7 semantics: a direct port of Go's `path.Match`, plus one shortcut —
//! a pattern that is exactly `*` matches everything, `/` and the empty name included.
//!
//! Used for policy agents and rule tools, grant agents and tools, the `?tool=` filter and
//! `supervisor_agents`. The syntax:
//! - `*` matches any run of characters except `/`. It crosses dots: `*.read_*` matches
//!   `filesystem.read_file`, and `*` inside a pattern matches `a.b.c`.
//! - `?` matches one character except `/`.
//! - `[abc]`, `[a-z]` and `[^a-z]` are classes; `!` is an ordinary character (`[!a]` matches
//!   `!` or `a`), as in Go.
//! - `\` escapes the next character, inside classes too.
//! - No `**`, no braces. Matching is anchored and case-sensitive.
//! - A malformed pattern (an unclosed `[`, a trailing `\`, `[a-]`, ...) never matches; it is not
//!   a configuration error, as in flux7.
//!
//! Like Go, the matcher works on bytes, decoding UTF-8 only where a class or `?` consumes a
//! character, and it never allocates.

/// Go's `ErrBadPattern`: the pattern is malformed.
#[derive(Debug)]
struct BadPattern;

/// What Go's `utf8.DecodeRune` yields for an invalid sequence.
const RUNE_ERROR: char = '\u{FFFD}';

/// Whether `name` matches `pattern`. A malformed pattern matches nothing.
pub fn matches(pattern: &str, name: &str) -> bool {
    pattern == "*"
        || matches!(
            path_match(pattern.as_bytes(), name.as_bytes(), false),
            Ok(true)
        )
}

/// A pattern checked once, so that matching skips the work a literal or `*` does not need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Exactly `*`.
    Everything,
    /// No `*`, `?`, `[` or `\`: matching is string equality.
    Literal,
    /// A well-formed pattern with metacharacters.
    Pattern,
    /// Never matches.
    Malformed,
}

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        let kind = if pattern == "*" {
            Kind::Everything
        } else if !pattern.bytes().any(is_meta) {
            Kind::Literal
        } else if is_well_formed(pattern.as_bytes()) {
            Kind::Pattern
        } else {
            Kind::Malformed
        };
        Glob {
            pattern: pattern.to_owned(),
            kind,
        }
    }

    pub fn matches(&self, name: &str) -> bool {
        match self.kind {
            Kind::Everything => true,
            Kind::Literal => self.pattern == name,
            Kind::Pattern => matches!(
                path_match(self.pattern.as_bytes(), name.as_bytes(), true),
                Ok(true)
            ),
            Kind::Malformed => false,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// False for a malformed pattern, which never matches.
    pub fn is_valid(&self) -> bool {
        self.kind != Kind::Malformed
    }

    /// Whether the pattern has no metacharacter at all, so it matches only itself.
    pub fn is_literal(&self) -> bool {
        self.kind == Kind::Literal
    }

    /// The specificity used to order policies by their agent pattern, as flux7 computes it:
    /// 2 = no `*`/`?` (exact; classes count as exact), 1 = has `*` or `?`, 0 = exactly `*`.
    pub fn specificity(&self) -> u8 {
        if self.kind == Kind::Everything {
            0
        } else if self.pattern.contains(['*', '?']) {
            1
        } else {
            2
        }
    }

    /// The text before the first metacharacter: every name this pattern matches starts with it
    /// (empty for exactly `*`).
    pub(crate) fn literal_prefix(&self) -> &str {
        match self.kind {
            Kind::Everything => "",
            Kind::Literal | Kind::Pattern | Kind::Malformed => {
                let end = self
                    .pattern
                    .bytes()
                    .position(is_meta)
                    .unwrap_or(self.pattern.len());
                // Metacharacters are ASCII, so `end` is a char boundary.
                &self.pattern[..end]
            }
        }
    }

    /// Literal text every matching name ends with: what follows the last metacharacter or `]`
    /// (a `]` may close a class, whose members are not literal). Empty for exactly `*`.
    pub(crate) fn literal_suffix(&self) -> &str {
        match self.kind {
            Kind::Everything => "",
            Kind::Literal => &self.pattern,
            Kind::Pattern | Kind::Malformed => {
                let start = self
                    .pattern
                    .bytes()
                    .rposition(|b| is_meta(b) || b == b']')
                    .map_or(0, |i| i + 1);
                &self.pattern[start..]
            }
        }
    }
}

impl std::fmt::Display for Glob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.pattern)
    }
}

fn is_meta(b: u8) -> bool {
    matches!(b, b'*' | b'?' | b'[' | b'\\')
}

/// Runs every chunk against the empty name, which makes Go's matcher parse all of it.
fn is_well_formed(mut pattern: &[u8]) -> bool {
    while !pattern.is_empty() {
        let (_, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if match_chunk(chunk, b"", false).is_err() {
            return false;
        }
    }
    true
}

/// Go's `path.Match`. With `well_formed` (known at construction) a mismatch returns at once,
/// skipping the parse of the rest that only serves to report a malformed pattern.
fn path_match(mut pattern: &[u8], mut name: &[u8], well_formed: bool) -> Result<bool, BadPattern> {
    'pattern: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            // A trailing `*` matches the rest of the name unless it has a `/`.
            return Ok(!name.contains(&b'/'));
        }
        // Look for a match at the current position; the last chunk must use up the name.
        if let Some(t) = match_chunk(chunk, name, well_formed)?
            && (t.is_empty() || !pattern.is_empty())
        {
            name = t;
            continue;
        }
        if star {
            // Look for a match skipping i+1 bytes; `*` cannot skip a `/`.
            // The chunk parsed above, so it is well formed; a plain first byte lets positions
            // that cannot match be skipped without a call.
            let first = chunk.first().filter(|b| !matches!(b, b'[' | b'?' | b'\\'));
            let mut i = 0;
            while i < name.len() && name[i] != b'/' {
                if first.is_some_and(|f| name.get(i + 1) != Some(f)) {
                    i += 1;
                    continue;
                }
                if let Some(t) = match_chunk(chunk, &name[i + 1..], well_formed)? {
                    if pattern.is_empty() && !t.is_empty() {
                        i += 1;
                        continue;
                    }
                    name = t;
                    continue 'pattern;
                }
                i += 1;
            }
        }
        // Before answering no, make sure the rest of the pattern is well formed.
        return if well_formed || is_well_formed(pattern) {
            Ok(false)
        } else {
            Err(BadPattern)
        };
    }
    Ok(name.is_empty())
}

/// Splits off a leading run of `*` and the chunk up to the next unbracketed `*`.
fn scan_chunk(mut pattern: &[u8]) -> (bool, &[u8], &[u8]) {
    let mut star = false;
    while let Some((b'*', rest)) = pattern.split_first() {
        pattern = rest;
        star = true;
    }
    let mut in_range = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            // A trailing `\` is reported by `match_chunk`.
            b'\\' if i + 1 < pattern.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (star, &pattern[..i], &pattern[i..])
}

/// Matches `chunk` at the start of `s`: `Some(rest of s)` on a match. After a mismatch it keeps
/// parsing the chunk, so a malformed chunk is an error whatever the name — unless the pattern
/// is already known to be `well_formed`.
fn match_chunk<'s>(
    mut chunk: &[u8],
    mut s: &'s [u8],
    well_formed: bool,
) -> Result<Option<&'s [u8]>, BadPattern> {
    let mut failed = false;
    while let Some((&c, after)) = chunk.split_first() {
        if !failed && s.is_empty() {
            failed = true;
        }
        if failed && well_formed {
            return Ok(None);
        }
        match c {
            b'[' => {
                let mut r = '\0';
                if !failed {
                    let (rune, n) = decode_rune(s);
                    r = rune;
                    s = &s[n..];
                }
                chunk = after;
                let negated = chunk.first() == Some(&b'^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut ranges = 0;
                loop {
                    if ranges > 0
                        && let Some((b']', rest)) = chunk.split_first()
                    {
                        chunk = rest;
                        break;
                    }
                    let (lo, rest) = get_esc(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if let Some((b'-', rest)) = chunk.split_first() {
                        let (h, rest) = get_esc(rest)?;
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    ranges += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            b'?' => {
                if !failed {
                    if s.first() == Some(&b'/') {
                        failed = true;
                    }
                    let (_, n) = decode_rune(s);
                    s = &s[n..];
                }
                chunk = after;
            }
            _ => {
                let literal = if c == b'\\' {
                    chunk = after;
                    *chunk.first().ok_or(BadPattern)?
                } else {
                    c
                };
                if !failed {
                    if s.first() != Some(&literal) {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    Ok(if failed { None } else { Some(s) })
}

/// One possibly escaped character of a class, and the rest of the chunk (never empty: a class
/// still needs its `]`).
fn get_esc(chunk: &[u8]) -> Result<(char, &[u8]), BadPattern> {
    let chunk = match chunk.split_first() {
        None | Some((b'-' | b']', _)) => return Err(BadPattern),
        Some((b'\\', [])) => return Err(BadPattern),
        Some((b'\\', rest)) => rest,
        Some(_) => chunk,
    };
    let (r, n) = decode_rune(chunk);
    if r == RUNE_ERROR && n == 1 {
        return Err(BadPattern);
    }
    let rest = &chunk[n..];
    if rest.is_empty() {
        return Err(BadPattern);
    }
    Ok((r, rest))
}

/// Go's `utf8.DecodeRune` for a non-empty slice: an invalid sequence is `(U+FFFD, 1)`.
fn decode_rune(s: &[u8]) -> (char, usize) {
    let len = match s.first() {
        Some(0x00..=0x7f) => 1,
        Some(0xc0..=0xdf) => 2,
        Some(0xe0..=0xef) => 3,
        Some(0xf0..=0xf7) => 4,
        _ => return (RUNE_ERROR, 1),
    };
    if let Some(bytes) = s.get(..len)
        && let Ok(text) = std::str::from_utf8(bytes)
        && let Some(c) = text.chars().next()
    {
        (c, len)
    } else {
        (RUNE_ERROR, 1)
    }
}
