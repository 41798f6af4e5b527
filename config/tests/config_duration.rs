//! Go duration syntax: parsing as `time.ParseDuration` does (minus negatives), printing as
//! `Duration.String()` truncated to seconds.

use std::time::Duration;

use mesh7_config::duration::{format_secs, parse};
use proptest::prelude::*;

#[test]
fn parses_go_durations() {
    let ms = Duration::from_millis;
    let s = Duration::from_secs;
    let cases: &[(&str, Duration)] = &[
        ("0", Duration::ZERO),
        ("-0", Duration::ZERO),
        ("0s", Duration::ZERO),
        ("1s", s(1)),
        ("+5s", s(5)),
        ("300ms", ms(300)),
        ("1.5s", ms(1_500)),
        (".5s", ms(500)),
        ("1.s", s(1)),
        ("1.5h", s(5_400)),
        ("1h30m", s(5_400)),
        ("2h45m", s(9_900)),
        ("1h0m0s", s(3_600)),
        ("4m30s", s(270)),
        ("1m1s1ms", ms(61_001)),
        ("10ns", Duration::from_nanos(10)),
        ("7us", Duration::from_micros(7)),
        ("7\u{b5}s", Duration::from_micros(7)),
        ("7\u{3bc}s", Duration::from_micros(7)),
        ("0.000000001s", Duration::from_nanos(1)),
        // Below a nanosecond is truncated, as Go does.
        ("1.0000000009s", s(1)),
        (
            "9223372036854775807ns",
            Duration::from_nanos(i64::MAX as u64),
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(parse(input).as_ref(), Ok(expected), "parse({input:?})");
    }
}

#[test]
fn rejects_what_go_rejects_and_negatives() {
    let cases: &[(&str, &str)] = &[
        ("", r#"invalid duration """#),
        ("s", r#"invalid duration "s""#),
        (".s", r#"invalid duration ".s""#),
        ("-", r#"invalid duration "-""#),
        ("1", r#"missing unit in duration "1""#),
        ("1h30", r#"missing unit in duration "1h30""#),
        ("1d", r#"unknown unit "d" in duration "1d""#),
        ("1s ", r#"unknown unit "s " in duration "1s ""#),
        ("10 s", r#"unknown unit " s" in duration "10 s""#),
        ("-1s", r#"negative duration "-1s" is not allowed"#),
        ("-1.5h", r#"negative duration "-1.5h" is not allowed"#),
        (
            "9223372036854775808ns",
            r#"invalid duration "9223372036854775808ns""#,
        ),
        ("3000000h", r#"invalid duration "3000000h""#),
        (
            "99999999999999999999s",
            r#"invalid duration "99999999999999999999s""#,
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(
            parse(input),
            Err((*expected).to_owned()),
            "parse({input:?})"
        );
    }
}

#[test]
fn formats_whole_seconds_like_go() {
    let cases: &[(Duration, &str)] = &[
        (Duration::ZERO, "0s"),
        (Duration::from_millis(999), "0s"),
        (Duration::from_millis(1_900), "1s"),
        (Duration::from_secs(45), "45s"),
        (Duration::from_secs(60), "1m0s"),
        (Duration::from_secs(270), "4m30s"),
        (Duration::from_secs(3_600), "1h0m0s"),
        (Duration::from_secs(5_400), "1h30m0s"),
        (Duration::from_secs(90_061), "25h1m1s"),
    ];
    for (input, expected) in cases {
        assert_eq!(format_secs(*input), *expected, "format_secs({input:?})");
    }
}

// Up to the largest whole second Go can hold (i64 nanoseconds).
proptest! {
    #[test]
    fn formatted_seconds_parse_back(secs in 0u64..=9_223_372_036) {
        let d = Duration::from_secs(secs);
        prop_assert_eq!(parse(&format_secs(d)), Ok(d));
    }
}
