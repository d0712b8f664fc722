//! The rules between files: topics and event types against `[topics]`, producers, the
//! dependency graph, ports, subscription names, and the two warnings.
//!
//! A rule that needs every file runs only when every file parsed, so one broken file does
//! not drown in errors that follow from it (a subscriber whose producer did not parse).

use crate::diagnostic::{Code, Diagnostic};
use crate::load::{Origins, SYSTEM_MANIFEST};
use crate::locate::{KeyPath, Source};
use crate::model::{Subscription, System};
use crate::policy::{DependencyKind, OnFailure};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use switchyard_types::TopicName;

/// What the loader knows beyond the [`System`]: the parsed files and how complete it is.
pub(crate) struct Context<'a> {
    pub(crate) sources: &'a BTreeMap<String, Source>,
    /// Every service folder, parsed or not.
    pub(crate) folders: &'a BTreeSet<String>,
    pub(crate) all_parsed: bool,
    pub(crate) system_parsed: bool,
    pub(crate) origins: &'a BTreeMap<String, Origins>,
    /// Declared, but left out of the system for an error in their settings.
    pub(crate) broken_topics: &'a BTreeSet<TopicName>,
    /// The index in `[[routes]]` of each of `System::routes`.
    pub(crate) route_index: &'a [usize],
}

/// A subscription and where it is written.
struct Site<'a> {
    sub: &'a Subscription,
    src: &'a Source,
    /// The key of the subscription's name (written or defaulted).
    name_key: KeyPath,
    /// The key of each topic, in `sub.topics` order.
    topic_keys: Vec<KeyPath>,
    /// The key of the `types` list.
    types_key: KeyPath,
}

pub(crate) fn check(sys: &System, cx: &Context<'_>) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let sites = sites(sys, cx);
    if cx.system_parsed {
        subscribed_topics_and_types(sys, cx, &sites, &mut out);
        published_topics_and_types(sys, cx, &sites, &mut out);
        queue_topics(sys, cx, &mut out);
        if cx.all_parsed {
            unused_topics(sys, cx, &sites, &mut out);
        }
    }
    unknown_dependencies(sys, cx, &mut out);
    if cx.system_parsed && cx.all_parsed {
        route_services(sys, cx, &mut out);
    }
    if cx.system_parsed {
        access_log_topics(sys, cx, &mut out);
    }
    sync_cycles(sys, cx, &mut out);
    ports(sys, cx, &mut out);
    subscription_names(&sites, &mut out);
    if cx.system_parsed {
        in_process_host(sys, cx, &mut out);
    }
    out
}

/// An `in-process` service needs the `[host]` whose binary links it in.
fn in_process_host(sys: &System, cx: &Context<'_>, out: &mut Vec<Diagnostic>) {
    if sys.host.is_some() {
        return;
    }
    for s in sys.services.values().filter(|s| s.in_process) {
        if let Some(src) = cx.sources.get(&s.manifest) {
            out.push(src.error(
                Code::MissingKey,
                &KeyPath::root().key("in-process"),
                "an in-process service needs [host] in switchyard.toml: `package` and `path` \
                 of the cargo package whose binary links it in",
            ));
        }
    }
}

fn sites<'a>(sys: &'a System, cx: &Context<'a>) -> Vec<Site<'a>> {
    let mut sites = Vec::new();
    if let Some(src) = cx.sources.get(SYSTEM_MANIFEST) {
        for sub in sys.subscriptions.values() {
            let entry = KeyPath::root().key("subscriptions").key(&sub.name);
            sites.push(Site {
                sub,
                src,
                name_key: entry.clone(),
                topic_keys: (0..sub.topics.len())
                    .map(|i| entry.key("topics").index(i))
                    .collect(),
                types_key: entry.key("types"),
            });
        }
    }
    for s in sys.services.values() {
        let (Some(src), Some(origins)) = (cx.sources.get(&s.manifest), cx.origins.get(&s.name))
        else {
            continue;
        };
        for (sub, &i) in s.subscribes.iter().zip(&origins.subscribes) {
            let entry = KeyPath::root().key("subscribes").index(i);
            sites.push(Site {
                sub,
                src,
                name_key: entry.key("name"),
                topic_keys: vec![entry.key("topic")],
                types_key: entry.key("types"),
            });
        }
    }
    sites
}

fn undeclared_topic(topic: &TopicName) -> String {
    format!(
        "topic {:?} is not declared in switchyard.toml [topics]",
        topic.as_str()
    )
}

/// Subscribed topics are declared and have a producer; subscribed types are declared.
fn subscribed_topics_and_types(
    sys: &System,
    cx: &Context<'_>,
    sites: &[Site<'_>],
    out: &mut Vec<Diagnostic>,
) {
    let published: BTreeSet<&TopicName> = sys
        .services
        .values()
        .flat_map(|s| s.publishes.iter().map(|p| &p.topic))
        .collect();
    let queues = sys.gateway_topics();
    for site in sites {
        let mut declared = Vec::new();
        for (topic, key) in site.sub.topics.iter().zip(&site.topic_keys) {
            let Some(t) = sys.topics.get(topic) else {
                if !cx.broken_topics.contains(topic) {
                    out.push(
                        site.src
                            .error(Code::UnknownTopic, key, undeclared_topic(topic)),
                    );
                }
                continue;
            };
            declared.push(t);
            // Without every file, a producer may be in one that did not parse.
            if cx.all_parsed
                && !t.external_producers
                && !published.contains(topic)
                && !queues.contains(topic)
            {
                out.push(site.src.error(
                    Code::NoProducer,
                    key,
                    format!(
                        "topic {:?} has no producer (no service publishes to it and it is not \
                         marked external-producers)",
                        topic.as_str()
                    ),
                ));
            }
        }
        if declared.is_empty() {
            continue;
        }
        for (i, ty) in site.sub.types.iter().enumerate() {
            if !declared.iter().any(|t| t.event_types.contains_key(ty)) {
                let names: Vec<&str> = declared.iter().map(|t| t.name.as_str()).collect();
                out.push(site.src.error(
                    Code::UndeclaredSubscribedType,
                    &site.types_key.index(i),
                    format!(
                        "event type {ty:?} is not declared in the event-types of topic {} \
                         (switchyard.toml)",
                        quoted_list(&names)
                    ),
                ));
            }
        }
    }
}

/// Published topics are declared; published types are declared, and (a warning) consumed.
fn published_topics_and_types(
    sys: &System,
    cx: &Context<'_>,
    sites: &[Site<'_>],
    out: &mut Vec<Diagnostic>,
) {
    for s in sys.services.values() {
        let (Some(src), Some(origins)) = (cx.sources.get(&s.manifest), cx.origins.get(&s.name))
        else {
            continue;
        };
        for (p, &i) in s.publishes.iter().zip(&origins.publishes) {
            let entry = KeyPath::root().key("publishes").index(i);
            let Some(topic) = sys.topics.get(&p.topic) else {
                if cx.broken_topics.contains(&p.topic) {
                    continue;
                }
                out.push(src.error(
                    Code::UnknownTopic,
                    &entry.key("topic"),
                    undeclared_topic(&p.topic),
                ));
                continue;
            };
            for (j, ty) in p.types.iter().enumerate() {
                let key = entry.key("types").index(j);
                if !topic.event_types.contains_key(ty) {
                    out.push(src.error(
                        Code::UndeclaredPublishedType,
                        &key,
                        format!(
                            "event type {ty:?} is not declared in the event-types of topic {:?} \
                             (switchyard.toml)",
                            p.topic.as_str()
                        ),
                    ));
                } else if cx.all_parsed
                    && !sites
                        .iter()
                        .any(|site| site.sub.topics.contains(&p.topic) && site.sub.takes(ty))
                {
                    out.push(src.warning(
                        Code::UnconsumedType,
                        &key,
                        format!(
                            "nothing consumes event type {ty:?} on topic {:?}: no subscription \
                             takes it",
                            p.topic.as_str()
                        ),
                    ));
                }
            }
        }
    }
}

/// The topic of each `queue` policy is declared.
fn queue_topics(sys: &System, cx: &Context<'_>, out: &mut Vec<Diagnostic>) {
    for s in sys.services.values() {
        let Some(src) = cx.sources.get(&s.manifest) else {
            continue;
        };
        for (to, d) in &s.dependencies {
            if let OnFailure::Queue { topic } = &d.on_failure
                && !sys.topics.contains_key(topic)
                && !cx.broken_topics.contains(topic)
            {
                let key = KeyPath::root()
                    .key("dependencies")
                    .key(to)
                    .key("on-failure")
                    .key("topic");
                out.push(src.error(Code::UnknownTopic, &key, undeclared_topic(topic)));
            }
        }
    }
}

/// A warning for each declared topic that nothing reads.
fn unused_topics(sys: &System, cx: &Context<'_>, sites: &[Site<'_>], out: &mut Vec<Diagnostic>) {
    let Some(src) = cx.sources.get(SYSTEM_MANIFEST) else {
        return;
    };
    // The platform reads queued calls; an access log is for people (tail, replay).
    let queues = sys.gateway_topics();
    for name in sys.topics.keys() {
        if queues.contains(name) || sites.iter().any(|s| s.sub.topics.contains(name)) {
            continue;
        }
        out.push(src.warning(
            Code::UnusedTopic,
            &KeyPath::root().key("topics").key(name.as_str()),
            format!("nobody subscribes to topic {:?}", name.as_str()),
        ));
    }
}

fn unknown_dependencies(sys: &System, cx: &Context<'_>, out: &mut Vec<Diagnostic>) {
    let dir = cx
        .sources
        .get(SYSTEM_MANIFEST)
        .map(|_| {
            sys.services_dir
                .strip_prefix(&sys.root)
                .unwrap_or(&sys.services_dir)
                .to_string_lossy()
                .into_owned()
        })
        .unwrap_or_else(|| "services".to_string());
    for s in sys.services.values() {
        let Some(src) = cx.sources.get(&s.manifest) else {
            continue;
        };
        for to in s.dependencies.keys() {
            if !cx.folders.contains(to) {
                out.push(src.error(
                    Code::UnknownDependency,
                    &KeyPath::root().key("dependencies").key(to),
                    format!("there is no service {to:?} (no folder {dir}/{to})"),
                ));
            }
        }
    }
}

/// A route's `service`, and each composed part's, must be a service of the system.
fn route_services(sys: &System, cx: &Context<'_>, out: &mut Vec<Diagnostic>) {
    let Some(src) = cx.sources.get(SYSTEM_MANIFEST) else {
        return;
    };
    for (route, &i) in sys.routes.iter().zip(cx.route_index) {
        let at = KeyPath::root().key("routes").index(i);
        let mut named: Vec<(KeyPath, &String)> = Vec::new();
        if let Some(service) = &route.service {
            named.push((at.key("service"), service));
        }
        for (j, part) in route
            .compose
            .iter()
            .flat_map(|c| c.parts.iter().enumerate())
        {
            if let Some(service) = &part.service {
                let key = at.key("compose").key("parts").index(j).key("service");
                named.push((key, service));
            }
        }
        for (key, service) in named {
            if cx.folders.contains(service) {
                continue;
            }
            let known: Vec<&str> = cx.folders.iter().map(String::as_str).collect();
            out.push(src.error(
                Code::UnknownService,
                &key,
                format!(
                    "route {:?} goes to service {service:?}, which the system does not have \
                     (services: {})",
                    route.name,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
    }
}

/// A route's `access-log.topic` must be declared.
fn access_log_topics(sys: &System, cx: &Context<'_>, out: &mut Vec<Diagnostic>) {
    let Some(src) = cx.sources.get(SYSTEM_MANIFEST) else {
        return;
    };
    for (route, &i) in sys.routes.iter().zip(cx.route_index) {
        let Some(log) = &route.access_log else {
            continue;
        };
        if !sys.topics.contains_key(&log.topic) && !cx.broken_topics.contains(&log.topic) {
            out.push(
                src.error(
                    Code::UnknownTopic,
                    &KeyPath::root()
                        .key("routes")
                        .index(i)
                        .key("access-log")
                        .key("topic"),
                    undeclared_topic(&log.topic),
                ),
            );
        }
    }
}

/// Each group of services tangled by `sync` dependencies is reported once, at the first
/// service of the group by name, with one cycle through it.
fn sync_cycles(sys: &System, cx: &Context<'_>, out: &mut Vec<Diagnostic>) {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for e in sys.edges() {
        if e.dependency.kind == DependencyKind::Sync {
            next.entry(e.from).or_default().push(e.to);
        }
    }
    // Who each service reaches through sync dependencies (the graphs are small).
    let reach: BTreeMap<&str, BTreeSet<&str>> = sys
        .services
        .keys()
        .map(|s| {
            let mut seen = BTreeSet::new();
            let mut todo: Vec<&str> = next.get(s.as_str()).cloned().unwrap_or_default();
            while let Some(v) = todo.pop() {
                if seen.insert(v) {
                    todo.extend(next.get(v).into_iter().flatten());
                }
            }
            (s.as_str(), seen)
        })
        .collect();
    let reaches = |a: &str, b: &str| reach.get(a).is_some_and(|r| r.contains(b));
    for start in sys.services.keys().map(String::as_str) {
        if !reaches(start, start) {
            continue;
        }
        let group: BTreeSet<&str> = reach[start]
            .iter()
            .copied()
            .filter(|v| reaches(v, start))
            .collect();
        if group.first().is_some_and(|first| *first < start) {
            continue; // reported at the group's first service
        }
        let cycle = shortest_cycle(start, &next, &group);
        let Some(src) = cx.sources.get(&sys.services[start].manifest) else {
            continue;
        };
        let mut message = format!(
            "sync dependencies form a cycle: {}. That is a distributed monolith: none of these \
             services can start or fail on its own. Make one of the dependencies async \
             (events), or merge the services",
            cycle.join(" -> ")
        );
        let others: Vec<&str> = group
            .iter()
            .copied()
            .filter(|v| !cycle.contains(v))
            .collect();
        if !others.is_empty() {
            message.push_str(&format!(" (also caught in it: {})", others.join(", ")));
        }
        let key = KeyPath::root().key("dependencies").key(cycle[1]);
        out.push(src.error(Code::SyncCycle, &key, message));
    }
}

/// The shortest cycle from `start` back to itself inside `group`, neighbours in name order:
/// `[start, ..., start]`.
fn shortest_cycle<'a>(
    start: &'a str,
    next: &BTreeMap<&'a str, Vec<&'a str>>,
    group: &BTreeSet<&'a str>,
) -> Vec<&'a str> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        let mut succ: Vec<&str> = next.get(v).cloned().unwrap_or_default();
        succ.sort_unstable();
        for w in succ {
            if w == start {
                // Walk back from `v` to `start` (the one node without a predecessor).
                let mut path = vec![v];
                let mut at = v;
                while let Some(&p) = came_from.get(at) {
                    path.push(p);
                    at = p;
                }
                path.reverse();
                path.push(start);
                return path;
            }
            if group.contains(w) && !came_from.contains_key(w) && w != start {
                came_from.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    vec![start, start]
}

fn ports(sys: &System, cx: &Context<'_>, out: &mut Vec<Diagnostic>) {
    let listen = sys
        .server
        .as_ref()
        .and_then(|s| s.get("listen"))
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.port())
        .filter(|p| *p != 0);
    let mut seen: BTreeMap<u16, &str> = BTreeMap::new();
    for s in sys.services.values() {
        let (Some(port), Some(src)) = (s.port, cx.sources.get(&s.manifest)) else {
            continue;
        };
        let key = KeyPath::root().key("port");
        if Some(port) == listen {
            out.push(src.error(
                Code::DuplicatePort,
                &key,
                format!("port {port} is the platform's own ([server] listen in switchyard.toml)"),
            ));
        } else if let Some(other) = seen.get(&port) {
            out.push(src.error(
                Code::DuplicatePort,
                &key,
                format!("port {port} is also the port of service {other:?}"),
            ));
        } else {
            seen.insert(port, &s.name);
        }
    }
}

fn subscription_names(sites: &[Site<'_>], out: &mut Vec<Diagnostic>) {
    let mut seen: BTreeMap<&str, Diagnostic> = BTreeMap::new();
    for site in sites {
        let here = site
            .src
            .error(Code::DuplicateSubscription, &site.name_key, "");
        match seen.get(site.sub.name.as_str()) {
            Some(first) => out.push(Diagnostic {
                message: format!(
                    "subscription name {:?} is also used at {}:{} (names are unique in the \
                     system; set `name`)",
                    site.sub.name,
                    first.file,
                    first.line.unwrap_or(1)
                ),
                ..here
            }),
            None => {
                seen.insert(&site.sub.name, here);
            }
        }
    }
}

/// `"a"` or `"a", "b"`.
fn quoted_list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_cycles_start_and_end_at_the_start() {
        let next: BTreeMap<&str, Vec<&str>> = BTreeMap::from([
            ("a", vec!["c", "b"]),
            ("b", vec!["a"]),
            ("c", vec!["d"]),
            ("d", vec!["a"]),
        ]);
        let group = BTreeSet::from(["a", "b", "c", "d"]);
        assert_eq!(shortest_cycle("a", &next, &group), ["a", "b", "a"]);
        let next: BTreeMap<&str, Vec<&str>> =
            BTreeMap::from([("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"])]);
        let group = BTreeSet::from(["a", "b", "c"]);
        assert_eq!(shortest_cycle("a", &next, &group), ["a", "b", "c", "a"]);
        let next: BTreeMap<&str, Vec<&str>> = BTreeMap::from([("a", vec!["a"])]);
        assert_eq!(
            shortest_cycle("a", &next, &BTreeSet::from(["a"])),
            ["a", "a"]
        );
    }
}
