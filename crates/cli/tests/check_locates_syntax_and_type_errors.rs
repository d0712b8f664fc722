//! What the TOML parser and serde find (syntax, unknown keys, wrong types, missing keys) and
//! the checks of one service file are located like the rules: code, file, line, key.

mod check_support;
use check_support::*;

const ORDERS: &str = "services/orders/service.toml";
const PAYMENTS: &str = "services/payments/service.toml";
const FRAUD: &str = "services/fraud/service.toml";
const NOTIFY: &str = "services/notify/service.toml";
const SYSTEM: &str = "switchyard.toml";

#[test]
fn an_unknown_key_is_named_with_what_was_expected() {
    let s = System::good();
    s.edit(
        ORDERS,
        "timeout = \"10s\"",
        "timeout = \"10s\"\ninterval = \"1s\"",
    );
    let line = s.line_of(ORDERS, "interval");
    let m = s
        .check()
        .only_error("unknown-key", ORDERS, Some(line), "health.interval");
    assert_eq!(m, "unknown key `interval`, expected `path` or `timeout`");
}

#[test]
fn an_unknown_key_in_a_topic_is_named() {
    let s = System::good();
    s.edit(SYSTEM, "partitions = 3", "partitons = 3");
    let line = s.line_of(SYSTEM, "partitons");
    let m = s.check().only_error(
        "unknown-key",
        SYSTEM,
        Some(line),
        "topics.\"orders.v1\".partitons",
    );
    assert!(m.starts_with("unknown key `partitons`"), "{m}");
}

#[test]
fn a_topic_setting_out_of_range_is_named() {
    let s = System::good();
    s.edit(SYSTEM, "partitions = 3", "partitions = 0");
    let line = s.line_of(SYSTEM, "partitions = 0");
    s.check().only_error(
        "invalid-value",
        SYSTEM,
        Some(line),
        "topics.\"orders.v1\".partitions",
    );
}

#[test]
fn a_toml_syntax_error_gives_line_and_column() {
    let s = System::good();
    s.edit(
        NOTIFY,
        "run = \"python3 notify.py\"",
        "run = \"python3 notify.py",
    );
    let c = s.check();
    let m = c.only_error("toml-syntax", NOTIFY, Some(2), "");
    assert!(m.starts_with("invalid TOML"), "{m}");
    assert!(c.lines[0].starts_with("error[toml-syntax]: services/notify/service.toml:2:"));
}

#[test]
fn a_value_of_the_wrong_type() {
    let s = System::good();
    s.edit(PAYMENTS, "port = 8102", "port = \"8102\"");
    let line = s.line_of(PAYMENTS, "port = \"8102\"");
    let m = s
        .check()
        .only_error("invalid-type", PAYMENTS, Some(line), "port");
    assert!(m.contains("expected u16"), "{m}");
}

#[test]
fn a_duration_that_does_not_parse() {
    let s = System::good();
    s.edit(ORDERS, "timeout = \"10s\"", "timeout = \"10 parsecs\"");
    let line = s.line_of(ORDERS, "parsecs");
    let m = s
        .check()
        .only_error("invalid-value", ORDERS, Some(line), "health.timeout");
    assert!(m.contains("invalid duration"), "{m}");
}

#[test]
fn a_missing_required_key() {
    let s = System::good();
    s.edit(PAYMENTS, "kind = \"sync\"\n", "");
    let line = s.line_of(PAYMENTS, "[dependencies.fraud]");
    let m = s.check().only_error(
        "missing-key",
        PAYMENTS,
        Some(line),
        "dependencies.fraud.kind",
    );
    assert_eq!(m, "missing key `kind`");
}

#[test]
fn the_name_must_be_the_folders() {
    let s = System::good();
    s.edit(FRAUD, "name = \"fraud\"", "name = \"fraud-check\"");
    let m = s
        .check()
        .only_error("name-mismatch", FRAUD, Some(1), "name");
    assert!(
        m.contains("\"fraud-check\"") && m.contains("\"fraud\""),
        "{m}"
    );
}

#[test]
fn env_may_not_override_what_the_runner_injects() {
    let s = System::good();
    s.edit(
        ORDERS,
        "LOG_LEVEL = \"info\"",
        "LOG_LEVEL = \"info\"\nDATABASE_URL = \"sqlite://orders.db\"",
    );
    let line = s.line_of(ORDERS, "DATABASE_URL");
    let m = s
        .check()
        .only_error("reserved-env-var", ORDERS, Some(line), "env.DATABASE_URL");
    assert!(m.contains("set by the dev runner"), "{m}");
}

#[test]
fn env_names_must_be_variable_names() {
    let s = System::good();
    s.edit(ORDERS, "LOG_LEVEL = \"info\"", "\"LOG-LEVEL\" = \"info\"");
    let line = s.line_of(ORDERS, "LOG-LEVEL");
    s.check()
        .only_error("invalid-env-name", ORDERS, Some(line), "env.LOG-LEVEL");
}
