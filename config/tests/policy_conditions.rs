//! Conditions: every operator against every JSON type, v2 nesting, field roots, missing and
//! `null` params, and every compile-time error with its path.

use mesh7_config::ConditionConfig;
use mesh7_config::condition::{Condition, ConditionError};
use serde_json::{Value, json};

fn config(condition: Value) -> ConditionConfig {
    serde_json::from_value(condition).expect("test condition has the schema's shape")
}

fn compile(condition: Value) -> Condition {
    Condition::compile(&config(condition)).expect("test condition compiles")
}

/// Whether `{field: "p", operator, value}` holds for `args = {"p": param}`.
fn check(operator: &str, value: Value, param: Value, expected: bool) {
    let label = format!("{param} {operator} {value}");
    let mut leaf = json!({"field": "p", "operator": operator});
    leaf["value"] = value;
    let mut args = json!({});
    args["p"] = param;
    assert_eq!(compile(leaf).holds(&args), expected, "{label}");
}

fn errors(condition: Value) -> Vec<(String, String)> {
    Condition::compile(&config(condition))
        .expect_err("condition should not compile")
        .into_iter()
        .map(|ConditionError { path, message }| (path, message))
        .collect()
}

#[test]
fn equality_compares_by_json_value_and_numbers_numerically() {
    let rows = [
        (json!(500), json!(500), true),
        (json!(500), json!(500.0), true),
        (json!(1), json!(1.0), true),
        (json!(500), json!(501), false),
        (json!(-3), json!(-3), true),
        (json!(u64::MAX), json!(u64::MAX), true),
        (
            json!(9_007_199_254_740_993_i64),
            json!(9_007_199_254_740_992_i64),
            false,
        ),
        (json!(500), json!("500"), true),
        (json!(500), json!("5e2"), true),
        (json!(500), json!("500.0"), true),
        (json!(500), json!(" 500"), false),
        (json!(500), json!("abc"), false),
        (json!("prod"), json!("prod"), true),
        (json!("prod"), json!("Prod"), false),
        (json!("500"), json!(500), false),
        (json!(true), json!(true), true),
        (json!(true), json!(false), false),
        (json!(true), json!("true"), false),
        (json!([1, "a"]), json!([1.0, "a"]), true),
        (json!([1, "a"]), json!(["a", 1]), false),
        (json!([1]), json!([1, 1]), false),
        (json!({"k": 1}), json!({"k": 1.0}), true),
        (json!({"k": 1}), json!({"k": 2}), false),
        (json!({"k": 1}), json!({"k": 1, "j": 2}), false),
        (json!(1), json!([1]), false),
    ];
    for (value, param, expected) in rows {
        check("==", value, param, expected);
    }
}

#[test]
fn inequality_is_false_on_a_type_mismatch() {
    let rows = [
        (json!(500), json!(501), true),
        (json!(500), json!(500.0), false),
        (json!(500), json!("501"), true),
        (json!(500), json!("500"), false),
        (json!(500), json!("abc"), false),
        (json!(500), json!(true), false),
        (json!("prod"), json!("dev"), true),
        (json!("prod"), json!("prod"), false),
        (json!("prod"), json!(1), false),
        (json!(true), json!(false), true),
        (json!(true), json!("false"), false),
        (json!([1, 2]), json!([1, 3]), true),
        (json!([1, 2]), json!([1, 2]), false),
        (json!([1, 2]), json!("[1, 2]"), false),
        (json!({"a": 1}), json!({"a": 2}), true),
    ];
    for (value, param, expected) in rows {
        check("!=", value, param, expected);
    }
}

#[test]
fn ordering_operators_compare_numbers_and_numeric_strings() {
    let rows = [
        ("<", 1000, json!(999), true),
        ("<", 1000, json!(1000), false),
        ("<", 1000, json!(1000.5), false),
        ("<", 1000, json!(-1), true),
        ("<=", 1000, json!(1000), true),
        ("<=", 1000, json!(1000.0), true),
        ("<=", 1000, json!(1001), false),
        (">", 1000, json!(1001), true),
        (">", 1000, json!(1000), false),
        (">", 1000, json!(1e6), true),
        (">=", 1000, json!(1000), true),
        (">=", 1000, json!(999.99), false),
        (">", 1000, json!("1500"), true),
        (">", 1000, json!("1e6"), true),
        ("<", 1000, json!("12.5"), true),
        (">", 1000, json!("abc"), false),
        ("<", 1000, json!("abc"), false),
        ("<", 1000, json!(""), false),
        ("<", 1000, json!(true), false),
        ("<", 1000, json!([1]), false),
        ("<", 1000, json!({"a": 1}), false),
        ("<", 1000, json!("NaN"), false),
        (">=", 1000, json!("NaN"), false),
        (">", 1000, json!("inf"), true),
    ];
    for (operator, value, param, expected) in rows {
        check(operator, json!(value), param, expected);
    }
    check("<", json!(0.5), json!(0.25), true);
    check(">", json!(-2.5), json!(-2), true);
    check(
        ">",
        json!(9_007_199_254_740_992_u64),
        json!(9_007_199_254_740_993_u64),
        true,
    );
}

#[test]
fn in_and_not_in_test_list_membership() {
    let list = json!(["prod", "staging", 42, true]);
    let rows = [
        ("in", json!("prod"), true),
        ("in", json!("dev"), false),
        ("in", json!(42), true),
        ("in", json!(42.0), true),
        ("in", json!("42"), true),
        ("in", json!(true), true),
        ("in", json!(false), false),
        ("in", json!(["prod"]), false),
        ("not_in", json!("prod"), false),
        ("not_in", json!(42), false),
    ];
    for (operator, param, expected) in rows {
        check(operator, list.clone(), param, expected);
    }
    let strings = json!(["prod", "staging"]);
    check("not_in", strings.clone(), json!("dev"), true);
    check("not_in", strings.clone(), json!("prod"), false);
    // A param of another type is a mismatch, never "not in": fail closed.
    check("not_in", strings.clone(), json!(5), false);
    check("not_in", strings, json!(["dev"]), false);
    check("in", json!([]), json!("x"), false);
    check("not_in", json!([]), json!("x"), true);
    check("in", json!([[1, 2]]), json!([1, 2]), true);
}

#[test]
fn contains_tests_substrings_and_list_membership() {
    let rows = [
        (json!("secret"), json!("top-secret-doc"), true),
        (json!("secret"), json!("public"), false),
        (json!("Secret"), json!("top-secret"), false),
        (json!("a"), json!(["a", "b"]), true),
        (json!("c"), json!(["a", "b"]), false),
        (json!(3), json!([1, 2, 3]), true),
        (json!(3), json!([1.0, 3.0]), true),
        (json!(3), json!(["3"]), true),
        (json!(4), json!([1, 2, 3]), false),
        (json!(true), json!([false, true]), true),
        (json!(true), json!([false]), false),
        (json!(3), json!("123"), false),
        (json!("1"), json!(123), false),
        (json!("a"), json!({"a": 1}), false),
        (json!("a"), json!(true), false),
    ];
    for (value, param, expected) in rows {
        check("contains", value, param, expected);
    }
}

#[test]
fn starts_with_and_ends_with_apply_to_strings_only() {
    let rows = [
        ("starts_with", "/etc/", json!("/etc/passwd"), true),
        ("starts_with", "/etc/", json!("/home/etc/"), false),
        ("starts_with", "", json!("anything"), true),
        ("starts_with", "1", json!(123), false),
        ("starts_with", "a", json!(["abc"]), false),
        ("ends_with", ".pem", json!("server.pem"), true),
        ("ends_with", ".pem", json!("server.pem.txt"), false),
        ("ends_with", "3", json!(123), false),
        ("ends_with", "e", json!(true), false),
    ];
    for (operator, value, param, expected) in rows {
        check(operator, json!(value), param, expected);
    }
}

#[test]
fn matches_searches_with_a_regex_compiled_at_load() {
    let rows = [
        ("^[a-z]+@corp\\.com$", json!("ann@corp.com"), true),
        ("^[a-z]+@corp\\.com$", json!("ann@corp.com.evil"), false),
        ("drop\\s+table", json!("please DROP TABLE x"), false),
        ("(?i)drop\\s+table", json!("please DROP TABLE x"), true),
        ("rm -rf", json!("sudo rm -rf /"), true),
        ("^1", json!(123), false),
        ("a", json!(["a"]), false),
        ("t", json!(true), false),
    ];
    for (value, param, expected) in rows {
        check("matches", json!(value), param, expected);
    }
}

#[test]
fn exists_holds_for_any_present_non_null_value() {
    let condition = compile(json!({"field": "p", "operator": "exists"}));
    for (args, expected) in [
        (json!({"p": 0}), true),
        (json!({"p": ""}), true),
        (json!({"p": false}), true),
        (json!({"p": []}), true),
        (json!({"p": {}}), true),
        (json!({"p": null}), false),
        (json!({"q": 1}), false),
        (json!({}), false),
        (json!(null), false),
        (json!([1]), false),
    ] {
        assert_eq!(condition.holds(&args), expected, "exists p in {args}");
    }
}

#[test]
fn missing_or_null_field_makes_every_operator_false() {
    let leaves = [
        json!({"field": "p", "operator": "==", "value": 1}),
        json!({"field": "p", "operator": "!=", "value": 1}),
        json!({"field": "p", "operator": "<", "value": 1}),
        json!({"field": "p", "operator": "<=", "value": 1}),
        json!({"field": "p", "operator": ">", "value": 1}),
        json!({"field": "p", "operator": ">=", "value": 1}),
        json!({"field": "p", "operator": "in", "value": [1]}),
        json!({"field": "p", "operator": "not_in", "value": [1]}),
        json!({"field": "p", "operator": "contains", "value": "x"}),
        json!({"field": "p", "operator": "starts_with", "value": "x"}),
        json!({"field": "p", "operator": "ends_with", "value": "x"}),
        json!({"field": "p", "operator": "matches", "value": ".*"}),
        json!({"field": "p", "operator": "exists"}),
    ];
    for leaf in leaves {
        let condition = compile(leaf.clone());
        for args in [json!({}), json!({"p": null}), json!({"q": 1}), json!(null)] {
            assert!(!condition.holds(&args), "{leaf} on {args}");
        }
    }
}

#[test]
fn field_resolves_under_params_and_on_the_arguments_themselves() {
    let rows = [
        ("params.amount", json!({"amount": 2000}), true),
        ("amount", json!({"amount": 2000}), true),
        ("params.amount", json!({"params": {"amount": 2000}}), true),
        ("params.amount", json!({"amount": 5}), false),
        ("amount", json!({"params": {"amount": 2000}}), false),
        (
            "params.order.total",
            json!({"order": {"total": 2000}}),
            true,
        ),
        ("order.total", json!({"order": {"total": 2000}}), true),
        ("order.total", json!({"order": {"sum": 2000}}), false),
        ("order.total", json!({"order": [{"total": 2000}]}), false),
        ("order.0", json!({"order": [2000]}), false),
        ("order.total", json!({"order": "total"}), false),
        // A root that yields null passes on to the next one.
        (
            "params.amount",
            json!({"amount": null, "params": {"amount": 2000}}),
            true,
        ),
        // The first root wins when both resolve.
        (
            "params.amount",
            json!({"amount": 1, "params": {"amount": 2000}}),
            false,
        ),
    ];
    for (field, args, expected) in rows {
        let condition = compile(json!({"field": field, "operator": ">", "value": 1000}));
        assert_eq!(condition.holds(&args), expected, "{field} > 1000 on {args}");
    }
    let whole = compile(json!({"field": "params", "operator": "exists"}));
    assert!(whole.holds(&json!({"x": 1})));
}

#[test]
fn all_any_and_not_nest_freely() {
    let condition = compile(json!({
        "any": [
            {"all": [
                {"field": "env", "operator": "==", "value": "prod"},
                {"not": {"field": "amount", "operator": "<", "value": 1000}},
            ]},
            {"not": {"any": [
                {"field": "user", "operator": "exists"},
                {"field": "path", "operator": "starts_with", "value": "/tmp/"},
            ]}},
        ]
    }));
    let rows = [
        (json!({"env": "prod", "amount": 5000, "user": "a"}), true),
        (json!({"env": "prod", "amount": 10, "user": "a"}), false),
        (json!({"env": "dev", "amount": 5000, "user": "a"}), false),
        (json!({"env": "dev"}), true),
        (json!({"env": "dev", "path": "/tmp/x"}), false),
        (json!({"env": "dev", "path": "/etc/x"}), true),
        // `not` of a false leaf on a missing field is true.
        (json!({"env": "prod", "user": "a"}), true),
    ];
    for (args, expected) in rows {
        assert_eq!(condition.holds(&args), expected, "on {args}");
    }
}

#[test]
fn deep_nesting_evaluates() {
    let mut node = json!({"field": "x", "operator": "==", "value": 1});
    for _ in 0..50 {
        node = json!({"all": [{"not": {"not": node}}]});
    }
    let condition = compile(node);
    assert!(condition.holds(&json!({"x": 1})));
    assert!(!condition.holds(&json!({"x": 2})));
}

#[test]
fn compile_errors_name_their_path() {
    let rows: Vec<(Value, Vec<(&str, &str)>)> = vec![
        (
            json!({}),
            vec![(
                "",
                "empty condition: expected field/operator/value, all, any or not",
            )],
        ),
        (
            json!({"field": "a", "operator": "==", "value": 1, "all": [{"field": "b", "operator": "exists"}]}),
            vec![(
                "",
                "a condition takes exactly one of field/operator/value, all, any or not",
            )],
        ),
        (
            json!({"any": [], "not": {"field": "a", "operator": "exists"}}),
            vec![(
                "",
                "a condition takes exactly one of field/operator/value, all, any or not",
            )],
        ),
        (
            json!({"all": []}),
            vec![("all", "needs at least one condition")],
        ),
        (
            json!({"any": []}),
            vec![("any", "needs at least one condition")],
        ),
        (
            json!({"operator": "==", "value": 1}),
            vec![("field", "field is required")],
        ),
        (
            json!({"field": "", "operator": "exists"}),
            vec![("field", "field must not be empty")],
        ),
        (
            json!({"field": "a..b", "operator": "exists"}),
            vec![("field", "field has an empty segment")],
        ),
        (
            json!({"field": "a", "value": 1}),
            vec![("operator", "operator is required")],
        ),
        (
            json!({"value": 1}),
            vec![
                ("field", "field is required"),
                ("operator", "operator is required"),
            ],
        ),
        (
            json!({"field": "a", "operator": "=="}),
            vec![("value", "== needs a value")],
        ),
        (
            json!({"field": "a", "operator": "in"}),
            vec![("value", "in needs a value")],
        ),
        (
            json!({"field": "a", "operator": "==", "value": null}),
            vec![("value", "== needs a value")],
        ),
        (
            json!({"field": "a", "operator": "exists", "value": true}),
            vec![("value", "exists takes no value")],
        ),
        (
            json!({"field": "a", "operator": "in", "value": "prod"}),
            vec![("value", "in needs a list value")],
        ),
        (
            json!({"field": "a", "operator": "not_in", "value": {"a": 1}}),
            vec![("value", "not_in needs a list value")],
        ),
        (
            json!({"field": "a", "operator": "<", "value": "100"}),
            vec![("value", "< needs a number value")],
        ),
        (
            json!({"field": "a", "operator": "<=", "value": true}),
            vec![("value", "<= needs a number value")],
        ),
        (
            json!({"field": "a", "operator": ">", "value": [1]}),
            vec![("value", "> needs a number value")],
        ),
        (
            json!({"field": "a", "operator": ">=", "value": "x"}),
            vec![("value", ">= needs a number value")],
        ),
        (
            json!({"field": "a", "operator": "contains", "value": ["x"]}),
            vec![("value", "contains needs a string, number or boolean value")],
        ),
        (
            json!({"field": "a", "operator": "starts_with", "value": 1}),
            vec![("value", "starts_with needs a string value")],
        ),
        (
            json!({"field": "a", "operator": "ends_with", "value": false}),
            vec![("value", "ends_with needs a string value")],
        ),
        (
            json!({"field": "a", "operator": "matches", "value": 1}),
            vec![("value", "matches needs a string value")],
        ),
        (
            json!({"all": [
                {"field": "a", "operator": "exists"},
                {"field": "b", "operator": "<", "value": "x"},
                {"not": {}},
                {"any": [{"field": "c", "operator": "in", "value": 3}]},
            ]}),
            vec![
                ("all[1].value", "< needs a number value"),
                (
                    "all[2].not",
                    "empty condition: expected field/operator/value, all, any or not",
                ),
                ("all[3].any[0].value", "in needs a list value"),
            ],
        ),
    ];
    for (condition, expected) in rows {
        let expected: Vec<(String, String)> = expected
            .into_iter()
            .map(|(p, m)| (p.to_owned(), m.to_owned()))
            .collect();
        assert_eq!(errors(condition.clone()), expected, "errors of {condition}");
    }
}

#[test]
fn a_bad_regex_is_a_compile_error_at_its_path() {
    let errs = errors(json!({"not": {"field": "a", "operator": "matches", "value": "(unclosed"}}));
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].0, "not.value");
    assert_eq!(
        errs[0].1,
        "invalid regular expression \"(unclosed\": unclosed group"
    );
    assert!(!errs[0].1.contains('\n'), "one line: {}", errs[0].1);
}

#[test]
fn every_operator_compiles_with_a_well_typed_value() {
    for (operator, value) in [
        ("==", json!("x")),
        ("!=", json!({"a": [1]})),
        ("<", json!(1)),
        ("<=", json!(1.5)),
        (">", json!(-1)),
        (">=", json!(0)),
        ("in", json!([])),
        ("not_in", json!(["a", 1])),
        ("contains", json!("x")),
        ("contains", json!(1)),
        ("contains", json!(false)),
        ("starts_with", json!("x")),
        ("ends_with", json!("x")),
        ("matches", json!("^x$")),
    ] {
        let leaf = json!({"field": "p", "operator": operator, "value": value});
        assert!(
            Condition::compile(&config(leaf.clone())).is_ok(),
            "{leaf} compiles"
        );
    }
}

#[test]
fn the_field_star_tests_every_scalar_value_of_the_arguments() {
    let secret =
        compile(json!({"field": "*", "operator": "matches", "value": "sk-live-[a-z0-9]+"}));
    let args = json!({
        "path": "/tmp/a",
        "options": {"headers": [{"name": "auth", "value": "Bearer sk-live-4f9a"}]},
    });
    assert!(secret.holds(&args));
    // Keys are not values; nothing else matches.
    assert!(!secret.holds(&json!({"sk-live-abc": "x", "n": 1, "b": true, "z": null})));
    assert!(!secret.holds(&json!({})));
    let rows = [
        (
            json!({"field": "*", "operator": "==", "value": 42}),
            json!({"a": [1, {"b": "42"}]}),
            true,
        ),
        (
            json!({"field": "*", "operator": ">", "value": 100}),
            json!({"a": [1, 99]}),
            false,
        ),
        (
            json!({"field": "*", "operator": ">", "value": 100}),
            json!({"a": {"b": [101]}}),
            true,
        ),
        (
            json!({"field": "*", "operator": "in", "value": ["rm", "dd"]}),
            json!({"args": ["ls", "rm"]}),
            true,
        ),
        (
            json!({"field": "*", "operator": "starts_with", "value": "/etc"}),
            json!({"p": "/etc/passwd"}),
            true,
        ),
        (
            json!({"field": "*", "operator": "exists"}),
            json!({"a": null}),
            false,
        ),
        (
            json!({"field": "*", "operator": "exists"}),
            json!({"a": false}),
            true,
        ),
        // Its opposite is written with not: no value of the arguments is a secret.
        (
            json!({"not": {"field": "*", "operator": "contains", "value": "secret"}}),
            json!({"a": ["x", "y"]}),
            true,
        ),
        (
            json!({"not": {"field": "*", "operator": "contains", "value": "secret"}}),
            json!({"a": ["my secret"]}),
            false,
        ),
    ];
    for (condition, args, expected) in rows {
        assert_eq!(
            compile(condition.clone()).holds(&args),
            expected,
            "{condition} on {args}"
        );
    }
    // Deeper than the JSON parser allows (128 levels).
    let mut deep = json!("sk-live-deep");
    for _ in 0..200 {
        deep = json!([deep]);
    }
    assert!(secret.holds(&deep));
    // "Some value differs" would hold for almost any call: refused at load.
    for op in ["!=", "not_in"] {
        let value = if op == "!=" { json!("x") } else { json!(["x"]) };
        let found = errors(json!({"field": "*", "operator": op, "value": value}));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "operator");
        assert!(
            found[0].1.contains("put the opposite test under not"),
            "{found:?}"
        );
    }
}
