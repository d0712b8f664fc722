//! `switchyard check` passes a good system (exit 0), lets warnings through, defaults DIR to
//! the current directory, and exits 2 when DIR cannot be read.

mod check_support;
use check_support::*;
use std::process::Command;

#[test]
fn the_good_system_passes_with_no_diagnostic() {
    let c = check_dir(std::path::Path::new(GOOD));
    assert_eq!(c.code, 0, "{}", c.lines.join("\n"));
    assert_eq!(c.json["ok"], true);
    assert_eq!(c.json["errors"], 0);
    assert_eq!(c.json["warnings"], 0);
    assert_eq!(c.diagnostics().len(), 0);
    let summary = c.summary();
    assert!(summary.starts_with("ok: "), "{summary}");
    assert!(
        summary.ends_with("4 services, 4 topics, 6 subscriptions; 0 errors, 0 warnings"),
        "{summary}"
    );
}

#[test]
fn dir_defaults_to_the_current_directory() {
    let out = Command::new(BIN)
        .arg("check")
        .current_dir(GOOD)
        .output()
        .expect("run check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.starts_with("ok: .: 4 services"), "{stdout}");
}

#[test]
fn warnings_are_reported_but_do_not_fail() {
    let s = System::good();
    s.edit(
        "switchyard.toml",
        "[subscriptions.audit]",
        "[topics.\"reviews.v1\"]\nevent-types = { \"review.posted\" = {} }\n\n[subscriptions.audit]",
    );
    s.edit(
        "services/payments/service.toml",
        "[[subscribes]]",
        "[[publishes]]\ntopic = \"reviews.v1\"\ntypes = [\"review.posted\"]\n\n[[subscribes]]",
    );
    let c = s.check();
    assert_eq!(c.code, 0, "{}", c.lines.join("\n"));
    assert_eq!(c.json["ok"], true);
    assert_eq!(c.json["warnings"], 2);
    let topic_line = s.line_of("switchyard.toml", "[topics.\"reviews.v1\"]");
    let type_line = s.line_of(
        "services/payments/service.toml",
        "types = [\"review.posted\"]",
    );
    assert_eq!(
        c.lines[..2],
        [
            format!(
                "warning[unconsumed-type]: services/payments/service.toml:{type_line}:10: \
                 publishes[1].types[0]: nothing consumes event type \"review.posted\" on topic \
                 \"reviews.v1\": no subscription takes it"
            ),
            format!(
                "warning[unused-topic]: switchyard.toml:{topic_line}:9: topics.\"reviews.v1\": \
                 nobody subscribes to topic \"reviews.v1\""
            ),
        ]
    );
    assert!(
        c.summary().ends_with("0 errors, 2 warnings"),
        "{}",
        c.summary()
    );
}

#[test]
fn an_unreadable_dir_exits_2_and_names_it() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let missing = tmp.path().join("no-such-system");
    let out = Command::new(BIN)
        .args(["check", missing.to_str().expect("utf-8"), "--json"])
        .output()
        .expect("run check");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: cannot read the system directory")
            && stderr.contains("no-such-system"),
        "{stderr}"
    );
}

#[test]
fn help_documents_the_argument_and_every_flag() {
    let out = Command::new(BIN)
        .args(["check", "--help"])
        .output()
        .expect("run check --help");
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "[DIR]",
        "[default: .]",
        "--json",
        "Exit 1",
        "Exit 2",
        "switchyard check ./shop",
    ] {
        assert!(help.contains(needle), "{needle:?} in\n{help}");
    }
}

/// The demo system the README runs passes `check` as it is.
#[test]
fn the_shop_demo_passes() {
    let shop = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shop");
    let c = check_dir(&shop);
    assert_eq!(c.code, 0, "{}", c.lines.join("\n"));
    assert_eq!(c.json["errors"], 0, "{}", c.lines.join("\n"));
}
