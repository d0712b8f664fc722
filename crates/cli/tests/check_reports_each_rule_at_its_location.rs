//! Each rule of `switchyard check`, broken once in a copy of the good system: exit 1, and
//! the one error names its code, file, line and key, in the human output and in `--json`.

mod check_support;
use check_support::*;

const ORDERS: &str = "services/orders/service.toml";
const PAYMENTS: &str = "services/payments/service.toml";
const FRAUD: &str = "services/fraud/service.toml";
const NOTIFY: &str = "services/notify/service.toml";
const SYSTEM: &str = "switchyard.toml";

#[test]
fn a_subscribed_topic_needs_a_producer() {
    let s = System::good();
    s.edit(
        SYSTEM,
        "external-producers = true",
        "external-producers = false",
    );
    let line = s.line_of(NOTIFY, "topic = \"signups.v1\"");
    let m = s
        .check()
        .only_error("no-producer", NOTIFY, Some(line), "subscribes[2].topic");
    assert_eq!(
        m,
        "topic \"signups.v1\" has no producer (no service publishes to it and it is not \
         marked external-producers)"
    );
}

#[test]
fn a_published_type_must_be_declared() {
    let s = System::good();
    s.edit(
        ORDERS,
        "\"order.cancelled\"]",
        "\"order.cancelled\", \"order.refunded\"]",
    );
    let line = s.line_of(ORDERS, "order.refunded");
    let m = s.check().only_error(
        "undeclared-published-type",
        ORDERS,
        Some(line),
        "publishes[0].types[2]",
    );
    assert!(
        m.contains("\"order.refunded\"") && m.contains("\"orders.v1\""),
        "{m}"
    );
}

#[test]
fn a_subscribed_type_must_be_declared() {
    let s = System::good();
    s.edit(
        NOTIFY,
        "types = [\"payment.failed\"]",
        "types = [\"payment.refunded\"]",
    );
    let line = s.line_of(NOTIFY, "payment.refunded");
    let m = s.check().only_error(
        "undeclared-subscribed-type",
        NOTIFY,
        Some(line),
        "subscribes[1].types[0]",
    );
    assert!(m.contains("\"payment.refunded\""), "{m}");
}

#[test]
fn a_topic_must_be_declared() {
    let s = System::good();
    s.edit(PAYMENTS, "topic = \"orders.v1\"", "topic = \"order.v1\"");
    let line = s.line_of(PAYMENTS, "topic = \"order.v1\"");
    let m = s
        .check()
        .only_error("unknown-topic", PAYMENTS, Some(line), "subscribes[0].topic");
    assert_eq!(
        m,
        "topic \"order.v1\" is not declared in switchyard.toml [topics]"
    );
}

#[test]
fn every_dependency_declares_on_failure() {
    let s = System::good();
    s.edit(
        NOTIFY,
        "on-failure = { policy = \"degrade\", header = \"X-Orders-Degraded\" }\n",
        "",
    );
    let line = s.line_of(NOTIFY, "[dependencies.orders]");
    let m = s.check().only_error(
        "missing-on-failure",
        NOTIFY,
        Some(line),
        "dependencies.orders.on-failure",
    );
    assert!(m.contains("fail, retry, fallback, queue, degrade"), "{m}");
}

#[test]
fn a_dependency_on_an_unknown_service() {
    let s = System::good();
    s.edit(NOTIFY, "[dependencies.orders]", "[dependencies.order]");
    let line = s.line_of(NOTIFY, "[dependencies.order]");
    let m = s.check().only_error(
        "unknown-dependency",
        NOTIFY,
        Some(line),
        "dependencies.order",
    );
    assert!(m.contains("no folder services/order"), "{m}");
}

#[test]
fn a_cycle_of_sync_dependencies_is_named_whole() {
    let s = System::good();
    s.write(
        FRAUD,
        "name = \"fraud\"\nrun = \"sh -c 'exec python3 -m http.server \\\"$PORT\\\"'\"\n\n\
         [dependencies.orders]\nkind = \"sync\"\non-failure = \"fail\"\n",
    );
    let m = s
        .check()
        .only_error("sync-cycle", FRAUD, Some(4), "dependencies.orders");
    assert!(m.contains("fraud -> orders -> payments -> fraud"), "{m}");
    assert!(m.contains("distributed monolith"), "{m}");
}

#[test]
fn ports_are_unique() {
    let s = System::good();
    s.edit(PAYMENTS, "port = 8102", "port = 8101");
    let line = s.line_of(PAYMENTS, "port = 8101");
    let m = s
        .check()
        .only_error("duplicate-port", PAYMENTS, Some(line), "port");
    assert!(m.contains("\"orders\""), "{m}");
}

#[test]
fn a_port_is_not_the_platforms_listen_port() {
    let s = System::good();
    s.edit(ORDERS, "port = 8101", "port = 7400");
    let line = s.line_of(ORDERS, "port = 7400");
    let m = s
        .check()
        .only_error("duplicate-port", ORDERS, Some(line), "port");
    assert!(m.contains("[server] listen"), "{m}");
}

const SCHEMA_KEY: &str = "topics.\"orders.v1\".event-types.\"order.placed\".schema";

#[test]
fn a_schema_file_must_exist() {
    let s = System::good();
    std::fs::remove_file(s.path("schemas/order-placed.json")).expect("remove");
    let line = s.line_of(SYSTEM, "schemas/order-placed.json");
    let m = s
        .check()
        .only_error("schema-not-found", SYSTEM, Some(line), SCHEMA_KEY);
    assert!(m.contains("schemas/order-placed.json"), "{m}");
}

#[test]
fn a_schema_file_must_be_json() {
    let s = System::good();
    s.write("schemas/order-placed.json", "{\"type\": \n");
    let line = s.line_of(SYSTEM, "schemas/order-placed.json");
    s.check()
        .only_error("schema-invalid-json", SYSTEM, Some(line), SCHEMA_KEY);
}

#[test]
fn a_schema_file_must_be_a_json_schema() {
    let s = System::good();
    s.write("schemas/order-placed.json", "{\"type\": \"objekt\"}\n");
    let line = s.line_of(SYSTEM, "schemas/order-placed.json");
    s.check()
        .only_error("schema-invalid", SYSTEM, Some(line), SCHEMA_KEY);
}

#[test]
fn a_run_program_must_be_on_path() {
    let s = System::good();
    s.edit(NOTIFY, "python3 notify.py", "python-nine notify.py");
    let m = s
        .check()
        .only_error("run-not-found", NOTIFY, Some(2), "run");
    assert!(m.contains("\"python-nine\" is not on PATH"), "{m}");
}

#[test]
fn a_run_path_must_exist_relative_to_the_workdir() {
    let s = System::good();
    s.edit(PAYMENTS, "./serve.sh --verbose", "./start.sh --verbose");
    s.check()
        .only_error("run-not-found", PAYMENTS, Some(2), "run");
}

#[cfg(unix)]
#[test]
fn a_run_program_must_be_executable() {
    use std::os::unix::fs::PermissionsExt as _;
    let s = System::good();
    let script = s.path("services/payments/serve.sh");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let m = s
        .check()
        .only_error("run-not-executable", PAYMENTS, Some(2), "run");
    assert!(m.contains("chmod +x"), "{m}");
}

#[test]
fn a_run_line_must_split_into_words() {
    let s = System::good();
    s.edit(
        NOTIFY,
        "run = \"python3 notify.py\"",
        "run = \"python3 'notify.py\"",
    );
    s.check().only_error("invalid-run", NOTIFY, Some(2), "run");
}

#[test]
fn the_migrations_folder_must_exist() {
    let s = System::good();
    s.edit(
        ORDERS,
        "migrations = \"migrations\"",
        "migrations = \"migrationz\"",
    );
    let line = s.line_of(ORDERS, "migrationz");
    s.check().only_error(
        "migrations-not-found",
        ORDERS,
        Some(line),
        "database.migrations",
    );
}

#[test]
fn a_service_folder_needs_a_service_toml() {
    let s = System::good();
    std::fs::create_dir_all(s.path("services/billing/src")).expect("mkdir");
    let m = s
        .check()
        .only_error("missing-service-manifest", "services/billing", None, "");
    assert!(m.contains("has no service.toml"), "{m}");
}

#[test]
fn subscription_names_are_unique() {
    let s = System::good();
    s.edit(
        NOTIFY,
        "name = \"notify.payment-failures\"",
        "name = \"audit\"",
    );
    let line = s.line_of(NOTIFY, "name = \"audit\"");
    let m = s.check().only_error(
        "duplicate-subscription",
        NOTIFY,
        Some(line),
        "subscribes[1].name",
    );
    let system_line = s.line_of(SYSTEM, "[subscriptions.audit]");
    assert!(
        m.contains(&format!("also used at switchyard.toml:{system_line}")),
        "{m}"
    );
}

#[test]
fn queue_is_only_for_async_dependencies() {
    let s = System::good();
    s.edit(
        PAYMENTS,
        "policy = \"fallback\"\nstatus = 200\nbody = '{\"score\": 0, \"source\": \"fallback\"}'",
        "policy = \"queue\"\ntopic = \"notify-calls.v1\"",
    );
    let line = s.line_of(PAYMENTS, "policy = \"queue\"");
    let m = s.check().only_error(
        "queue-needs-async",
        PAYMENTS,
        Some(line),
        "dependencies.fraud.on-failure.policy",
    );
    assert!(m.contains("only for async dependencies"), "{m}");
}

#[test]
fn policy_parameters_are_checked() {
    let s = System::good();
    s.edit(ORDERS, "attempts = 3,", "attempts = 1,");
    let line = s.line_of(ORDERS, "attempts = 1,");
    let m = s.check().only_error(
        "invalid-policy",
        ORDERS,
        Some(line),
        "dependencies.payments.on-failure.attempts",
    );
    assert!(m.contains("2 to 10"), "{m}");
}

#[test]
fn a_parameter_of_another_policy_is_refused() {
    let s = System::good();
    s.edit(
        ORDERS,
        "backoff = \"100ms\"",
        "backoff = \"100ms\", status = 200",
    );
    let line = s.line_of(ORDERS, "status = 200");
    let m = s.check().only_error(
        "invalid-policy",
        ORDERS,
        Some(line),
        "dependencies.payments.on-failure.status",
    );
    assert!(m.contains("not a parameter of `retry`"), "{m}");
}

#[test]
fn max_batch_is_1_to_1000() {
    for bad in ["0", "1001"] {
        let s = System::good();
        s.edit(ORDERS, "max-batch = 10", &format!("max-batch = {bad}"));
        let line = s.line_of(ORDERS, "max-batch");
        let m = s.check().only_error(
            "invalid-value",
            ORDERS,
            Some(line),
            "subscribes[0].max-batch",
        );
        assert_eq!(m, format!("max-batch must be 1 to 1000 (got {bad})"));
    }
}

#[test]
fn a_service_name_is_checked() {
    let s = System::good();
    s.edit(ORDERS, "name = \"orders\"", "name = \"Orders!\"");
    let line = s.line_of(ORDERS, "Orders!");
    let m = s
        .check()
        .only_error("invalid-name", ORDERS, Some(line), "name");
    assert!(m.starts_with("service name \"Orders!\""), "{m}");
}

#[test]
fn a_subscription_endpoint_must_be_an_http_url() {
    let s = System::good();
    s.edit(
        SYSTEM,
        "endpoint = \"https://audit.example.com/events\"",
        "endpoint = \"ftp://audit.example.com/events\"",
    );
    let line = s.line_of(SYSTEM, "ftp://");
    let m = s.check().only_error(
        "invalid-endpoint",
        SYSTEM,
        Some(line),
        "subscriptions.audit.endpoint",
    );
    assert!(m.contains("ftp://audit.example.com/events"), "{m}");
}

#[test]
fn a_workdir_must_be_a_folder() {
    let s = System::good();
    s.edit(ORDERS, "workdir = \".\"", "workdir = \"nowhere\"");
    let line = s.line_of(ORDERS, "workdir = ");
    let m = s
        .check()
        .only_error("workdir-not-found", ORDERS, Some(line), "workdir");
    assert!(m.contains("\"nowhere\""), "{m}");
}

#[test]
fn an_explicit_services_dir_must_exist() {
    let s = System::good();
    s.edit(
        SYSTEM,
        "services-dir = \"services\"",
        "services-dir = \"svc\"",
    );
    let line = s.line_of(SYSTEM, "services-dir");
    let c = s.check();
    assert_eq!(c.code, 1, "{}", c.lines.join("\n"));
    // Without services the subscriptions' topics have no producer either: those follow.
    let e = c
        .diagnostics()
        .iter()
        .find(|d| d["code"] == "services-dir-not-found")
        .cloned()
        .unwrap_or_else(|| panic!("services-dir-not-found in\n{}", c.lines.join("\n")));
    assert_eq!(
        (&e["file"], e["line"].as_u64(), &e["key"]),
        (
            &serde_json::json!(SYSTEM),
            Some(u64::from(line)),
            &serde_json::json!("system.services-dir")
        ),
        "{e}"
    );
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains("svc")),
        "{e}"
    );
}

#[test]
fn a_health_path_starts_with_a_slash() {
    let s = System::good();
    s.edit(ORDERS, "path = \"/healthz\"", "path = \"healthz\"");
    let line = s.line_of(ORDERS, "path = \"healthz\"");
    let m = s
        .check()
        .only_error("invalid-path", ORDERS, Some(line), "health.path");
    assert!(m.contains("must start with `/`"), "{m}");
}
