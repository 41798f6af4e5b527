//! Glob semantics: Go's `path.Match` plus exactly-`*`-matches-everything, row by row from the
//! behaviour spec (§2.1), the crate survey tables and Go's own `path.Match` test table.

use mesh7_config::Glob;
use mesh7_config::glob::matches;
use proptest::prelude::*;

/// Checks the free function and the compiled glob against one expectation.
fn check(pattern: &str, name: &str, expected: bool) {
    assert_eq!(
        matches(pattern, name),
        expected,
        "matches({pattern:?}, {name:?})"
    );
    assert_eq!(
        Glob::new(pattern).matches(name),
        expected,
        "Glob::new({pattern:?}).matches({name:?})"
    );
}

#[test]
fn spec_rows_cross_dots_but_not_slashes() {
    let rows = [
        ("filesystem.read_*", "filesystem.read_file", true),
        ("filesystem.read_*", "filesystemXread_file", false),
        ("filesystem.*", "filesystem.read.deep", true),
        ("*.read_*", "filesystem.read_file", true),
        ("gmail-*.send_email", "gmail-perso.send_email", true),
        ("a*c", "a.b.c", true),
        ("*", "srv/tool", true),
        ("*", "", true),
        ("*", "a.b.c", true),
        ("team-a/*", "team-a/sub/agent-1", false),
        ("team-a/*", "team-a/agent-1", true),
        ("[fg]*.read", "github.read", true),
        ("{filesystem,github}.read_*", "github.read_pr", false),
        ("filesystem.read_\\*", "filesystem.read_*", true),
        ("filesystem.read_\\*", "filesystem.read_file", false),
        ("a[", "a[", false),
        ("?", "/", false),
        ("[^a-z]x", "1x", true),
        ("[!a-z]x", "1x", false),
        ("[!a-z]x", "!x", true),
        ("a\\*b", "a*b", true),
        ("{a,b}", "{a,b}", true),
        ("{a,b}", "a", false),
        ("a**", "abc", true),
        ("a/**/b", "a/b", false),
        ("[a-", "[a-", false),
        ("Agent-1", "agent-1", false),
        ("agent", "agent-1", false),
        ("agent-1", "agent", false),
        ("*.read_*", "a.b.read_c", true),
        ("*.read_*", "a.read.read_c", true),
        ("*.read_*", "a.reader", false),
        ("*\\*x", "ab*x", true),
        ("*?c", "abc", true),
        ("*[bc]d", "abcd", true),
        ("*[^a]", "a/", true),
    ];
    for (pattern, name, expected) in rows {
        check(pattern, name, expected);
    }
}

#[test]
fn go_path_match_table() {
    let rows = [
        ("abc", "abc", true),
        ("*", "abc", true),
        ("*c", "abc", true),
        ("a*", "a", true),
        ("a*", "abc", true),
        ("a*", "ab/c", false),
        ("a*/b", "abc/b", true),
        ("a*/b", "a/c/b", false),
        ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
        ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false),
        ("a*b?c*x", "abxbbxdbxebxczzx", true),
        ("a*b?c*x", "abxbbxdbxebxczzy", false),
        ("ab[c]", "abc", true),
        ("ab[b-d]", "abc", true),
        ("ab[e-g]", "abc", false),
        ("ab[^c]", "abc", false),
        ("ab[^b-d]", "abc", false),
        ("ab[^e-g]", "abc", true),
        ("a\\*b", "ab", false),
        ("a?b", "a☺b", true),
        ("a[^a]b", "a☺b", true),
        ("a???b", "a☺b", false),
        ("a[^a][^a][^a]b", "a☺b", false),
        ("[a-ζ]*", "α", true),
        ("*[a-ζ]", "A", false),
        ("a?b", "a/b", false),
        ("a*b", "a/b", false),
        ("[\\]a]", "]", true),
        ("[\\-]", "-", true),
        ("[x\\-]", "x", true),
        ("[x\\-]", "-", true),
        ("[x\\-]", "z", false),
        ("[\\-x]", "x", true),
        ("[\\-x]", "-", true),
        ("[\\-x]", "a", false),
        ("*x", "xxx", true),
        ("a?", "a", false),
        ("", "", true),
        ("", "a", false),
    ];
    for (pattern, name, expected) in rows {
        check(pattern, name, expected);
    }
}

#[test]
fn malformed_patterns_never_match_and_are_invalid() {
    // Go's ErrBadPattern rows; each name is one the pattern would match were it well formed.
    let rows = [
        ("[]a]", "]"),
        ("[-]", "-"),
        ("[x-]", "x"),
        ("[x-]", "-"),
        ("[-x]", "x"),
        ("\\", "\\"),
        ("a\\", "a"),
        ("[a-b-c]", "a"),
        ("[", "["),
        ("[^", "a"),
        ("[^bc", "a"),
        ("a[", "a"),
        ("a[", "ab"),
        ("a/b[", "a/b["),
        // A mismatch before the bad part must not hide it.
        ("x*[", "y"),
        ("ab[", "ab"),
    ];
    for (pattern, name) in rows {
        check(pattern, name, false);
        assert!(!Glob::new(pattern).is_valid(), "{pattern:?} is malformed");
    }
}

#[test]
fn well_formed_patterns_are_valid() {
    for pattern in [
        "*", "", "abc", "a*b?c", "[a-z]", "[^a]", "[!a]", "a\\*", "[\\]]", "{a,b}", "**",
    ] {
        assert!(Glob::new(pattern).is_valid(), "{pattern:?} is well formed");
    }
}

#[test]
fn specificity_ranks_exact_over_wildcards_over_star() {
    let rows = [
        ("support-bot", 2),
        ("[ab]-bot", 2),
        ("a\\.b", 2),
        ("", 2),
        ("support-*", 1),
        ("agent-?", 1),
        ("**", 1),
        ("*-bot", 1),
        ("*", 0),
    ];
    for (pattern, expected) in rows {
        assert_eq!(
            Glob::new(pattern).specificity(),
            expected,
            "specificity of {pattern:?}"
        );
    }
}

#[test]
fn glob_keeps_its_pattern_text() {
    let glob = Glob::new("server.*");
    assert_eq!(glob.as_str(), "server.*");
    assert_eq!(glob.to_string(), "server.*");
    let copy = glob.clone();
    assert!(copy.matches("server.read"));
    assert!(format!("{copy:?}").contains("server.*"));
}

/// An independent reading of Go's pattern syntax as an anchored regex, `None` when malformed.
fn go_pattern_as_regex(pattern: &str) -> Option<String> {
    fn class_char(chars: &[char], i: &mut usize) -> Option<char> {
        let mut c = *chars.get(*i)?;
        if c == '-' || c == ']' {
            return None;
        }
        if c == '\\' {
            *i += 1;
            c = *chars.get(*i)?;
        }
        *i += 1;
        // A class always needs at least its closing `]` after a member.
        chars.get(*i)?;
        Some(c)
    }
    if pattern == "*" {
        return Some("(?s)^.*$".to_owned());
    }
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::from("(?s)^");
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => out.push_str("[^/]*"),
            '?' => out.push_str("[^/]"),
            '\\' => {
                i += 1;
                out.push_str(&regex::escape(&chars.get(i)?.to_string()));
            }
            '[' => {
                i += 1;
                let negated = chars.get(i) == Some(&'^');
                if negated {
                    i += 1;
                }
                let mut members = String::new();
                let mut count = 0;
                loop {
                    if count > 0 && chars.get(i) == Some(&']') {
                        break;
                    }
                    let lo = class_char(&chars, &mut i)?;
                    let mut hi = lo;
                    if chars.get(i) == Some(&'-') {
                        i += 1;
                        hi = class_char(&chars, &mut i)?;
                    }
                    if lo <= hi {
                        let (lo, hi) = (u32::from(lo), u32::from(hi));
                        members.push_str(&format!("\\x{{{lo:x}}}-\\x{{{hi:x}}}"));
                    }
                    count += 1;
                }
                out.push_str(match (negated, members.is_empty()) {
                    (false, true) => "[^\\s\\S]",
                    (true, true) => ".",
                    _ => "",
                });
                if !members.is_empty() {
                    out.push_str(&format!("[{}{members}]", if negated { "^" } else { "" }));
                }
            }
            c => out.push_str(&regex::escape(&c.to_string())),
        }
        i += 1;
    }
    out.push('$');
    Some(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn glob_agrees_with_a_regex_reading_of_the_syntax(
        pattern in "[ab/*?\\[\\]^\\\\é-]{0,7}",
        name in "[ab/*?\\[\\]^\\\\é-]{0,6}",
    ) {
        let glob = Glob::new(&pattern);
        match go_pattern_as_regex(&pattern) {
            None => {
                prop_assert!(!glob.is_valid(), "{:?} is malformed", pattern);
                prop_assert!(!matches(&pattern, &name));
                prop_assert!(!glob.matches(&name));
            }
            Some(re) => {
                let expected = regex::Regex::new(&re)
                    .expect("translation is a valid regex")
                    .is_match(&name);
                let context = format!("{pattern:?} vs {name:?} ({re})");
                prop_assert!(glob.is_valid(), "{}", context);
                prop_assert_eq!(matches(&pattern, &name), expected, "{}", context);
                prop_assert_eq!(glob.matches(&name), expected, "{}", context);
            }
        }
    }
}
